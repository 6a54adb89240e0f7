"""The tiny run configuration the loop-level tests share: tiny arch, 120 synthetic rows, 8 steps."""

from __future__ import annotations

from tpu_grapheme.config import TrainConfig

# The defaults before our search chose new ones (issue 21): the loop-level tests were calibrated with them,
# and a tiny synthetic set with the searched rendered share would render ~10,000 images per set.
OLD_RECIPE = dict(max_lr=3e-3, weight_decay=1e-4, ema_decay=0.0, rendered_share=0.0, label_smoothing=0.0)


def tiny_cfg(synthetic_dir: str, out: str, **kw) -> TrainConfig:
    """A run of the `tiny` arch on a 120-row synthetic set in `synthetic_dir`, written to `out/run`."""
    base = dict(
        **OLD_RECIPE,
        arch="tiny",
        resize=(32, 56),
        synthetic_rows=120,
        synthetic_dir=synthetic_dir,
        batch_size=32,
        steps=8,
        steps_per_loop=2,
        checkpoint_interval=4,
        log_interval=4,
        output_dir=out,
        run_name="run",
        dropout=0.0,
        shuffle_buffer=256,
    )
    return TrainConfig(**{**base, **kw})
