"""The tiny run configuration the loop-level tests share: tiny arch, 120 synthetic rows, 8 steps."""

from __future__ import annotations

from tpu_grapheme.config import TrainConfig


def tiny_cfg(synthetic_dir: str, out: str, **kw) -> TrainConfig:
    """A run of the `tiny` arch on a 120-row synthetic set in `synthetic_dir`, written to `out/run`."""
    base = dict(
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
        max_lr=3e-3,
        dropout=0.0,
        shuffle_buffer=256,
    )
    return TrainConfig(**{**base, **kw})
