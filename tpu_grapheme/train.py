"""`python -m tpu_grapheme.train`: one training run from flags and/or a YAML config.

    python -m tpu_grapheme.train                                  # synthetic default, CPU-sized
    python -m tpu_grapheme.train --config best.yaml               # a config a search wrote
    python -m tpu_grapheme.train --batch-size 64 --arch b4 --checkpoint-interval 2000 --steps 20010 \\
        --train-folder "gs://bucket/train_0/*" --valid-folder "gs://bucket/valid_0/*" --resize 192,330 \\
        --max-lr 4e-3 --cutmix-alpha 1. --weight-decay 0 --log-interval 500 --mixed-precision --radam
    python -m tpu_grapheme.train --workers 4 --address auto --output-dir /nfs/runs   # Ray Train, 4 hosts
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tpu_grapheme.config_io import add_arguments, from_args
from tpu_grapheme.data.out_paths import check_out_dir, removing_new_dirs
from tpu_grapheme.errors import cli_main, run_and_exit
from tpu_grapheme.resume_check import help_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tpu_grapheme.train",
        description="Train a grapheme classifier with the hand-written strategy.run loop.",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    cfg = from_args(build_parser().parse_args(argv))
    check_out_dir(cfg.run_dir, "--output-dir", value=cfg.output_dir)
    with removing_new_dirs(cfg.run_dir):  # a failed start leaves no empty run dir (or output dir)
        if cfg.workers > 1 or cfg.address:
            from tpu_grapheme.multiworker import train_multiworker

            train_multiworker(cfg)
            return
        from tpu_grapheme.loop import run_training  # imports TensorFlow: after the flags are valid

        run_training(cfg)


if __name__ == "__main__":
    run_and_exit(main)
