"""A run directory: the one owner of every file name in it, and of how each file is written and read.

    <output_dir>/<run_name>/
        checkpoints/          tf.train.CheckpointManager saves (resume, search trials, inference)
        model_best.keras      best evaluation so far;  model_final.keras  the last step
        model_meta.json       input size, resize method, normalisation, label heads, training class counts
        config.yaml           the TrainConfig the run was started with
        history.json          one metrics row per evaluation
        training_curves.png   history as a plot;  tensorboard/  summaries
        ray_train/            Ray Train's run state of a multi-worker training (`--workers N`)

Local paths and `gs://` URIs alike (through tf.io.gfile). Every write is atomic: a temporary next to
the target, then a rename, so a kill leaves the previous file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from tpu_grapheme.data import paths
from tpu_grapheme.data.schema import BENGALI, HeadLayout
from tpu_grapheme.errors import UserError

CHECKPOINTS = "checkpoints"
BEST_MODEL = "model_best.keras"
FINAL_MODEL = "model_final.keras"
META = "model_meta.json"
CONFIG = "config.yaml"
HISTORY = "history.json"
CURVES = "training_curves.png"
TENSORBOARD = "tensorboard"
RAY_TRAIN = "ray_train"
META_SCHEMA_VERSION = 1
_TMP = ".tmp-"  # infix of in-flight temporaries: `<name>.tmp-<pid>[.keras]`


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Paths of one run's files; `path` may be local or a URI."""

    path: str

    def file(self, name: str) -> str:
        return paths.join(self.path, name)

    @property
    def checkpoints(self) -> str:
        return self.file(CHECKPOINTS)

    @property
    def best_model(self) -> str:
        return self.file(BEST_MODEL)

    @property
    def final_model(self) -> str:
        return self.file(FINAL_MODEL)

    @property
    def tensorboard(self) -> str:
        return self.file(TENSORBOARD)

    @property
    def curves(self) -> str:
        return self.file(CURVES)

    @property
    def ray_train(self) -> str:
        return self.file(RAY_TRAIN)

    # --- lifecycle --------------------------------------------------------------------------------
    def create(self) -> None:
        """Make the dir and drop temporaries a killed run left behind (never a finished file)."""
        import tensorflow as tf

        tf.io.gfile.makedirs(self.path)
        for name in tf.io.gfile.listdir(self.path):
            if _TMP in name:
                tf.io.gfile.remove(self.file(name.rstrip("/")))

    # --- small files ------------------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        write_text_atomic(self.file(CONFIG), yaml_text)

    def write_meta(
        self,
        *,
        arch: str,
        resize: Sequence[int],
        class_counts: dict[str, list[int]] | None,
        resize_method: str = "auto",
        combination_counts: Sequence[Sequence[int]] | None = None,
        layout: HeadLayout = BENGALI,
    ) -> None:
        """What inference needs beside the model: input size and preprocessing, the label heads
        (`heads`; older metas lack it: Bengali's), training class counts, and the training split's
        grapheme combinations ([label per head..., images] each: which graphemes are unseen, the
        grapheme head's classes on a checkpoint rebuild; older metas lack it)."""
        from tpu_grapheme.data import pipeline

        meta = {
            "schema_version": META_SCHEMA_VERSION,
            "arch": arch,
            "resize": [int(v) for v in resize],
            "resize_method": resize_method,
            "heads": layout.to_json(),
            "class_counts": class_counts,
            "normalization": {"invert": True, "mean": pipeline.MEAN, "std": pipeline.STD},
        }
        if combination_counts is not None:
            meta["combination_counts"] = [[int(v) for v in row] for row in combination_counts]
        write_text_atomic(self.file(META), json.dumps(meta))

    def read_meta(self) -> dict[str, Any] | None:
        """`model_meta.json` checked (None when absent); a broken file is a one-line UserError."""
        text = _read_text(self.file(META))
        if text is None:
            return None
        try:
            return _checked_meta(json.loads(text))
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(f"{self.file(META)}: unreadable model meta ({_first_line(e)})") from None

    def read_history(self, *, up_to_step: int | None = None) -> list[dict[str, Any]]:
        text = _read_text(self.file(HISTORY))
        rows = json.loads(text) if text else []
        return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]

    def write_history(self, rows: Sequence[dict[str, Any]]) -> None:
        write_text_atomic(self.file(HISTORY), json.dumps(list(rows)))

    # --- models and plots -------------------------------------------------------------------------
    def save_model(self, model: Any, name: str) -> str:
        """Save `model` as `name` (BEST_MODEL or FINAL_MODEL) atomically; returns its path."""
        path = self.file(name)
        save_model_atomic(model, path)
        return path

    def write_curves(self, history: Sequence[dict[str, Any]]) -> str | None:
        """Loss and recall against the step, as a PNG (None when there is no history yet)."""
        if not history:
            return None
        from tpu_grapheme.curves import plot_history

        fig = plot_history(history, title=os.path.basename(self.path.rstrip("/")))
        write_file_atomic(self.curves, ".png", lambda p: fig.savefig(p, dpi=100))
        return self.curves


