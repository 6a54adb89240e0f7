"""Cluster checks before any trial: a node that can hold a trial, storage every node sees, node lines."""

from __future__ import annotations

import os

import pytest

from tests.tune.conftest import fake_node
from tpu_grapheme.errors import UserError
from tune import cluster
from tune.overrides import with_overrides
from tune.space_yaml import load_space


def test_trial_bundle_asks_one_hosts_tpu_chips_and_fails_early_when_nothing_fits():
    nodes = [fake_node("head", CPU=8), fake_node("tpu-vm", CPU=96, TPU=4)]
    space = with_overrides(load_space("cutmix"), resources={"cpu": 8, "tpu": "host"})
    assert cluster.trial_bundle(space, nodes) == {"CPU": 8.0, "TPU": 4.0}
    with pytest.raises(UserError, match="no node in the Ray cluster advertises TPU"):
        cluster.trial_bundle(space, [fake_node("head", CPU=8)])
    with pytest.raises(
        UserError, match="no Ray node can hold one trial's resources .* offer: CPU=8; CPU=96, TPU=4"
    ):
        cluster.trial_bundle(with_overrides(load_space("cutmix"), resources={"gpu": 1}), nodes)


def test_describe_nodes_shows_what_trials_can_ask_for():
    text = cluster.describe_nodes([fake_node("tpu-vm", CPU=96, TPU=4, memory=1e9)])
    assert text == "[tune] node tpu-vm 10.0.0.6: CPU=96, TPU=4"


def test_multi_node_search_needs_storage_every_node_sees(tmp_path):
    nodes = [fake_node("head", CPU=8), fake_node("worker", CPU=8)]
    cluster.check_shared_storage("gs://bucket/tune", nodes)  # URIs are shared by definition
    cluster.check_shared_storage(str(tmp_path), nodes[:1])  # one node: any local path
    cluster.check_shared_storage(
        str(tmp_path), nodes, sees=lambda marker, ns: [os.path.exists(marker)] * len(ns)
    )
    with pytest.raises(UserError, match=r"cannot see: a multi-node search needs shared storage \(gs://"):
        cluster.check_shared_storage(str(tmp_path), nodes, sees=lambda marker, ns: [True, False])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".shared_probe")]  # marker cleaned up


def test_multi_worker_trials_must_leave_a_cpu_free_for_the_next_trial():
    """Measured with Ray 2.60: when running trials' workers reserve every CPU, the next trial's worker
    group never starts. The search refuses that before any trial, and accepts it with one CPU free."""
    nodes = [fake_node("head", CPU=1), fake_node("worker", CPU=1)]
    two_workers = {"workers": 2}
    full = with_overrides(
        load_space("cutmix"), sets=two_workers, trials=2, max_concurrent=1, resources={"cpu": 1}
    )
    with pytest.raises(UserError, match=r"^1 trial\(s\) at once of workers=2 x 1 CPU reserve all 2 CPUs"):
        cluster.trial_bundle(full, nodes)
    assert cluster.trial_bundle(with_overrides(full, resources={"cpu": 0.5}), nodes) == {"CPU": 0.5}
    assert cluster.trial_bundle(with_overrides(full, trials=1), nodes) == {"CPU": 1.0}  # no next trial
    big = [fake_node(f"n{i}", CPU=8) for i in range(4)]
    wide = with_overrides(full, resources={"cpu": 8}, max_concurrent=2)
    with pytest.raises(UserError, match=r"^2 trial\(s\) at once .* reserve all 32 CPUs"):
        cluster.trial_bundle(wide, big)
    assert cluster.trial_bundle(with_overrides(wide, max_concurrent=1), big) == {"CPU": 8.0}
