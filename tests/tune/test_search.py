"""The search CLI: input errors before Ray starts, then real searches over a tiny model on synthetic data.

End-to-end (real `run_training`, no stand-ins): a 3-trial ASHA search that is interrupted and resumed;
and a 2-node loopback Ray cluster where a trial that asks for TPU chips lands on the one node that has
them, and whose process, killed mid-run, is retried and resumes from a reported checkpoint.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import textwrap

import pytest

from tests.tiny_runs import OLD_RECIPE
from tests.tune.conftest import (
    base_env,
    resume_search,
    search_cmd,
    start_logged,
    trial_results,
    wait_for,
)
from tpu_grapheme.config import from_dict
from tpu_grapheme.config_io import load_yaml
from tune import search

INTERVAL = 5  # steps between reports (and checkpoints)
ASHA_STEPS = 10  # two reports: ASHA's one rung at step 5, then the end
CLUSTER_STEPS = 20  # room for the kill to land mid-run
# Tiny model, tiny images, tiny synthetic set: each eval is a few batches; a trial's time is its start-up.
TINY = {
    "arch": "tiny",
    "resize": [32, 56],
    "batch_size": 16,
    "checkpoint_interval": INTERVAL,
    "log_interval": INTERVAL,
    "steps_per_loop": INTERVAL,
    "eval_batches": 2,
    "warmup_frac": 0.0,
    "synthetic_rows": 100,
    "keep_checkpoints": 1,
    **OLD_RECIPE,
}


def space_yaml(tmp_path, synthetic_dir: str, search_settings: str, params: str, *, steps: int) -> str:
    fixed = {**TINY, "steps": steps, "synthetic_dir": synthetic_dir}
    lines = "\n".join(
        f"  {k}: {{fixed: {v!r}}}" if isinstance(v, str) else f"  {k}: {{fixed: {v}}}"
        for k, v in fixed.items()
    )
    path = tmp_path / "space.yaml"
    path.write_text(
        f"search:\n{textwrap.indent(textwrap.dedent(search_settings), '  ')}space:\n{lines}\n{params}"
    )
    return str(path)


# --- fast: everything the CLI rejects before Ray starts ---------------------------------------------
def test_bad_space_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  cutmix_alpa: {uniform: [0.1, 1.0]}\n")
    with pytest.raises(SystemExit) as exit_:
        search.main(["--space", str(bad), "--storage", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err
    assert err == "error: bad.yaml: unknown TrainConfig field 'cutmix_alpa' (did you mean 'cutmix_alpha'?)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--space", "cutmix", "--set", "arch=resnet"], "--arch 'resnet' is not one of"),
        (["--space", "cutmix", "--set", "lr=0.1"], "unknown TrainConfig field 'lr'"),
        (
            ["--space", "cutmix", "--steps", "50", "--grace-period", "60"],
            "grace_period 60 must be < max_t 50",
        ),
        (["--space", "cutmix", "--resources", "tpus=4"], "--resources takes cpu=N,gpu=N,tpu=N|host"),
        (["--resume"], "--resume needs --name"),
        ([], "give --space"),
    ],
)
def test_cli_input_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        search.main([*argv, "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-cpus", "0"], "--num-cpus must be at least 1, got 0"),
        (["--num-cpus", "-1"], "--num-cpus must be at least 1, got -1"),
        (
            ["--set", "workers=100", "--num-cpus", "2"],
            "a trial of workers=100 needs 100 x {'CPU': 1.0}, but the Ray cluster holds only 2 such "
            "bundle(s) (a local Ray instance of 2 CPUs; --num-cpus sets it)",
        ),
        (["--resources", "cpu=4", "--num-cpus", "2"], "no Ray node can hold one trial's resources"),
    ],
)
def test_resources_are_checked_before_ray_starts(tmp_path, capsys, monkeypatch, argv, message):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    with pytest.raises(SystemExit) as exit_:
        search.main(["--space", "cutmix", "--storage", str(tmp_path / "s"), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()  # nothing left behind


def test_storage_that_is_a_file_or_not_writable_is_refused_before_ray_starts(tmp_path, capsys):
    a_file = tmp_path / "f"
    a_file.write_text("")
    for storage, message in [
        (a_file, f"--storage {a_file}: {a_file} is a file, not a directory"),
        (a_file / "sub", f"--storage {a_file / 'sub'}: {a_file} is a file, not a directory"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            search.main(["--space", "cutmix", "--storage", str(storage)])
        assert exit_.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"
    if os.geteuid() == 0:
        return  # root writes anywhere: the permission half cannot be seen
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        search.main(["--space", "cutmix", "--storage", str(locked / "tune")])
    assert capsys.readouterr().err == f"error: --storage {locked / 'tune'}: {locked} is not writable\n"
    assert os.listdir(locked) == []


def test_local_search_refuses_to_join_a_running_cluster_by_accident(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    with pytest.raises(SystemExit) as exit_:
        search.main(["--space", "cutmix", "--storage", str(tmp_path)])
    assert exit_.value.code == 2 and "pass --address auto to search on it" in capsys.readouterr().err


# --- end to end: local search, ASHA, interrupt, resume ---------------------------------------------
ASHA_SEARCH = """\
metric: valid_loss
mode: min
trials: 3
max_concurrent: 1
seed: 0
scheduler: {name: asha, grace_period: 5, reduction_factor: 2}
resources: {cpu: 1}
# First a learning rate that learns, then one that cannot: ASHA must cut the second at its first rung
# (usually after the resume, against the rung records saved before the interrupt). The third is sampled.
points_to_evaluate: [{max_lr: 1.0e-2, cutmix_alpha: 0.5}, {max_lr: 1.0e-6, cutmix_alpha: 0.5}]
"""
ASHA_PARAMS = """\
  max_lr: {loguniform: [1.0e-6, 1.0e-2]}
  cutmix_alpha: {uniform: [0.2, 1.0]}
