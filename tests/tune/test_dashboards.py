"""The search's dashboards without a Ray search: the Optuna study `StudySearch` writes, read back with
`optuna.load_study`, and the HParams sessions `HParamsLog` writes, read back with TensorBoard's own
event reader. (`test_search.py` checks both after a real, interrupted and resumed search.)"""

from __future__ import annotations

import pickle

import pytest

from tune import optuna_study, search, storage, tuner
from tune.hparams_log import HParamsLog
from tune.space_yaml import parse_space

SPACE = {
    "search": {
        "metric": "hierarchical_recall",
        "seed": 0,
        "points_to_evaluate": [{"max_lr": 1e-3, "optimizer": "adamw"}],
    },
    "space": {
        "arch": "tiny",
        "steps": 20,
        "checkpoint_interval": 10,
        "max_lr": {"loguniform": [1e-4, 1e-2]},
        "optimizer": {"choice": ["adamw", "ranger"]},
    },
}


def read_hparams(log_dir: str, run: str, tags=("hierarchical_recall", "valid_loss")) -> dict:
    """The HParams plugin data and scalars of one run, as TensorBoard's event reader sees them."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(f"{log_dir}/{run}", size_guidance={ea.TENSORS: 0})
    acc.Reload()
    out = {
        tag.split("/")[-1]: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in acc.PluginTagToContent("hparams").items()
    }
    present = set(acc.Tags()["tensors"])
    out["scalars"] = {
        tag: {e.step: tensor_util.make_ndarray(e.tensor_proto).item() for e in acc.Tensors(tag)}
        for tag in tags
        if tag in present
    }
    return out


def test_study_search_writes_steps_prunes_early_stops_and_fails_errors(tmp_path):
    import optuna

    url = optuna_study.default_url(str(tmp_path / "exp"))
    space = parse_space(SPACE, source="opt.yaml")
    searcher = tuner.build_searcher(space, optuna_storage=url, study_name="exp")
    configs = {t: searcher.suggest(t) for t in ("a", "b", "c")}
    assert configs["a"]["max_lr"] == 1e-3  # points_to_evaluate first
    for trial in ("a", "b", "c"):
        searcher.on_trial_result(trial, {"hierarchical_recall": 0.25, "step": 10, "training_iteration": 1})
    searcher.on_trial_result("a", {"hierarchical_recall": 0.25, "step": 10})  # a retried trial's repeat
    searcher.on_trial_complete("a", result={"hierarchical_recall": 0.5, "step": 20})  # ran to the end
    searcher.on_trial_complete("b", result={"hierarchical_recall": 0.125, "step": 10})  # ASHA stopped it
    searcher.on_trial_complete("c", error=True)

    study = optuna.load_study(study_name="exp", storage=url)
    trials = {t.user_attrs[optuna_study.RAY_TRIAL_ID]: t for t in study.trials}
    assert {k: t.params for k, t in trials.items()} == configs
    assert trials["a"].intermediate_values == {10: 0.25, 20: 0.5}
    assert (trials["a"].state.name, trials["a"].value) == ("COMPLETE", 0.5)
    assert trials["b"].intermediate_values == {10: 0.25} and trials["b"].state.name == "PRUNED"
    assert trials["c"].state.name == "FAIL"
    assert study.direction.name == "MAXIMIZE" and study.user_attrs["metric"] == "hierarchical_recall"
    restored = pickle.loads(pickle.dumps(searcher))  # Ray saves the searcher with the experiment
    assert restored._ot_study._storage is not None


def test_cli_refuses_a_study_name_the_storage_holds_and_a_bad_url(tmp_path, capsys):
    import optuna

    url = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(study_name="taken", storage=url)
    cases = [
        (["--name", "taken", "--optuna-storage", url], "already holds a study 'taken'"),
        (["--name", "x", "--optuna-storage", "nosuchdb://h/x"], "--optuna-storage nosuchdb://h/x: "),
        (["--name", "x", "--resume", "--optuna-storage", url], "nothing to resume"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            search.main(["--space", "cutmix", "--storage", str(tmp_path), *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and err.count("\n") == 1, err


def test_spec_keeps_the_optuna_storage_for_resume(tmp_path):
    space = parse_space(SPACE, source="opt.yaml")
    storage.save_spec(str(tmp_path), space, name="e", max_failures=1, optuna_storage="sqlite:///x.db")
    assert storage.load_optuna_storage(str(tmp_path)) == "sqlite:///x.db"
    assert storage.load_spec(str(tmp_path)) == (space, 1)


class FakeTrial:
    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config = trial_id, config


def test_hparams_log_reads_back_with_tensorboards_event_reader(tmp_path):
    space = parse_space(SPACE, source="opt.yaml")
    log_dir = str(tmp_path / "hparams")
    log = HParamsLog(space, log_dir)
    log.setup(stop=None, num_samples=2, total_num_samples=2)
    ok, bad = FakeTrial("t1", {"max_lr": 2e-3, "optimizer": "ranger"}), FakeTrial("t2", {"max_lr": 1e-4})
    for trial in (ok, bad):
        log.on_trial_start(0, [], trial)
    log.on_trial_result(0, [], ok, {"step": 10, "hierarchical_recall": 0.25, "valid_loss": 3.5})
    log = pickle.loads(pickle.dumps(log))  # a resumed search: the callback comes back from a pickle
    log.setup(stop=None, num_samples=2, total_num_samples=2)  # ...and must not write a second config
    log.on_trial_start(0, [], ok)
    log.on_trial_result(0, [], ok, {"step": 20, "hierarchical_recall": 0.5, "valid_loss": 1.25})
    log.on_trial_complete(0, [], ok)
    log.on_trial_error(0, [], bad)
    log.on_experiment_end([])

    exp = read_hparams(log_dir, "")["experiment"].experiment
    assert [h.name for h in exp.hparam_infos] == ["max_lr", "optimizer"]
    assert (exp.hparam_infos[0].domain_interval.min_value, exp.hparam_infos[0].domain_interval.max_value) == (
        1e-4,
        1e-2,
    )
    assert [v.string_value for v in exp.hparam_infos[1].domain_discrete.values] == ["adamw", "ranger"]
    assert [m.name.tag for m in exp.metric_infos] == ["hierarchical_recall", "valid_loss"]
    assert len(__import__("glob").glob(f"{log_dir}/events.out.tfevents.*")) == 1

    t1 = read_hparams(log_dir, "trial_t1")
    start = t1["session_start_info"].session_start_info
    assert start.group_name == "t1"
    assert (
        start.hparams["max_lr"].number_value == 2e-3 and start.hparams["optimizer"].string_value == "ranger"
    )
    assert t1["scalars"] == {"hierarchical_recall": {10: 0.25, 20: 0.5}, "valid_loss": {10: 3.5, 20: 1.25}}
    assert t1["session_end_info"].session_end_info.status == 1  # STATUS_SUCCESS
    t2 = read_hparams(log_dir, "trial_t2")
    assert t2["session_end_info"].session_end_info.status == 2 and t2["scalars"] == {}  # STATUS_FAILURE
