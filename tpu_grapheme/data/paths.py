"""Paths that may be local or a URI (`gs://...`): URIs join with '/', local paths with `os.path`."""

from __future__ import annotations

import os
import posixpath


def is_uri(path: str) -> bool:
    """True for `scheme://...` paths (gs://, s3://), which tf.io.gfile reads and os.path must not touch."""
    return "://" in path


def join(directory: str, name: str) -> str:
    return posixpath.join(directory, name) if is_uri(directory) else os.path.join(directory, name)


def dirname(path: str) -> str:
    return posixpath.dirname(path) if is_uri(path) else os.path.dirname(path)
