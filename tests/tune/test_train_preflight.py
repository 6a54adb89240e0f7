"""`train --workers N` fails fast, in one line, where Ray would wait forever: an --address no cluster
answers, or more CPUs/GPUs than the cluster has; and it leaves no run dir (or output dir) behind."""

from __future__ import annotations

import os
import time

import pytest

from tests.cli_errors import one_line_error, start_cli
from tests.tune.conftest import fake_node, free_port
from tpu_grapheme import ray_cluster
from tpu_grapheme.errors import UserError


def test_an_address_where_nothing_listens_is_one_line_after_a_bounded_wait(tmp_path):
    """Timed against a reference started alongside: the same CLI refused at once (an address it cannot
    parse) pays the same imports under the same load, so the difference is the wait itself (10 s)."""
    address = f"127.0.0.1:{free_port()}"
    args = ("tpu_grapheme.train", "--workers", "2", "--address")
    t0 = time.monotonic()
    proc = start_cli(*args, address, "--output-dir", tmp_path / "runs")
    reference = start_cli(*args, "nonsense", "--output-dir", tmp_path / "ref")
    assert one_line_error(reference, timeout=600) == "error: --address nonsense: expected host:port or auto"
    t_reference = time.monotonic() - t0
    error = one_line_error(proc, timeout=600)
    waited = time.monotonic() - t0 - t_reference
    assert error.startswith(f"error: no Ray cluster answers at {address} (connection refused for 10s)"), error
    print(f"refused after {t_reference + waited:.0f}s, the reference after {t_reference:.0f}s")
    assert waited < 60  # the 10 s wait and slack, not Ray's retrying forever
    assert os.listdir(tmp_path) == []


def test_wait_for_cluster_returns_once_something_listens_and_checks_the_address():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        ray_cluster.wait_for_cluster(f"127.0.0.1:{s.getsockname()[1]}", timeout=1)
    with pytest.raises(UserError, match=r"^--address nonsense: expected host:port or auto$"):
        ray_cluster.wait_for_cluster("nonsense", timeout=1)


def test_resources_beyond_the_cluster_are_refused(monkeypatch):
    nodes = [fake_node("a", CPU=1), fake_node("bb", CPU=1, GPU=1)]
    monkeypatch.setattr(ray_cluster, "alive_nodes", lambda: nodes)
    ray_cluster.check_resources(2, cpus=1)
    ray_cluster.check_resources(1, cpus=1, gpus=1)
    with pytest.raises(
        UserError, match=r"^--workers 3 x --cpus-per-worker 1 asks for 3 CPUs, the Ray cluster"
    ):
        ray_cluster.check_resources(3, cpus=1)
    with pytest.raises(UserError, match=r"asks for 2 CPUs, .* has 2 on 2 node\(s\) \(room for 0 worker"):
        ray_cluster.check_resources(1, cpus=2)  # 2 CPUs in all, but no node holds one worker
    with pytest.raises(UserError, match=r"^--workers 2 x --gpus-per-worker 1 asks for 2 GPUs"):
        ray_cluster.check_resources(2, cpus=0.5, gpus=1)


def test_more_workers_than_the_cluster_holds_is_refused_before_starting(ray_cluster, tmp_path):
    """The loopback cluster has 1 CPU per node, 2 nodes, no GPU."""
    common = ("--address", ray_cluster["address"], "--arch", "tiny", "--steps", "2")
    procs = {
        "cpus": start_cli(
            "tpu_grapheme.train",
            *("--workers", "3", *common, "--output-dir", tmp_path / "a"),
            env=ray_cluster["env"],
        ),
        "gpus": start_cli(
            "tpu_grapheme.train",
            *("--workers", "1", "--gpus-per-worker", "1", *common, "--output-dir", tmp_path / "b"),
            env=ray_cluster["env"],
        ),
    }
    assert "asks for 3 CPUs, the Ray cluster has 2 on 2 node(s)" in one_line_error(procs["cpus"], timeout=300)
    assert "asks for 1 GPUs, the Ray cluster has 0 on 2 node(s)" in one_line_error(procs["gpus"], timeout=300)
    assert os.listdir(tmp_path) == []
