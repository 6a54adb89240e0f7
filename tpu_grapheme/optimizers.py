"""RAdam, Lookahead (Ranger = Lookahead(RAdam)) as Keras 3 optimizers, the seed's weight decay, and
`build_optimizer`.

tensorflow-addons (the seed's AdamW/RAdam/Lookahead) is end-of-life and does not import under Keras 3,
so they are re-implemented here on `keras.optimizers.Optimizer` (`build` / `update_step`), which keeps
them working in tf.function, under XLA and under tf.distribute strategies.

Two decoupled weight-decay rules, both applied to the pre-update value, before the gradient update:
- "tfa" (the seed's library's, per optimizer): tfa `AdamW`/`SGDW` (`DecoupledWeightDecayExtension`)
  `var -= weight_decay * var` every step, no learning-rate factor; tfa `RectifiedAdam` adds
  `weight_decay * var` to its step before the `lr` factor, so `var -= lr * weight_decay * var`.
  Every trained variable in both.
- "keras" (Keras `AdamW`): `var -= lr * weight_decay * var` (lr = scheduled rate), biases and
  normalisation parameters excluded.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
from keras import ops

from tpu_grapheme import option_checks

ADAM_EPSILON = 1e-6  # the seed's AdamW epsilon; used for every Adam-family optimizer here
NO_DECAY_NAMES = ("bias", "gamma", "beta")  # biases and normalisation scale/offset: never decayed
SGD_MOMENTUM = 0.9


class TfaWeightDecay:
    """Mixin (put it first) giving a Keras optimizer the tfa decay rule: `var -= weight_decay * var`.

    Keras calls `_apply_weight_decay` once per optimizer step, before `update_step`, so the decay uses
    the pre-update value as tfa's did; tfa multiplied by nothing else (not the learning rate). Every
    variable is decayed unless excluded with `exclude_from_weight_decay` (tfa: `decay_var_list`).
    A step skipped by a LossScaleOptimizer, or a Keras accumulation micro-step, decays nothing.
    """

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return

        def decay(var):
            var.assign_sub(var * tf.cast(self.weight_decay, var.dtype))

        def merge_fn(distribution, tf_vars):
            for var in tf_vars:
                distribution.extended.update(var, decay, group=False)

        chosen = [_tf_variable(v) for v in variables if self._use_weight_decay(v)]
        tf.__internal__.distribute.interim.maybe_merge_call(merge_fn, self._distribution_strategy, chosen)


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam (Liu et al. 2019, Algorithm 2) with decoupled weight decay.

    rho_inf = 2 / (1 - beta_2) - 1, rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t). While
    rho_t < sma_threshold the step is the bias-corrected momentum alone (lr * m_hat); afterwards it is
    lr * r_t * m_hat / (sqrt(v_hat) + epsilon) with
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)).
    The paper's criterion is rho_t > 4; the default threshold 5 is what the authors' code and
    tensorflow-addons (hence the seed) used: r_t is ill-conditioned just above 4. Pass 4 for the paper.
    """

    def __init__(
        self,
        learning_rate=1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = ADAM_EPSILON,
        sma_threshold: float = 5.0,
        weight_decay: float | None = None,
        name: str = "radam",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs)
        if not (0 <= beta_1 < 1 and 0 < beta_2 < 1):
            raise ValueError(f"need 0 <= beta_1 < 1 and 0 < beta_2 < 1, got {beta_1}, {beta_2}")
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.sma_threshold = float(sma_threshold)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        # 1 - beta^t via expm1: accurate for the small t where rectification is decided.
        one_minus_b1t = -ops.expm1(t * math.log(self.beta_1)) if self.beta_1 > 0 else ops.ones((), dtype)
        one_minus_b2t = -ops.expm1(t * math.log(self.beta_2))
        b2t = 1.0 - one_minus_b2t
        rho_inf = 2.0 / (1.0 - self.beta_2) - 1.0
        rho_t = rho_inf - 2.0 * t * b2t / one_minus_b2t

        idx = self._get_variable_index(variable)
        m, v = self._momentums[idx], self._velocities[idx]
        m_new = m + (g - m) * (1.0 - self.beta_1)
        v_new = v + (ops.square(g) - v) * (1.0 - self.beta_2)
        self.assign(m, m_new)
        self.assign(v, v_new)

        m_hat = m_new / one_minus_b1t
        ratio = (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
        r_t = ops.sqrt(ops.maximum(ratio, 0.0))
        adaptive = r_t * m_hat / (ops.sqrt(v_new / one_minus_b2t) + self.epsilon)
        step = ops.where(rho_t >= self.sma_threshold, adaptive, m_hat)
        self.assign_sub(variable, lr * step)

    def get_config(self):
        config = super().get_config()
        config.update(
            beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, sma_threshold=self.sma_threshold
        )
        return config


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class Lookahead(keras.optimizers.Optimizer):
    """Lookahead (Zhang et al. 2019) around any inner optimizer: k fast steps forward, 1 step back.

    Slow weights phi start as the weights at the first step; after every `sync_period`-th inner step
    phi += slow_step_size * (theta - phi); theta = phi. The inner optimizer keeps its own iteration
    counter (bias correction, schedule), exposed as `iterations`. A sync right after a sync and a
    repeated init are no-ops, so a step skipped by a LossScaleOptimizer (outside or inside) is harmless.
    Build it (or call `build(vars)`) inside the strategy scope, like any Keras optimizer.
    """

    def __init__(
        self,
        optimizer: keras.optimizers.Optimizer,
        sync_period: int = 6,
        slow_step_size: float = 0.5,
        name: str = "lookahead",
        **kwargs,
    ):
        for k in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor"):
            if kwargs.get(k) is not None:
                raise ValueError(f"Lookahead does not take {k}: set it on the inner optimizer")
            kwargs.pop(k, None)
        if kwargs.pop("gradient_accumulation_steps", None) or getattr(
            optimizer, "gradient_accumulation_steps", None
        ):
            raise ValueError("Lookahead does not support Keras gradient accumulation (the loop accumulates)")
        if kwargs.pop("use_ema", False):
            raise ValueError("Lookahead does not support use_ema")
        kwargs.pop("ema_momentum", None)
        kwargs.pop("ema_overwrite_frequency", None)
        if kwargs:
            raise ValueError(f"Lookahead does not support arguments {sorted(kwargs)}")
        super().__init__(learning_rate=0.0, name=name)
        if int(sync_period) < 1 or not 0 < float(slow_step_size) <= 1:
            raise ValueError(
                f"need sync_period >= 1 and 0 < slow_step_size <= 1, got {sync_period}, {slow_step_size}"
            )
        self.inner_optimizer = optimizer
        self.sync_period = int(sync_period)
        self.slow_step_size = float(slow_step_size)

    def build(self, var_list):
        if self.built:
            return
        self._slow_weights = self.add_optimizer_variables(var_list, "slow")
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        self.inner_optimizer.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def apply_gradients(self, grads_and_vars):
        grads, variables = zip(*grads_and_vars, strict=True)
        self.apply(grads, variables)
        return self.iterations

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        self._pull_towards(variables, ops.equal(self.iterations, 0), step_size=1.0, write_back=False)
        self.inner_optimizer.apply(grads, trainable_variables)
        sync = ops.equal(self.iterations % self.sync_period, 0)
        self._pull_towards(variables, sync, step_size=self.slow_step_size, write_back=True)

    def _pull_towards(self, variables, pred, *, step_size: float, write_back: bool) -> None:
        """Where pred: phi += step_size * (theta - phi), and theta = phi if write_back; per device."""
        slows = [self._slow_weights[self._get_variable_index(v)] for v in variables]

        def update(var, slow, pred):
            def go():
                new = slow + step_size * (var - slow) if step_size != 1.0 else tf.identity(var)
                slow.assign(new)
                if write_back:
                    var.assign(new)

            tf.cond(pred, go, lambda: None)

        def merge_fn(distribution, tf_vars, tf_slows, pred):
            for var, slow in zip(tf_vars, tf_slows, strict=True):
                distribution.extended.update(var, update, args=(slow, pred), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            merge_fn,
            self._distribution_strategy,
            [_tf_variable(v) for v in variables],
            [_tf_variable(s) for s in slows],
            pred,
        )

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "sync_period": self.sync_period,
            "slow_step_size": self.slow_step_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class TfaAdamW(TfaWeightDecay, keras.optimizers.Adam):
    """Keras Adam with the tfa decay rule: the seed's `tfa.optimizers.AdamW`."""


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class TfaSGDW(TfaWeightDecay, keras.optimizers.SGD):
    """Keras SGD (momentum) with the tfa decay rule: `tfa.optimizers.SGDW`."""


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class TfaRAdam(RAdam):
    """tfa `RectifiedAdam`'s decay: `var -= lr * weight_decay * var` on every variable (Keras' own
    `_apply_weight_decay`, with nothing excluded). The seed's `--radam` passed no decay at all."""


def _tf_variable(v):
    """The backing tf.Variable (a MirroredVariable under a strategy) of a Keras variable."""
    return v.value if isinstance(v, keras.Variable) else v


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerOptions:
    """What `build_optimizer` needs: `TrainConfig`'s fields and resolved properties of these names
    (`config.options_for` fills them; no defaults here): the optimizer with `--radam` resolved, the
    weight decay with -1 resolved (>= 0; 0 disables decay), Lookahead's period with ranger's resolved."""

    optimizer_name: str
    effective_weight_decay: float
    weight_decay_rule: str
    effective_lookahead_sync: int  # 0: no Lookahead
    lookahead_alpha: float
    gradient_accumulation_steps: int | None = None  # Keras-side accumulation (benchmarks only)

    def __post_init__(self) -> None:
        option_checks.check_fields(self)
        option_checks.check_decay_rule(self.weight_decay_rule, self.effective_weight_decay)


def build_optimizer(options: OptimizerOptions, schedule) -> keras.optimizers.Optimizer:
    """adamw (eps 1e-6), adam (never decays), sgd (momentum 0.9, Nesterov), radam, ranger (RAdam), each
    wrapped in Lookahead when `effective_lookahead_sync` > 0 (as the seed's `--lookahead-sync N`).

    Weight decay per `options.weight_decay_rule` (see the module docstring); 0 builds no decay at all.
    Call inside the strategy scope.
    """
    o, name = options, options.optimizer_name
    wd = o.effective_weight_decay if o.effective_weight_decay > 0 and name != "adam" else None
    tfa = o.weight_decay_rule == "tfa"
    common = {"learning_rate": schedule, "gradient_accumulation_steps": o.gradient_accumulation_steps}
    if name == "adam":
        opt = keras.optimizers.Adam(epsilon=ADAM_EPSILON, **common)
    elif name == "adamw" and tfa:
        opt = TfaAdamW(epsilon=ADAM_EPSILON, weight_decay=wd, **common)
    elif name == "adamw":  # Keras AdamW insists on a float decay
        opt = keras.optimizers.AdamW(epsilon=ADAM_EPSILON, weight_decay=wd or 0.0, **common)
    elif name == "sgd":
        opt = (TfaSGDW if tfa else keras.optimizers.SGD)(
            momentum=SGD_MOMENTUM, nesterov=True, weight_decay=wd, **common
        )
    else:  # radam, ranger
        opt = (TfaRAdam if tfa else RAdam)(epsilon=ADAM_EPSILON, weight_decay=wd, **common)
    if not tfa and (wd is not None or name == "adamw"):
        opt.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    if o.effective_lookahead_sync > 0:
        opt = Lookahead(opt, sync_period=o.effective_lookahead_sync, slow_step_size=o.lookahead_alpha)
    return opt
