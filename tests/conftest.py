"""Suite-wide settings for `pytest -n 2 --dist loadgroup` (what `make test` runs).

Every test that starts Ray runs in one worker ("ray"), so two Ray instances never start at once on a
2-core machine; every other module is one unit of work, so its module-scoped fixtures (synthetic data,
trained models) are built once, not once per worker.
"""

from __future__ import annotations

import pytest

RAY_TESTS = "tests/tune/"


def pytest_itemcollected(item) -> None:
    # Marked as each test is collected, before xdist's `pytest_collection_modifyitems` reads the marks
    # (marks added in a conftest's `pytest_collection_modifyitems` came too late and were ignored).
    group = "ray" if RAY_TESTS in item.nodeid else item.nodeid.split("::", 1)[0]
    item.add_marker(pytest.mark.xdist_group(group))
