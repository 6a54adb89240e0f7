"""Suite-wide settings: with `pytest -n 2` (what `make test` runs), every test that starts Ray runs in
one worker, so two Ray instances never start at once on a 2-core machine."""

from __future__ import annotations

import pytest

RAY_TESTS = "tests/tune/"


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if RAY_TESTS in item.nodeid:
            item.add_marker(pytest.mark.xdist_group("ray"))
