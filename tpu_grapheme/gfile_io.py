"""Files of local paths and URIs alike, through tf.io.gfile: atomic writes, reads, copies.

Every write is atomic: a temporary next to the target, then a rename, so a kill leaves the previous file
or the new one, never half of one. Writers that only open local files (Keras, matplotlib) write a local
temporary first; readers that only open local files read a local copy (`local_copy`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from tpu_grapheme.data import paths

TMP = ".tmp-"  # infix of in-flight temporaries: `<name>.tmp-<pid>[.keras]`


def write_text_atomic(path: str, text: str) -> None:
    import tensorflow as tf

    tmp = tmp_name(path)
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
    tmp = tmp_name(path, suffix)
    if not paths.is_uri(path):
        write(tmp)
        os.replace(tmp, path)
        return
    import tensorflow as tf

    local_dir = tempfile.mkdtemp(prefix="tpu_grapheme_write_")
    try:
        local = os.path.join(local_dir, os.path.basename(tmp))
        write(local)
        tf.io.gfile.copy(local, tmp, overwrite=True)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)


def read_text(path: str) -> str | None:
    """The text of `path`, or None when it does not exist (a local path is read without TensorFlow)."""
    if not paths.is_uri(path):
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return f.read()
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return f.read()


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local file with the contents of `path`: the path itself when local, else a temporary copy
    (removed on exit), for readers that open only local files (Keras `load_model`)."""
    if not paths.is_uri(path):
        yield path
        return
    import tensorflow as tf

    local_dir = tempfile.mkdtemp(prefix="tpu_grapheme_read_")
    try:
        local = os.path.join(local_dir, basename(path))
        tf.io.gfile.copy(path, local, overwrite=True)
        yield local
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)


def copy_tree(source: str, dest: str, *, last: str = "") -> None:
    """Copy the files under `source` into `dest` (made if missing); the file named `last` (at the top
    level) goes last, so a copy cut short lacks it."""
    import tensorflow as tf

    source, deferred = source.rstrip("/"), []
    for root, _, files in tf.io.gfile.walk(source):
        rel = root[len(source) :].strip("/" + os.sep)  # walk's roots are `source` joined with subdirs
        target = paths.join(dest, rel) if rel else dest
        tf.io.gfile.makedirs(target)
        for name in files:
            pair = (paths.join(root, name), paths.join(target, name))
            if target == dest and name == last:
                deferred.append(pair)
            else:
                tf.io.gfile.copy(*pair, overwrite=True)
    for pair in deferred:
        tf.io.gfile.copy(*pair, overwrite=True)


def remove_tree(path: str) -> None:
    """Remove `path` and everything under it; nothing to do when it is missing."""
    import tensorflow as tf

    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] if paths.is_uri(path) else os.path.basename(path.rstrip("/"))


def tmp_name(path: str, suffix: str = "") -> str:
    return f"{path}{TMP}{os.getpid()}{suffix}"
