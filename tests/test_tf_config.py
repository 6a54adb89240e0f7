"""The `--workers N` backend: each worker's TF_CONFIG is what Ray's own TensorFlow backend sets (minus its
legacy-Keras switch), and building the trainer loads no TensorFlow in the driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli_errors import repo_env


@pytest.mark.parametrize("index", [0, 1, 2])
def test_tf_config_is_rays_without_the_legacy_keras_switch(monkeypatch, index):
    from ray.train.tensorflow.config import _setup_tensorflow_environment

    from tpu_grapheme.tf_config import _set_tf_config

    addresses = ["10.0.0.1:4001", "10.0.0.2:4002", "[fe80::1]:4003"]
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    _setup_tensorflow_environment(worker_addresses=addresses, index=index)  # Ray's backend: the reference
    rays = json.loads(os.environ.pop("TF_CONFIG"))
    assert os.environ.pop("TF_USE_LEGACY_KERAS") == "1"
    _set_tf_config(worker_addresses=addresses, index=index)
    assert json.loads(os.environ["TF_CONFIG"]) == rays
    assert "TF_USE_LEGACY_KERAS" not in os.environ  # Keras 3 stays Keras 3


def test_the_drivers_steps_load_no_tensorflow(tmp_path):
    """What `train --workers 2` does in its own process for a new local run: the resume check, the
    trainer, the history read at the end."""
    code = f"""
import sys
from tpu_grapheme.config import from_dict
from tpu_grapheme.multiworker import build_trainer
from tpu_grapheme.resume_check import check_resume, multiworker_replicas
from tpu_grapheme.run_dir import RunDir
from tpu_grapheme.tf_config import TFConfig
cfg = from_dict({{"workers": 2, "output_dir": {str(tmp_path)!r}}})
assert check_resume(cfg, RunDir(cfg.run_dir), replicas=multiworker_replicas(cfg), log=print) is None
trainer = build_trainer(cfg)
assert RunDir(cfg.run_dir).read_history() == []
print(type(trainer).__name__, isinstance(trainer.backend_config, TFConfig), "tensorflow" in sys.modules)
"""
    env = repo_env()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["DataParallelTrainer", "True", "False"], out.stdout
