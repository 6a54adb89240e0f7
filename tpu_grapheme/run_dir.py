"""A run directory: the one owner of every file name in it (checkpoints included) and of their I/O.

    <output_dir>/<run_name>/
        checkpoints/          ckpt-<step>.* saves of a tf.train.CheckpointManager and its state file
        model_best.keras      best evaluation so far;  model_final.keras  the last step
        model_meta.json       input size, resize method, normalisation, label heads, training class counts
        config.yaml           the TrainConfig the run was started with
        history.json          one metrics row per evaluation
        train_log.json        step, train loss and learning rate at every log interval
        training_curves.png   history as a plot;  tensorboard/  summaries
        ray_train/            Ray Train's run state of a multi-worker training (`--workers N`)

Local paths and URIs (`gs://`) alike (`gfile_io`: tf.io.gfile, a local text read without it); every
write is atomic. Training, the search's trainable and inference all find a run's files here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tpu_grapheme.data import paths
from tpu_grapheme.data.schema import BENGALI, HeadLayout
from tpu_grapheme.errors import UserError
from tpu_grapheme.gfile_io import (
    TMP,
    basename,
    copy_tree,
    read_text,
    remove_tree,
    save_model_atomic,
    write_file_atomic,
    write_text_atomic,
)
from tpu_grapheme.private_tmp import make_private_dir

CHECKPOINTS = "checkpoints"
BEST_MODEL = "model_best.keras"
FINAL_MODEL = "model_final.keras"
META = "model_meta.json"
CONFIG = "config.yaml"
HISTORY = "history.json"
TRAIN_LOG = "train_log.json"
CURVES = "training_curves.png"
TENSORBOARD = "tensorboard"
RAY_TRAIN = "ray_train"
META_SCHEMA_VERSION = 1
CKPT = "ckpt"  # the CheckpointManager's checkpoint_name: a save of step N is `checkpoints/ckpt-N.*`
CHECKPOINT_STATE = "checkpoint"  # the state file `tf.train.latest_checkpoint` reads
WORKER_CKPT_PREFIX = "worker_ckpt_"  # private checkpoint dirs of non-chief workers

if TYPE_CHECKING:
    from tpu_grapheme.config import TrainConfig


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
            if TMP in name:
                tf.io.gfile.remove(self.file(name.rstrip("/")))

    # --- checkpoints ------------------------------------------------------------------------------
    @staticmethod
    def checkpoint_name(step: int) -> str:
        """The name of step `step`'s checkpoint (its files are `<name>.index`, `<name>.data-*`)."""
        return f"{CKPT}-{int(step)}"

    @staticmethod
    def checkpoint_step(prefix: str) -> int | None:
        """The step a checkpoint prefix names (`.../ckpt-12` -> 12); None for any other name."""
        match = re.fullmatch(rf"{CKPT}-(\d+)", basename(prefix))
        return int(match.group(1)) if match else None

    def checkpoint_prefix(self, step: int) -> str:
        return paths.join(self.checkpoints, self.checkpoint_name(step))

    def checkpoint_manager(self, checkpoint: Any, *, max_to_keep: int, chief: bool = True) -> Any:
        """A tf.train.CheckpointManager saving `ckpt-<step>` into the checkpoints dir. Saves are collective
        under a multi-worker strategy: a non-chief worker saves into a private temporary dir instead,
        which `remove_private_checkpoints` deletes (or the next start, after a kill: `private_tmp`)."""
        import tensorflow as tf

        directory = self.checkpoints if chief else make_private_dir(WORKER_CKPT_PREFIX)  # a killed one's go
        return tf.train.CheckpointManager(
            checkpoint, directory, max_to_keep=max_to_keep, checkpoint_name=CKPT
        )

    def remove_private_checkpoints(self, manager: Any) -> None:
        """Delete a non-chief worker's private checkpoint dir; the run's own checkpoints stay."""
        import tensorflow as tf

        directory = str(manager.directory)
        if directory != self.checkpoints and basename(directory).startswith(WORKER_CKPT_PREFIX):
            with contextlib.suppress(tf.errors.OpError):  # best effort, as for any temporary dir
                remove_tree(directory)

    def latest_checkpoint(self) -> str | None:
        """The prefix of the newest checkpoint the state file names (None: no checkpoint yet)."""
        if not paths.is_uri(self.checkpoints) and not os.path.isdir(self.checkpoints):
            return None  # a new local run, said without loading TensorFlow (`--workers`' driver never does)
        import tensorflow as tf

        return tf.train.latest_checkpoint(self.checkpoints)

    def checkpoint_steps(self) -> list[int]:
        """Steps of the checkpoints present (their index files), ascending."""
        import tensorflow as tf

        found = tf.io.gfile.glob(paths.join(self.checkpoints, f"{CKPT}-*.index"))
        return sorted(s for f in found if (s := self.checkpoint_step(f[: -len(".index")])) is not None)

    def snapshot_checkpoint(self, step: int, dest: str) -> str:
        """Copy the checkpoint of `step` (its files and a state file naming only it) into `dest`: a frozen
        copy for Ray, where the live dir keeps changing (newer saves, rotated old ones). Returns its prefix."""
        import tensorflow as tf

        name = self.checkpoint_name(step)
        files = tf.io.gfile.glob(self.checkpoint_prefix(step) + ".*")
        if not files:
            raise UserError(f"no checkpoint of step {step} in {self.checkpoints}")
        tf.io.gfile.makedirs(dest)
        for f in files:
            tf.io.gfile.copy(f, paths.join(dest, basename(f)), overwrite=True)
        write_checkpoint_state(dest, [name])  # relative: the copy is moved to storage, restored elsewhere
        return paths.join(dest, name)

    def restore_checkpoints(self, checkpoint: Any) -> str | None:
        """Replace the checkpoints dir with a Ray checkpoint's files (anything with Ray's `as_directory()`);
        a crash may have left newer, unreported saves behind. None: no checkpoint given."""
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as source:
            remove_tree(self.checkpoints)
            copy_tree(source, self.checkpoints, last=CHECKPOINT_STATE)  # no state file until all is there
        return self.checkpoints

    # --- models for inference ---------------------------------------------------------------------
    @classmethod
    def resolve_model(cls, spec: str) -> ModelSource:
        """What a `--model-paths` entry names: a .keras file; a run dir (its model_best.keras, else its
        latest checkpoint); a checkpoints dir (its latest checkpoint); a checkpoint prefix (`.../ckpt-5`)."""
        import tensorflow as tf

        gfile, path = tf.io.gfile, spec.rstrip("/") or spec
        if gfile.exists(path) and not gfile.isdir(path):
            if not path.endswith(".keras"):
                raise UserError(
                    f"model {spec}: not a .keras file (give a .keras file, a run dir or a checkpoints dir)"
                )
            return ModelSource("keras", path, cls(paths.dirname(_absolute(path))))
        if gfile.exists(path + ".index"):
            return ModelSource("checkpoint", path, cls(paths.dirname(paths.dirname(_absolute(path)))))
        if not gfile.isdir(path):
            raise UserError(f"model {spec}: no such file or directory")
        run = cls(_absolute(path))
        if gfile.exists(run.best_model):
            return ModelSource("keras", run.best_model, run)
        for ckpt_dir, owner in ((run.checkpoints, run), (run.path, cls(paths.dirname(run.path)))):
            latest = tf.train.latest_checkpoint(ckpt_dir) if gfile.isdir(ckpt_dir) else None
            if latest:  # a run dir's checkpoints, or `path` is the checkpoints dir of a run
                return ModelSource("checkpoint", latest, owner)
        raise UserError(f"model {spec}: directory has neither {BEST_MODEL} nor a checkpoint")

    # --- small files ------------------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        write_text_atomic(self.file(CONFIG), yaml_text)

    def read_config(self) -> TrainConfig | None:
        """The run's TrainConfig from `config.yaml` (None when absent); a broken file is a UserError."""
        import yaml

        from tpu_grapheme.config import from_dict
        from tpu_grapheme.config_io import upgrade_old_dump

        text = read_text(self.file(CONFIG))
        if text is None:
            return None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"{self.file(CONFIG)} is not valid YAML: {_first_line(e)}") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.file(CONFIG)} must hold a mapping of TrainConfig fields")
        return from_dict(upgrade_old_dump(data))

    def write_meta(
        self,
        *,
        arch: str,
        resize: Sequence[int],
        class_counts: dict[str, list[int]] | None,
        resize_method: str = "auto",
        combination_counts: Sequence[Sequence[int]] | None = None,
        layout: HeadLayout = BENGALI,
        replicas: int | None = None,
    ) -> None:
        """What inference needs beside the model: input size and preprocessing, the label heads
        (`heads`; older metas lack it: Bengali's), training class counts, and the training split's
        grapheme combinations ([label per head..., images] each: which graphemes are unseen, the
        grapheme head's classes on a checkpoint rebuild; older metas lack it). `replicas`: what the run
        trained on, so a resume keeps its global batch (`resume_check`)."""
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
        if replicas is not None:
            meta["replicas"] = int(replicas)
        if combination_counts is not None:
            meta["combination_counts"] = [[int(v) for v in row] for row in combination_counts]
        write_text_atomic(self.file(META), json.dumps(meta))

    def read_meta(self) -> dict[str, Any] | None:
        """`model_meta.json` checked (None when absent); a broken file is a one-line UserError."""
        text = read_text(self.file(META))
        if text is None:
            return None
        try:
            return _checked_meta(json.loads(text))
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(f"{self.file(META)}: unreadable model meta ({_first_line(e)})") from None

    def read_history(self, *, up_to_step: int | None = None, train_log: bool = False) -> list[dict[str, Any]]:
        """Rows of `history.json` (`train_log`: of `train_log.json`) up to `up_to_step` (a resumed run's)."""
        rows = json.loads(read_text(self.file(TRAIN_LOG if train_log else HISTORY)) or "[]")
        return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]

    def write_history(self, rows: Sequence[dict[str, Any]], train_log: Sequence[dict] | None = None) -> None:
        """`history.json` and, when given, `train_log.json` (written first: history is the later one)."""
        if train_log is not None:
            write_text_atomic(self.file(TRAIN_LOG), json.dumps(list(train_log)))
        write_text_atomic(self.file(HISTORY), json.dumps(list(rows)))

    # --- models and plots -------------------------------------------------------------------------
    def save_model(self, model: Any, name: str) -> str:
        """Save `model` as `name` (BEST_MODEL or FINAL_MODEL) atomically; returns its path."""
        path = self.file(name)
        save_model_atomic(model, path)
        return path

    def write_curves(self, history: Sequence[dict[str, Any]], train_log: Sequence[dict] = ()) -> str | None:
        """Loss, learning rate and recall against the step, as a PNG (None when there is no history yet)."""
        if not history:
            return None
        from tpu_grapheme.curves import plot_history

        fig = plot_history(history, title=basename(self.path), train_log=train_log)
        write_file_atomic(self.curves, ".png", lambda p: fig.savefig(p, dpi=100))
        return self.curves


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A model inference can load: `kind` "keras" (a .keras file) or "checkpoint" (a checkpoint prefix,
    rebuilt from its run's config.yaml), and the run it belongs to (its meta, its config)."""

    kind: str
    path: str
    run: RunDir


def write_checkpoint_state(directory: str, names: Sequence[str]) -> None:
    """The `checkpoint` state file of `directory`, as TensorFlow writes it (a CheckpointState text proto):
    `names` relative to `directory`, the last the latest. Written atomically, through gfile."""
    if not names or any(not re.fullmatch(r"[\w.\-]+", n) for n in names):
        raise ValueError(f"checkpoint names must be plain file names, got {list(names)!r}")
    lines = [f'model_checkpoint_path: "{names[-1]}"'] + [f'all_model_checkpoint_paths: "{n}"' for n in names]
    write_text_atomic(paths.join(directory, CHECKPOINT_STATE), "\n".join(lines) + "\n")


def _absolute(path: str) -> str:
    return path if paths.is_uri(path) else os.path.abspath(path)


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
    """The label heads of a run from its checked `model_meta.json` (Bengali's without one, or older)."""
    return HeadLayout.from_json((meta or {}).get("heads"))


def _first_line(e: BaseException) -> str:
    return (str(e).strip() or type(e).__name__).splitlines()[0][:300]
