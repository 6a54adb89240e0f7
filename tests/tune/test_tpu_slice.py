"""Trials on multi-host TPU slices: one trial per slice, scheduled on the slice's worker 0 through its
`TPU-<gen>-<chips>-head` resource (fake on the loopback cluster: the worker node is worker 0 of a v4-16)."""

from __future__ import annotations

import pytest

from tests.tune.conftest import fake_node
from tpu_grapheme.errors import UserError
from tune import cluster, tuner
from tune.overrides import with_overrides
from tune.space_yaml import load_space

SLICE_HOSTS = [fake_node("w0", CPU=96, TPU=4, **{"TPU-v4-16-head": 1}), fake_node("w1", CPU=96, TPU=4)]


def test_slice_bundle_asks_for_the_head_resource_and_needs_exactly_one_slice_type():
    space = with_overrides(load_space("cutmix"), resources={"cpu": 8, "tpu": "slice"})
    assert cluster.trial_bundle(space, SLICE_HOSTS) == {"CPU": 8.0, "TPU": 4.0, "TPU-v4-16-head": 1.0}
    with pytest.raises(UserError, match="found none"):
        cluster.trial_bundle(space, [fake_node("w1", CPU=96, TPU=4)])
    other = fake_node("x0", CPU=96, TPU=4, **{"TPU-v5litepod-16-head": 1})
    with pytest.raises(UserError, match="slices of one type"):
        cluster.trial_bundle(space, [*SLICE_HOSTS, other])
    two = with_overrides(space, sets={"workers": 2})
    with pytest.raises(UserError, match="takes workers=1"):
        cluster.trial_bundle(two, SLICE_HOSTS)
    assert "TPU-v4-16-head=1" in cluster.describe_nodes(SLICE_HOSTS[:1])


def test_slice_trial_asks_for_the_slice_head(ray_driver):  # with_parameters puts objects in Ray
    trainable = tuner.make_trainable({}, {"CPU": 1.0, "TPU": 4.0, "TPU-v4-16-head": 1.0})
    assert trainable._resources.bundles == [{"CPU": 1.0, "TPU": 4.0, "TPU-v4-16-head": 1.0}]


def test_two_slice_trials_never_share_the_slice(ray_driver):
    """Two trials' bundles on the loopback cluster: the first lands on the slice's worker 0, the second
    waits until the first releases the slice."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    nodes = cluster.alive_nodes()
    space = with_overrides(load_space("cutmix"), resources={"cpu": 0, "tpu": "slice"})
    bundle = cluster.trial_bundle(space, nodes)
    assert bundle == {"TPU": 4.0, "TPU-v4-16-head": 1.0}
    head_node = next(n["NodeID"] for n in nodes if n["Resources"].get("TPU-v4-16-head"))

    @ray.remote(num_cpus=0)
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    first, second = placement_group([bundle]), placement_group([bundle])
    try:
        ray.get(first.ready(), timeout=60)
        ready, _ = ray.wait([second.ready()], timeout=3)
        assert not ready  # one slice, one trial at a time
        strategy = ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy(first)
        assert ray.get(where.options(scheduling_strategy=strategy).remote()) == head_node
        remove_placement_group(first)
        ray.get(second.ready(), timeout=60)  # the slice is free again: the next trial gets it
    finally:
        remove_placement_group(second)


def test_multiworker_trial_asks_nothing_itself_and_gives_each_worker_the_bundle(ray_driver):
    """A `workers=2` trial is a Ray Train run: the trial (its driver) takes no CPU, each worker one bundle."""
    trainable = tuner.make_trainable({"workers": 2}, {"CPU": 1.0, "GPU": 1.0}, shared_dir="/shared/exp")
    assert trainable._resources.bundles == [{"memory": tuner.TRIAL_DRIVER_MEMORY}]
    single = tuner.make_trainable({}, {"CPU": 2.0})
    assert single._resources.bundles == [{"CPU": 2.0}]