"""


@pytest.fixture(scope="module")
def interrupted_search(tmp_path_factory, synthetic_dir):
    """Start a 3-trial search, Ctrl-C it once the first trial has finished, then `--resume` it."""
    tmp = tmp_path_factory.mktemp("asha")
    space = space_yaml(tmp, synthetic_dir, ASHA_SEARCH, ASHA_PARAMS, steps=ASHA_STEPS)
    storage, name = str(tmp / "storage"), "asha"
    exp = os.path.join(storage, name)
    log1 = str(tmp / "first.log")
    cmd = search_cmd("--space", space, "--storage", storage, "--name", name, "--num-cpus", "2")
    first = start_logged(cmd, log1, base_env())
    try:

        def first_trial_done():
            done = [rows for rows in trial_results(exp).values() if rows and rows[-1]["step"] >= ASHA_STEPS]
            return done[0] if done else None

        done_rows = wait_for(first_trial_done, timeout=600, what="the first trial to finish", proc=first)
        synthetic_mtimes = {
            os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime
            for d, _, fs in os.walk(synthetic_dir)
            for f in fs
        }
        first.send_signal(signal.SIGINT)  # Ctrl-C
        first_rc = first.wait(timeout=180)
        before_resume = trial_results(exp)
    finally:
        if first.poll() is None:
            first.kill()
    with open(log1) as f:
        first_out = f.read()
    best = pathlib.Path(exp, "best.yaml")
    first_best = best.read_text() if best.exists() else ""
    second = resume_search(storage, name)
    after = trial_results(exp)
    second_best = (best.read_text(), best.stat().st_mtime_ns)
    third = resume_search(storage, name)  # the search has finished: nothing to do, nothing to change
    return {
        "exp": exp,
        "first_rc": first_rc,
        "first_out": first_out,
        "done_trial": done_rows[0]["trial_id"],
        "before_resume": before_resume,
        "after": after,
        "second": second,
        "third": third,
        "third_results": trial_results(exp),
        "bests": (first_best, second_best, (best.read_text(), best.stat().st_mtime_ns)),
        "synthetic_dir": synthetic_dir,
        "synthetic_mtimes": synthetic_mtimes,
    }


def test_interrupted_search_says_how_to_resume(interrupted_search):
    r = interrupted_search
    assert r["first_rc"] == 130, r["first_out"][-3000:]
    assert "interrupted:" in r["first_out"] and "--resume --storage" in r["first_out"]
    assert "[tune] synthetic data ready" in r["first_out"]


def test_search_console_holds_no_noise(interrupted_search):
    from tests.tune.test_console import assert_quiet

    r = interrupted_search
    assert_quiet(r["first_out"] + r["second"].stdout + r["second"].stderr)


def test_best_yaml_is_partial_until_the_end_and_a_finished_search_resumed_keeps_it(interrupted_search):
    r = interrupted_search
    first, second, third = r["bests"]
    assert first.startswith("# best trial ")
    assert re.search(r"\n# PARTIAL: the search was interrupted with [12] of 3 trials ended", first), first
    assert "PARTIAL" not in second[0]
    out = r["third"].stdout + r["third"].stderr
    assert r["third"].returncode == 0, out[-4000:]
    assert third == second  # the same bytes, not even rewritten
    assert r["third_results"] == r["after"]  # no trial ran again
    best = os.path.join(r["exp"], "best.yaml")  # answered from finished.txt, without starting Ray
    assert (
        out.strip()
        == f"[tune] nothing to resume: asha has finished (all 3 trials ended; best config: {best})"
    )
    for text in (r["first_out"], r["second"].stdout + r["second"].stderr, out):
        assert "Tuner.restore(" not in text  # only our --resume command is printed


def test_resume_finishes_without_rerunning_completed_trials(interrupted_search):
    r = interrupted_search
    out = r["second"].stdout + r["second"].stderr
    assert r["second"].returncode == 0, out[-4000:]
    after, before = r["after"], r["before_resume"]
    assert len(after) == 3
    done_dir = next(d for d, rows in before.items() if rows and rows[0]["trial_id"] == r["done_trial"])
    assert after[done_dir] == before[done_dir]  # the finished trial reported nothing new
    for rows in after.values():  # resumed trials continue from their checkpoint: steps never go back
        steps = [row["step"] for row in rows]
        assert steps == sorted(set(steps)), steps


def test_asha_stops_a_trial_early_and_best_config_is_a_trainconfig(interrupted_search):
    r = interrupted_search
    out = r["second"].stdout
    last_steps = sorted(rows[-1]["step"] for rows in r["after"].values())
    assert last_steps[0] < ASHA_STEPS and "stopped early" in out  # ASHA cut at least one trial
    assert last_steps[-1] == ASHA_STEPS
    # The learning rate that cannot learn is cut at its first rung, whether it ran before the interrupt
    # or after the resume (ASHA's rung records are restored with the experiment).
    hopeless = next(rows for rows in r["after"].values() if rows[0]["config"]["max_lr"] == 1e-6)
    assert [row["step"] for row in hopeless] == [INTERVAL]
    best = os.path.join(r["exp"], "best.yaml")
    cfg = from_dict(load_yaml(best))  # what `python -m tpu_grapheme.train --config best.yaml` builds
    assert cfg.arch == "tiny" and cfg.steps == ASHA_STEPS and cfg.max_lr > 1e-6
    assert cfg.train_folder == ""  # the synthetic default, not this machine's cache path
    assert os.path.getsize(os.path.join(r["exp"], "trials.png")) > 1000
    # The driver built the data set before the trials; no trial regenerated it.
    for path, mtime in r["synthetic_mtimes"].items():
        assert os.stat(path).st_mtime == mtime, path


def test_optuna_study_holds_every_trial_as_the_search_reported_it(interrupted_search):
    """What optuna-dashboard shows: read back with Optuna's own API after the interrupted + resumed search."""
    import optuna

    r = interrupted_search
    study = optuna.load_study(study_name="asha", storage=f"sqlite:///{r['exp']}/optuna.db")
    rows = {trial[0]["trial_id"]: trial for trial in r["after"].values()}  # each trial's result.json
    trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(trials) == set(rows) and len(study.trials) == 3
    assert study.direction.name == "MINIMIZE"
    for trial_id, reports in rows.items():
        t = trials[trial_id]
        config = reports[0]["config"]
        assert t.params == {k: config[k] for k in ("max_lr", "cutmix_alpha")}
        assert t.intermediate_values == {row["step"]: row["valid_loss"] for row in reports}
        assert t.value == reports[-1]["valid_loss"]
        assert t.state.name == ("COMPLETE" if reports[-1]["step"] == ASHA_STEPS else "PRUNED")


