"""Wrong resumes are refused in one line before any work; the fields that may change are declared once."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest

from tests.cli_errors import one_line_error, start_cli
from tests.tiny_runs import tiny_cfg
from tpu_grapheme import resume_check
from tpu_grapheme.config import FIELDS, TrainConfig
from tpu_grapheme.errors import UserError
from tpu_grapheme.loop import run_training
from tpu_grapheme.resume_check import (
    DATA_FIELDS,
    MAY_CHANGE,
    SAME_REPLICAS,
    check_resume,
    data_patterns_of,
    refused_fields,
)
from tpu_grapheme.run_dir import RunDir
from tpu_grapheme.train import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(synthetic_dir: str, out: str, **kw) -> TrainConfig:
    return tiny_cfg(synthetic_dir, out, **{"steps": 4, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_dir):
    """One finished 4-step run (checkpoint at step 4, model_final.keras); tests that resume it copy it."""
    root = tmp_path_factory.mktemp("resume")
    cfg = _cfg(synthetic_dir, str(root / "runs"))
    run_training(cfg, log=lambda _: None)
    return cfg


def _snapshot(run_dir: str) -> dict[str, object]:
    """What a refused resume must leave as it was: the files' bytes and modification times."""
    out = {}
    for name in ("config.yaml", "model_meta.json", "model_final.keras", "history.json"):
        path = os.path.join(run_dir, name)
        with open(path, "rb") as f:
            out[name] = (f.read(), os.stat(path).st_mtime_ns)
    out["checkpoints"] = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    return out


