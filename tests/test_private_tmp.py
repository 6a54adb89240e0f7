"""Per-process temp dirs (a non-chief worker's private checkpoints): a killed owner's dirs go at the next
start, a live owner's stay. Owners are real processes, ended with a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tpu_grapheme.private_tmp import make_private_dir, process_alive, remove_stale
from tpu_grapheme.run_dir import WORKER_CKPT_PREFIX, RunDir


def _owned_by(pid: int, parent) -> str:
    path = parent / f"{WORKER_CKPT_PREFIX}{pid}_abc"
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "ckpt-5.index").write_text("x")
    return str(path)


def test_dirs_of_killed_processes_go_and_live_ones_stay(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dirs = {p.pid: _owned_by(p.pid, tmp_path) for p in (live, killed, zombie)}
        unowned = tmp_path / f"{WORKER_CKPT_PREFIX}old"  # an older name without a pid: not ours to judge
        unowned.mkdir()
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        os.kill(zombie.pid, signal.SIGKILL)  # killed, not yet reaped by its parent (this test)
        deadline = time.time() + 30
        while process_alive(zombie.pid) and time.time() < deadline:
            time.sleep(0.01)
        new = make_private_dir(WORKER_CKPT_PREFIX, parent=str(tmp_path))
        assert os.path.isdir(new) and os.path.basename(new).startswith(f"{WORKER_CKPT_PREFIX}{os.getpid()}_")
        assert os.path.isdir(dirs[live.pid]) and unowned.is_dir()
        assert not os.path.exists(dirs[killed.pid]) and not os.path.exists(dirs[zombie.pid])
        assert remove_stale(WORKER_CKPT_PREFIX, parent=str(tmp_path)) == []  # this process is alive
    finally:
        for p in (live, killed, zombie):
            if p.poll() is None:
                p.kill()
            p.wait()


def test_a_non_chief_checkpoint_manager_saves_into_a_private_dir_named_after_its_process(tmp_path):
    import tensorflow as tf

    run = RunDir(str(tmp_path / "run"))
    manager = run.checkpoint_manager(tf.train.Checkpoint(v=tf.Variable(1.0)), max_to_keep=1, chief=False)
    directory = str(manager.directory)
    assert os.path.basename(directory).startswith(f"{WORKER_CKPT_PREFIX}{os.getpid()}_")
    manager.save(checkpoint_number=1)
    run.remove_private_checkpoints(manager)
    assert not os.path.exists(directory) and not os.path.exists(run.checkpoints)
