"""Suite-wide settings for `pytest -n 2 --dist loadgroup` (what `make test` runs).

Ray tests run in two groups that may run side by side: "ray-cluster" (every test on the session's
2-node loopback cluster, started once) and "ray-local" (searches that start their own local Ray
instance; they never join the loopback cluster, whose address file lives in its own temp dir). Every
other module is one unit of work, so its module-scoped fixtures (synthetic data, trained models) are
built once, not once per worker. xdist hands the units out in the order of their first test, so the
longest units (LONGEST_FIRST) are collected first: a long unit handed out last would keep one worker
busy for minutes after the other has run out of work. xdist's own order (most tests first, its
`--loadscope-reorder` default) put the long one-test modules last, so it is turned off.

The end-to-end fault tests (E2E: real Ray clusters and searches, real signals and kills to trainings of
several processes) carry the `e2e` mark: `make test` runs the rest, `make test-e2e` runs them, CI both.
"""

from __future__ import annotations

import os
import sys

import pytest

TUNE_TESTS = "tests/tune/"
LOCAL_RAY_MODULES = ("test_search.py", "test_sigterm.py")  # their other tests start no Ray at all
CLUSTER_FIXTURE = "ray_cluster"  # the session's 2-node loopback cluster (tests/tune/conftest.py)
E2E_FIXTURES = (CLUSTER_FIXTURE, "interrupted_search")  # a test using one is end-to-end
E2E_MODULES = ("tests/tune/test_sigterm.py",)
# The units that take longest, longest first (from `--durations`); every other unit follows in file order.
LONGEST_FIRST = (
    "ray-cluster",
    "ray-local",
    "tests/test_exact_resume.py",  # with the determinism test
    "tests/test_ema.py",
    "tests/test_train_step.py",
    "tests/test_loop.py",
    "tests/benchmarks/test_throughput.py",
    "tests/test_resume_check.py",
    "tests/test_distribute.py",
    "tests/test_loop_faults.py",
    "tests/test_replica_random.py",
    "tests/inference/test_cli.py",
)

# scikit-learn is a test-only reference (setup.py's `test` extra), but `import keras` imports it whenever it
# is installed: ~1.5 s of CPU at the start of every TensorFlow process. The processes the tests start (the
# CLIs, Ray's workers) therefore run without it, as on a user's install; the test processes keep it.
WITHOUT_SKLEARN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "without_sklearn")
_pythonpath = os.environ.get("PYTHONPATH", "").split(os.pathsep)
if WITHOUT_SKLEARN not in _pythonpath:
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (WITHOUT_SKLEARN, *_pythonpath) if p)
if WITHOUT_SKLEARN in sys.path:  # an xdist worker inherits the variable: its tests use the reference
    sys.path.remove(WITHOUT_SKLEARN)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> str:
    """One synthetic-default cache for the session, shared by both xdist workers: each set (keyed by rows
    and seed) is rendered once; `ensure_synthetic`'s lock makes a second process wait for the first."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # each worker's temp dir is a subdir of the session's
    path = root / "synthetic-shared"
    path.mkdir(exist_ok=True)
    return str(path)


def xdist_group(item) -> str:
    module = item.nodeid.split("::", 1)[0]
    if TUNE_TESTS in module:
        if CLUSTER_FIXTURE in getattr(item, "fixturenames", ()):
            return "ray-cluster"
        if module.endswith(LOCAL_RAY_MODULES):
            return "ray-local"
    return module


def is_e2e(item) -> bool:
    fixtures = getattr(item, "fixturenames", ())
    return item.nodeid.startswith(E2E_MODULES) or any(f in fixtures for f in E2E_FIXTURES)


def pytest_configure(config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # the xdist controller hands out units in our order
        config.option.loadscopereorder = False


def _rank(item) -> int:
    group = xdist_group(item)
    return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_itemcollected(item) -> None:
    # Marked as each test is collected, before xdist's `pytest_collection_modifyitems` reads the marks
    # (marks added in a conftest's `pytest_collection_modifyitems` came too late and were ignored).
    item.add_marker(pytest.mark.xdist_group(xdist_group(item)))
    if is_e2e(item):
        item.add_marker(pytest.mark.e2e)


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=_rank)  # stable: the order within a unit, and of the other units, is kept
