"""Ensemble inference on Kaggle image parquets: a submission CSV, or a score table on a labelled split.

`members` loads and checks the models, `streaming` runs the parquets through them, `scoring` turns
probabilities into a submission or a score table, `cli` is `python -m tpu_grapheme.inference`, `score`
scores a submission CSV against a solution file (`python -m tpu_grapheme.inference.score`).
The names below are the package's public API (benchmarks and notebooks import them from here); they
load on first use, so that `python -m tpu_grapheme.inference.score --help` imports no pandas or models.
`tpu_grapheme.inference.score` is that module; the scoring function is `scoring.score`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "cli": ("_resize_arg", "build_parser", "main"),
    "members": ("Member", "load_member", "load_members", "preprocess", "read_meta"),
    "scoring": (
        "evaluate",
        "format_table",
        "labelled_predictions",
        "prior_for",
        "score_table",
        "submission_frame",
    ),
    "streaming": ("Predictions", "predict"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)  # `_resize_arg`: benchmarks/reweight_gain.py parses --resize with it


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