def test_hparams_sessions_hold_every_trials_params_and_metric(interrupted_search):
    """What TensorBoard's HParams tab shows: read back with TensorBoard's event reader."""
    from tests.tune.test_dashboards import read_hparams

    r = interrupted_search
    log_dir = os.path.join(r["exp"], "hparams")
    exp = read_hparams(log_dir, "")["experiment"].experiment
    assert [m.name.tag for m in exp.metric_infos] == ["valid_loss"]
    assert sorted(h.name for h in exp.hparam_infos) == ["cutmix_alpha", "max_lr"]
    for reports in r["after"].values():
        session = read_hparams(log_dir, f"trial_{reports[0]['trial_id']}", tags=("valid_loss",))
        hparams = session["session_start_info"].session_start_info.hparams
        assert {k: v.number_value for k, v in hparams.items()} == {
            k: reports[0]["config"][k] for k in ("max_lr", "cutmix_alpha")
        }
        expected = {row["step"]: row["valid_loss"] for row in reports}
        assert session["scalars"]["valid_loss"] == pytest.approx(expected, rel=1e-6)  # float32 scalars
        assert session["session_end_info"].session_end_info.status == 1  # STATUS_SUCCESS
    assert (
        "optuna-dashboard sqlite:///" in r["second"].stdout and "tensorboard --logdir" in r["second"].stdout
    )


