"""Hyperparameter search over `TrainConfig` with Ray Tune + Optuna + ASHA (`python -m tune.search`).

`space` holds a search space and `space_yaml` reads and validates one from YAML; `overrides` applies the
CLI's `--set`/`--steps`/...; `storage` keeps the experiment's spec; `cluster` joins Ray and checks it can
run a trial; `tuner` assembles the Ray Tune `Tuner`; `trainable` runs one trial through the training loop;
`results` turns a finished experiment into a table, a best config and a plot; `search` is the CLI.
`space`, `space_yaml`, `overrides` and `results` do not import Ray.
"""
