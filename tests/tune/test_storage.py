"""Experiment storage: paths for local dirs and URIs, and the spec that `--resume` reads back."""

from __future__ import annotations

import os

import pytest

from tpu_grapheme.errors import UserError
from tune import storage
from tune.overrides import with_overrides
from tune.space_yaml import load_space


def test_experiment_path_joins_local_dirs_and_uris():
    assert storage.experiment_path("gs://bucket/tune/", "cutmix") == "gs://bucket/tune/cutmix"
    assert storage.experiment_path("runs/tune", "cutmix") == os.path.join("runs", "tune", "cutmix")


def test_spec_round_trip_restores_the_space_and_max_failures(tmp_path):
    exp = str(tmp_path / "exp")
    space = with_overrides(load_space("cutmix"), steps=40, sets={"arch": "tiny"})
    assert not storage.spec_exists(exp)
    storage.save_spec(exp, space, name="exp", max_failures=3)
    assert storage.spec_exists(exp)
    assert storage.load_spec(exp) == (space, 3)


def test_resume_without_a_spec_says_what_to_check(tmp_path):
    with pytest.raises(UserError, match=r"nothing to resume: .* \(check --storage and --name\)"):
        storage.load_spec(str(tmp_path / "missing"))
