"""Hyperparameter search over `TrainConfig` with Ray Tune + Optuna + ASHA (`python -m tune.search`).

`space` reads and validates a YAML search space, `trainable` runs one trial through the training loop,
`search` is the CLI that drives Ray Tune, `results` turns a finished experiment into a table, a best
config and a plot. `space` and `results` do not import Ray.
"""
