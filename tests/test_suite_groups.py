"""`make test` runs `pytest -n 2 --dist loadgroup`: the groups of tests/conftest.py must reach xdist.

pytest 9.2 silently broke xdist 3.8's grouping (pytest-xdist#1386): Ray tests then ran in both workers
at once and module fixtures were built twice. This fails if a pytest or xdist upgrade does that again.
"""

from __future__ import annotations

import pytest


def test_this_module_is_one_xdist_group(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under pytest -n N --dist loadgroup")
    assert request.node.nodeid.endswith("@tests/test_suite_groups.py"), request.node.nodeid