# --------------------------------------------------------------------------------------------------
def snapshot_checkpoint(checkpoints: str, step: int, dest: str) -> str:
    """Copy the checkpoint of `step` (its files and a state file naming only it) from a checkpoints dir
    into `dest`: a frozen copy, where the live dir keeps changing (newer saves, rotated old ones)."""
    import tensorflow as tf

    prefix = paths.join(checkpoints, f"ckpt-{step}")
    files = tf.io.gfile.glob(prefix + ".*")
    if not files:
        raise UserError(f"no checkpoint of step {step} in {checkpoints}")
    tf.io.gfile.makedirs(dest)
    for f in files:
        tf.io.gfile.copy(f, paths.join(dest, os.path.basename(f)), overwrite=True)
    name = f"ckpt-{step}"  # relative in the state file: the copy is moved to storage and restored elsewhere
    tf.compat.v1.train.update_checkpoint_state(dest, name, all_model_checkpoint_paths=[name])
    return paths.join(dest, name)


def write_text_atomic(path: str, text: str) -> None:
    import tensorflow as tf

    tmp = _tmp_name(path)
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def save_model_atomic(model: Any, path: str) -> None:
    write_file_atomic(path, ".keras", model.save)  # Keras needs the suffix on the temporary too


def write_file_atomic(path: str, suffix: str, write: Callable[[str], None]) -> None:
    """`write(tmp)` to a temporary beside `path`, then rename it into place.

    For a URI the file is written locally first (Keras and matplotlib write local files), copied to a
    temporary beside the target, then renamed.
    """
    tmp = _tmp_name(path, suffix)
    if not paths.is_uri(path):
        write(tmp)
        os.replace(tmp, path)
        return
    import tempfile

    import tensorflow as tf

    local = os.path.join(tempfile.gettempdir(), os.path.basename(tmp))
    write(local)
    tf.io.gfile.copy(local, tmp, overwrite=True)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    os.remove(local)


def _tmp_name(path: str, suffix: str = "") -> str:
    return f"{path}{_TMP}{os.getpid()}{suffix}"


def _read_text(path: str) -> str | None:
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def _checked_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise ValueError("not a JSON object")
    if "resize" in meta:
        h, w = (int(v) for v in meta["resize"])
        meta["resize"] = (h, w)
    layout = HeadLayout.from_json(meta.get("heads"))
    counts = meta.get("class_counts")
    if counts is not None:
        for name, k in zip(layout.names, layout.num_classes, strict=True):
            if len(counts[name]) != k:
                raise ValueError(f"class_counts[{name!r}] needs {k} counts")
    for row in meta.get("combination_counts") or ():
        n = len(layout)
        if len(row) != n + 1 or not all(
            0 <= int(v) < k for v, k in zip(row[:n], layout.num_classes, strict=True)
        ):
            raise ValueError(f"combination_counts row {row!r} is not [{', '.join(layout.names)}, count]")
    return meta


def meta_layout(meta: dict[str, Any] | None) -> HeadLayout:
    """The label heads of a run from its checked `model_meta.json` (Bengali's without one or in an
    older meta)."""
    return HeadLayout.from_json((meta or {}).get("heads"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
