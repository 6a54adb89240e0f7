"""The search's Optuna study in an RDB storage that Optuna Dashboard reads (`optuna-dashboard <url>`).

Ray's `OptunaSearch` takes a `storage` and a `study_name`: the sampler's own study is the one written,
so the dashboard shows exactly what the sampler saw. `StudySearch` adds what the stock searcher leaves
out: intermediate values on the training `step` axis (not Ray's iteration count), the report that
ended a trial (Ray hands it to `on_trial_complete` only), ASHA's early stops as PRUNED, and each
trial's Ray id as a user attribute.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from tpu_grapheme.errors import UserError

DB_FILE = "optuna.db"
RAY_TRIAL_ID = "ray_trial_id"  # user attribute of every Optuna trial: the Ray trial it mirrors


def default_url(local_dir: str) -> str:
    """`sqlite:///<local_dir>/optuna.db` (absolute path: the URL is kept with the experiment)."""
    return f"sqlite:///{os.path.join(os.path.abspath(local_dir), DB_FILE)}"


def open_storage(url: str, *, create_dir: bool = True) -> Any:
    """An `optuna.storages.RDBStorage` for `url`; a bad URL or missing driver is one `UserError` line."""
    import optuna

    if create_dir and url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(url.removeprefix("sqlite:///"))), exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as e:  # sqlalchemy ArgumentError, ImportError of a driver, OperationalError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--optuna-storage {url}: {first}") from None


def check_new_study(url: str, name: str) -> None:
    """Refuse a study name the storage already holds: a new search must not append to an old study."""
    import optuna

    if name in optuna.study.get_all_study_names(open_storage(url)):
        raise UserError(
            f"--optuna-storage {url} already holds a study {name!r}: pick another --name, or --resume"
        )


class StudySearch(OptunaSearch):
    """`OptunaSearch` whose study lives in `storage` and records each report at the trial's `step`.

    `target_steps`: a trial that ends cleanly before it is stopped early (ASHA) and is told PRUNED.
    """

    def __init__(self, *, target_steps: int, user_attrs: Mapping[str, Any] | None = None, **kw: Any):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
        super().__init__(**kw)
        self._target_steps = target_steps
        self._reported: dict[str, set[int]] = {}
        for key, value in (user_attrs or {}).items():
            self._ot_study.set_user_attr(key, value)

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if trial_id in self._ot_trials and trial_id not in self._reported:
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ID, trial_id)
            self._reported[trial_id] = set()
        return params

    def _report(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """The metric at `result["step"]`, once per step (a retried trial may repeat a step)."""
        value, step = result.get(self.metric), result.get("step")
        if value is None or step is None or trial_id not in self._ot_trials:
            return
        done = self._reported.setdefault(trial_id, set())
        if int(step) not in done:
            self._ot_trials[trial_id].report(float(value), int(step))
            done.add(int(step))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and not error:
            self._report(trial_id, result)  # the report that ended it never reached on_trial_result
            step = result.get("step")
            if step is not None and int(step) < self._target_steps:
                from optuna.trial import TrialState

                self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result=result, error=error)