REFUSED = {
    "arch": ({"arch": "small"}, "arch='tiny'", "arch='small'"),
    "resize": ({"resize": (40, 64)}, "resize=32,56", "resize=40,64"),
    "grapheme_head": ({"grapheme_head": True}, "grapheme_head=False", "grapheme_head=True"),
    "precision": ({"mixed_precision": "bfloat16"}, "mixed_precision='float32'", "'bfloat16'"),
    "data set": ({"synthetic_rows": 150}, "synthetic-v2-120-s42", "synthetic-v2-150-s42"),
    "batch": ({"batch_size": 16}, "batch_size=32", "batch_size=16"),
    "accum": ({"grad_accum": 2}, "grad_accum=1", "grad_accum=2"),
    "optimizer": ({"optimizer": "sgd"}, "optimizer='adamw'", "optimizer='sgd'"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_changed_run_is_refused_in_one_line_and_the_run_dir_is_untouched(trained, case):
    change, was, now = REFUSED[case]
    before = _snapshot(trained.run_dir)
    with pytest.raises(UserError) as e:
        run_training(trained.replace(steps=8, **change), log=lambda _: None)
    msg = str(e.value)
    assert "\n" not in msg and was in msg and now in msg and "--run-name" in msg, msg
    assert msg.index(was) < msg.index("this command asks for") < msg.index(now)
    assert _snapshot(trained.run_dir) == before


def test_lower_steps_than_the_checkpoint_is_refused_and_rewrites_nothing(trained):
    before = _snapshot(trained.run_dir)
    with pytest.raises(UserError, match=r"checkpoint at step 4, past --steps 2; .*--steps 4 or more"):
        run_training(trained.replace(steps=2), log=lambda _: None)
    assert _snapshot(trained.run_dir) == before


def test_allowed_changes_resume_and_train_on(trained, tmp_path):
    out = tmp_path / "runs"
    shutil.copytree(os.path.dirname(trained.run_dir), out)
    lines: list[str] = []
    cfg = trained.replace(output_dir=str(out), steps=6, log_interval=2, keep_checkpoints=1, cache_mb=0)
    result = run_training(cfg, log=lines.append)
    assert any("resumed from" in line and "at step 4" in line for line in lines), lines
    assert any("schedule now spans 6 steps" in line for line in lines), lines
    assert [r["step"] for r in RunDir(result.run_dir).read_history()] == [4, 6]
    assert RunDir(result.run_dir).read_config().log_interval == 2  # the resume's config is recorded


def test_the_cli_refuses_with_exit_2_and_no_traceback(trained):
    flags = ["--arch", "small", "--resize", "32,56", "--synthetic-rows", "120", "--batch-size", "32"]
    flags += [
        "--synthetic-dir",
        trained.synthetic_dir,
        "--output-dir",
        trained.output_dir,
        "--run-name",
        "run",
    ]
    before = _snapshot(trained.run_dir)
    error = one_line_error(start_cli("tpu_grapheme.train", *flags))
    assert "arch='tiny'" in error and "arch='small'" in error, error
    assert _snapshot(trained.run_dir) == before


def test_replica_count_and_data_rewritten_under_the_same_patterns_are_refused(trained, tmp_path):
    out = tmp_path / "runs"
    shutil.copytree(os.path.dirname(trained.run_dir), out)
    cfg = trained.replace(output_dir=str(out))
    rd = RunDir(cfg.run_dir)
    assert check_resume(cfg, rd, replicas=1) == 4
    with pytest.raises(UserError, match=r"replicas=1 \(global batch 32\).*replicas=2 \(global batch 64\)"):
        check_resume(cfg.replace(strategy="cpu", cpu_replicas=2), rd, replicas=2)
    meta_path = pathlib.Path(rd.file("model_meta.json"))
    meta = json.loads(meta_path.read_text())
    meta["class_counts"]["vowel_diacritic"][0] += 1  # as if the shards were rewritten in place
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"data set=its training class counts"):
        check_resume(cfg, rd, replicas=1)


def test_no_checkpoint_means_a_fresh_start_with_any_config(tmp_path):
    cfg = _cfg(str(tmp_path / "synthetic"), str(tmp_path / "runs"))
    os.makedirs(cfg.run_dir)
    RunDir(cfg.run_dir).write_config("arch: small\n")  # a start that died before its first checkpoint
    assert check_resume(cfg, RunDir(cfg.run_dir), replicas=1) is None


def test_the_data_set_is_its_patterns_so_a_resolved_synthetic_default_is_the_same_set(tmp_path):
    cfg = _cfg(str(tmp_path / "synthetic"), "runs")
    train, valid = data_patterns_of(cfg)
    resolved = cfg.replace(
        train_folder=train, valid_folder=valid, strategy="multiworker"
    )  # as workers record it
    assert resume_check.config_changes(resolved, cfg) == {}
    other = cfg.replace(train_folder=train, valid_folder=valid.replace("valid", "other"))
    assert list(resume_check.config_changes(resolved, other)) == ["data set"]
    given = cfg.replace(synthetic_rows=200, train_folder=train, valid_folder=valid)
    assert resume_check.config_changes(cfg, given) == {}  # with folders given, synthetic_* name nothing


def test_every_field_is_declared_once_and_listed_in_help_and_readme():
    groups = [set(MAY_CHANGE), set(SAME_REPLICAS), set(DATA_FIELDS), set(refused_fields())]
    assert set().union(*groups) == set(FIELDS)
    assert sum(len(g) for g in groups) == len(FIELDS)  # disjoint
    for name in ("arch", "resize", "grapheme_head", "mixed_precision", "batch_size", "grad_accum", "seed"):
        assert name in refused_fields()
    help_text = build_parser().format_help()
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for name in [*MAY_CHANGE, *SAME_REPLICAS]:
        flag = "--" + name.replace("_", "-")
        assert flag in help_text.split("Resuming:")[1], flag
        assert f"`{flag}`" in readme, flag


def test_multi_worker_driver_checks_before_ray_starts(trained, monkeypatch):
    from tpu_grapheme import multiworker, ray_cluster

    def must_not_connect(*args, **kwargs):
        raise AssertionError("Ray was started before the resume was checked")

    monkeypatch.setattr(ray_cluster, "connect", must_not_connect)
    before = _snapshot(trained.run_dir)
    with pytest.raises(UserError, match=r"arch='tiny'.*this command asks for arch='small'"):
        multiworker.train_multiworker(trained.replace(workers=2, arch="small"))
    with pytest.raises(UserError, match=r"replicas=1 \(global batch 32\).*replicas=2 \(global batch 64\)"):
        multiworker.train_multiworker(trained.replace(workers=2))  # 2 workers: twice the global batch
    assert _snapshot(trained.run_dir) == before
