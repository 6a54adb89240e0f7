"""Helpers for the end-to-end search tests: run the CLI, read trial results, a 2-node loopback Ray cluster."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.cli_errors import repo_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def search_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tune.search", *args]


def base_env(**extra: str) -> dict[str, str]:
    return repo_env(PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0", **extra)


def start_logged(cmd: list[str], log_path: str, env: dict[str, str]) -> subprocess.Popen:
    """Start `cmd` in the repo with stdout+stderr going to `log_path` (read it back with open())."""
    with open(log_path, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def trial_results(exp_dir: str) -> dict[str, list[dict]]:
    """trial dir name -> the rows Ray wrote to its result.json (every report, across restarts)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(exp_dir, "trial_*", "result.json"))):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        out[os.path.basename(os.path.dirname(path))] = rows
    return out


def wait_for(
    predicate, *, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.2
):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited (rc={proc.returncode}) while waiting for {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def fake_node(node_id: str, **resources: float) -> dict:
    """One entry of `ray.nodes()` for the cluster checks: alive, with these resources."""
    return {
        "NodeID": node_id,
        "NodeManagerAddress": f"10.0.0.{len(node_id)}",
        "Alive": True,
        "Resources": resources,
    }


def resume_search(storage: str, name: str) -> subprocess.CompletedProcess:
    """`python -m tune.search --resume` of an experiment, as a user types it after an interruption."""
    return subprocess.run(
        search_cmd("--resume", "--storage", storage, "--name", name, "--num-cpus", "2"),
        cwd=REPO,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def synthetic_dir(synthetic_dir) -> str:
    """The tune tests' synthetic cache, shared by both workers (the search driver builds it, trials only
    read it), apart from the loop tests' sets: test_search checks that nothing under it changes."""
    path = os.path.join(synthetic_dir, "tune")
    os.makedirs(path, exist_ok=True)
    return path


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def ray_cluster():
    """Head (1 CPU, no TPU) + worker (1 CPU, `TPU: 4`, `TPU-v4-16-head: 1`) on loopback, each a `ray start --block` process;
    started once per session.

    Torn down by signalling exactly the processes this fixture started (their process groups), not with
    `ray stop`, which would stop every Ray instance on the machine.
    """
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 chars
    port = free_port()
    env = base_env(RAY_AUTH_MODE="disabled")  # a private loopback cluster: no token needed
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []

    def start(args: list[str], log: str) -> None:
        with open(os.path.join(tmp, log), "w") as out:
            procs.append(
                subprocess.Popen(
                    [RAY, "start", *common, *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )

    def status() -> bool:
        r = subprocess.run(
            [RAY, "status", f"--address=127.0.0.1:{port}"], capture_output=True, text=True, env=env
        )
        return r.returncode == 0 and r.stdout.count("node_") >= len(procs)

    try:
        start(
            [
                "--head",
                f"--port={port}",
                f"--temp-dir={tmp}",
                "--include-dashboard=false",
                f"--dashboard-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
            ],
            "head.log",
        )
        wait_for(lambda: port_open(port), timeout=120, what="the Ray head's port", poll=0.2)
        # worker 0 of a fake multi-host v4-16 slice: its chips and the slice's head resource
        start([f"--address=127.0.0.1:{port}", '--resources={"TPU": 4, "TPU-v4-16-head": 1}'], "worker.log")
        worker_log = pathlib.Path(tmp, "worker.log")
        wait_for(lambda: "Ray runtime started" in worker_log.read_text(), timeout=120, what="the Ray worker")
        wait_for(status, timeout=120, what="both Ray nodes", poll=1)  # `ray status` costs a Python start
        yield {"address": f"127.0.0.1:{port}", "env": env, "tmp": tmp}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)  # the test session is over: a node slow to stop is killed below
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # anything of that node still alive (same process group)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_driver(ray_cluster):
    """This test process as a Ray driver on the loopback cluster (disconnected after the module)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=ray_cluster["address"], include_dashboard=False, log_to_driver=False)
    yield ray_cluster
    ray.shutdown()
