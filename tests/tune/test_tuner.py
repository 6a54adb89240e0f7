"""Tuner assembly: ASHA on the step axis, and its rung records surviving a `--resume`."""

from __future__ import annotations

from tune import tuner
from tune.space_yaml import load_space, parse_space


def test_scheduler_is_asha_on_step_or_none_for_fifo():
    space = load_space("cutmix")
    asha = tuner.build_scheduler(space)
    assert asha._time_attr == "step" and asha._max_t == space.max_t
    fifo = load_space("cutmix").to_yaml_dict()
    fifo["search"]["scheduler"] = {"name": "fifo"}
    assert tuner.build_scheduler(parse_space(fifo)) is None


def test_asha_rung_records_are_restored_into_the_restored_scheduler():
    import ray.cloudpickle

    space = load_space("cutmix")
    scheduler = tuner.build_scheduler(space)
    callback = tuner.AshaRungState(scheduler)
    # Tuner.restore unpickles the scheduler (TuneConfig) and the callback (RunConfig) from one pickle...
    scheduler2, callback2 = ray.cloudpickle.loads(ray.cloudpickle.dumps((scheduler, callback)))
    assert callback2.scheduler is scheduler2
    # ...then hands the callback the state it saved with the experiment: the rungs ASHA had recorded.
    scheduler._brackets[0]._rungs[-1][1]["t1"] = -14.3
    callback2.set_state(callback.get_state())
    assert scheduler2._brackets[0]._rungs[-1][1] == {"t1": -14.3}