# --- end to end: a 2-node Ray cluster on loopback ---------------------------------------------------
CLUSTER_SEARCH = """\
metric: hierarchical_recall
trials: 1
seed: 0
scheduler: fifo
resources: {cpu: 1, tpu: host}
"""
CLUSTER_PARAMS = """\
  max_lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


def test_cluster_tpu_placement_and_trial_retry_from_checkpoint(tmp_path, synthetic_dir, ray_cluster):
    space = space_yaml(tmp_path, synthetic_dir, CLUSTER_SEARCH, CLUSTER_PARAMS, steps=CLUSTER_STEPS)
    storage = str(tmp_path / "storage")
    exp = os.path.join(storage, "cluster")
    log = str(tmp_path / "driver.log")
    cmd = search_cmd("--space", space, "--storage", storage, "--name", "cluster", "--max-failures", "1")
    driver = start_logged([*cmd, "--address", ray_cluster["address"]], log, ray_cluster["env"])
    try:

        def first_report():
            for rows in trial_results(exp).values():
                if rows:
                    return rows[0]
            return None

        victim = wait_for(first_report, timeout=600, what="the trial's first report", proc=driver)
        os.kill(victim["pid"], signal.SIGKILL)  # the trial's process dies mid-run
        rc = driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    with open(log) as f:
        out = f.read()
    assert rc == 0, out[-4000:]
    tpu_nodes = [
        line.split()[2] for line in out.splitlines() if line.startswith("[tune] node ") and "TPU=4" in line
    ]
    assert len(tpu_nodes) == 1 and "2 node(s), per trial {'CPU': 1.0, 'TPU': 4.0}" in out
    from tests.tune.test_console import assert_quiet

    assert_quiet(out)  # a 1-trial search on a cluster, its trial killed and retried: no noise
    (rows,) = trial_results(exp).values()
    assert {row["node_id"] for row in rows} == set(tpu_nodes)  # the TPU trial ran only on the TPU node
    assert rows[0]["step"] == victim["step"] and rows[-1]["step"] == CLUSTER_STEPS
    pids = list(dict.fromkeys(row["pid"] for row in rows))
    assert len(pids) == 2  # retried in a new process...
    killed, retried = ([row["step"] for row in rows if row["pid"] == pid] for pid in pids)
    assert killed == sorted(set(killed)) and retried == sorted(set(retried))
    # ...from the checkpoint Ray handed back, a reported one (its N-th holds step (N + 1) x INTERVAL: every
    # report has one), which the killed process had reached; not from step 0. Which one depends on when
    # the kill lands: Ray may hand back the one before the last report (that one still being persisted),
    # or one whose report's row result.json lacks (the kill landed while Ray took that report in).
    handed = re.findall(r"resuming from the reported checkpoint \(\S+/checkpoint_(\d+)\)", out)
    resumed = re.findall(r"resumed from \S+/ckpt-(\d+) at step (\d+)", out)
    assert handed and resumed, out[-4000:]
    step = (int(handed[0]) + 1) * INTERVAL
    assert resumed[0] == (str(step), str(step)) and retried[0] == step + INTERVAL, (handed, resumed, retried)
    assert re.search(rf"pid={victim['pid']}\)\S* eval step {step}: ", out), out[-4000:]
