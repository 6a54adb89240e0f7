"""Where an experiment lives (a local dir, NFS or a pyarrow filesystem URI such as gs://) and its spec file.

The driver saves the resolved space as `tune_search.yaml` in the experiment dir, so `--resume` needs no
space file and resumes exactly the search that was started, and `finished.txt` once every trial ended
without error, so `--resume` of a finished search answers without starting Ray.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from tpu_grapheme.data import paths
from tpu_grapheme.errors import UserError
from tune.space import SearchSpace
from tune.space_yaml import parse_space

SPEC_FILE = "tune_search.yaml"  # the resolved space, saved so that --resume needs no space file
FINISHED_FILE = "finished.txt"  # every trial ended without error: --resume has nothing left to run
DEFAULT_STORAGE = os.path.join("runs", "tune")


def experiment_path(storage: str, name: str) -> str:
    return paths.join(storage, name)


def check_storage(root: str) -> None:
    """`--storage` must be a directory this user can write, or creatable in one; one line otherwise, and
    nothing is created. A URI (gs://) is left to its filesystem."""
    if paths.is_uri(root):
        return
    probe = os.path.abspath(root)
    while not os.path.lexists(probe):  # the nearest existing ancestor decides
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"--storage {root}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--storage {root}: {probe} is not writable")


def _fs(path: str) -> tuple[Any, str]:
    import pyarrow.fs

    if paths.is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def write_text(path: str, text: str) -> None:
    fs, p = _fs(path)
    fs.create_dir(os.path.dirname(p), recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def read_text(path: str) -> str | None:
    """The file's text, or None if it does not exist."""
    import pyarrow.fs

    fs, p = _fs(path)
    if fs.get_file_info(p).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def spec_exists(exp: str) -> bool:
    return read_text(f"{exp}/{SPEC_FILE}") is not None


def save_spec(
    exp: str, space: SearchSpace, *, name: str, max_failures: int, optuna_storage: str = ""
) -> None:
    data = {"name": name, "source": space.source, "max_failures": max_failures, **space.to_yaml_dict()}
    if optuna_storage:
        data["optuna_storage"] = optuna_storage
    write_text(f"{exp}/{SPEC_FILE}", yaml.safe_dump(data, sort_keys=False))


def load_optuna_storage(exp: str) -> str:
    """The Optuna storage URL an experiment writes its study to ("" when it has none)."""
    text = read_text(f"{exp}/{SPEC_FILE}")
    return str((yaml.safe_load(text) or {}).get("optuna_storage", "")) if text else ""


def load_spec(exp: str) -> tuple[SearchSpace, int]:
    """The space and `--max-failures` an experiment was started with."""
    text = read_text(f"{exp}/{SPEC_FILE}")
    if text is None:
        raise UserError(f"nothing to resume: {exp} holds no {SPEC_FILE} (check --storage and --name)")
    data = yaml.safe_load(text)
    source = data.pop("source", SPEC_FILE)
    max_failures = int(data.pop("max_failures", 0))
    data.pop("name", None)
    data.pop("optuna_storage", None)
    return parse_space(data, source=source), max_failures


def mark_finished(exp: str, summary: str) -> None:
    write_text(f"{exp}/{FINISHED_FILE}", summary + "\n")


def finished(exp: str) -> str | None:
    """The summary of a search whose every trial ended without error; None while a trial is left to run
    or to re-run (an errored one: `--resume` retries it)."""
    text = read_text(f"{exp}/{FINISHED_FILE}")
    return text.strip() if text is not None else None
