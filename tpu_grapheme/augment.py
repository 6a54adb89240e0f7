"""MixUp and CutMix as in-step kernels: stateless, static shapes, XLA-compilable.

Everything here runs inside the train step (per replica) from a stateless seed the loop derives from
(seed, step, replica), so a run is reproducible and `tf.function(jit_compile=True)` compiles it.
`tf.random.stateless_gamma` has no XLA kernel, so `sample_gamma` is a fixed-proposal
Marsaglia-Tsang sampler built from one stateless uniform draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tpu_grapheme.data.schema import BENGALI

_PROPOSALS = 8  # Marsaglia-Tsang accepts >= 95% per proposal: P(all 8 rejected) < 1e-10
GAMMA_UNIFORMS = 2 * _PROPOSALS + 1  # uniforms per Gamma sample: normals, accept tests, boost


def sample_gamma(shape: Sequence[int] | tf.Tensor, alpha: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """float32 Gamma(alpha, 1) samples (alpha = concentration, > 0) by Marsaglia-Tsang, XLA-friendly.

    One stateless uniform draw feeds everything (each RNG op costs seconds of XLA compile on CPU):
    normals by inverse CDF, a fixed number of proposals instead of the rejection loop (the first
    accepted one is kept), and the boost Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha) for alpha < 1.
    alpha may be a scalar tensor.
    """
    if isinstance(alpha, int | float) and alpha <= 0:
        raise ValueError(f"gamma concentration must be > 0, got {alpha}")
    shape = tf.reshape(tf.cast(shape, tf.int32), [-1])
    u = tf.random.stateless_uniform(tf.concat([shape, [GAMMA_UNIFORMS]], axis=0), seed=seed)
    return gamma_from_uniforms(u, alpha)


def gamma_from_uniforms(u: tf.Tensor, alpha: float | tf.Tensor) -> tf.Tensor:
    """Gamma(alpha) samples [...] from uniforms [..., GAMMA_UNIFORMS] (the core of `sample_gamma`)."""
    alpha = tf.cast(alpha, tf.float32)
    u = tf.clip_by_value(u, 1e-7, 1.0 - 1e-7)
    x = tf.math.ndtri(u[..., :_PROPOSALS])
    accept_u, boost_u = u[..., _PROPOSALS : 2 * _PROPOSALS], u[..., 2 * _PROPOSALS]
    small = alpha < 1
    a = tf.where(small, alpha + 1.0, alpha)
    d = a - 1.0 / 3.0
    c = tf.math.rsqrt(9.0 * d)
    v = (1.0 + c * x) ** 3
    v_safe = tf.maximum(v, 1e-30)
    accept = (v > 0) & (tf.math.log(accept_u) < 0.5 * x * x + d - d * v_safe + d * tf.math.log(v_safe))
    first = tf.one_hot(tf.argmax(tf.cast(accept, tf.int32), axis=-1), _PROPOSALS, dtype=tf.float32)
    g = tf.where(tf.reduce_any(accept, axis=-1), tf.reduce_sum(first * d * v_safe, axis=-1), d)
    boosted = tf.exp(tf.math.log(g) + tf.math.log(boost_u) / alpha)
    return tf.where(small, boosted, g)


def sample_beta(shape: Sequence[int] | tf.Tensor, alpha: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """float32 Beta(alpha, alpha) samples as X / (X + Y), X and Y two independent Gamma(alpha) draws."""
    shape = tf.reshape(tf.cast(shape, tf.int32), [-1])
    u = tf.random.stateless_uniform(tf.concat([[2], shape, [GAMMA_UNIFORMS]], axis=0), seed=seed)
    return beta_from_uniforms(u, alpha)


def beta_from_uniforms(u: tf.Tensor, alpha: float | tf.Tensor) -> tf.Tensor:
    """Beta(alpha, alpha) samples [...] from uniforms [2, ..., GAMMA_UNIFORMS]."""
    xy = gamma_from_uniforms(u, alpha)
    x, total = xy[0], xy[0] + xy[1]
    # Both draws can underflow to 0 for tiny alpha; the symmetric answer is then 0.5.
    return tf.where(total > 0, x / tf.where(total > 0, total, 1.0), 0.5)


def fold(lam: tf.Tensor) -> tf.Tensor:
    """max(lam, 1 - lam): the seed's rule, so every sample keeps at least half of itself.

    Beta(alpha, alpha) is symmetric, so folding keeps the spread of mixing strengths and only drops
    the samples that would mostly show (and be labelled as) their partner.
    """
    return tf.maximum(lam, 1.0 - lam)


def batch_permutation(batch_size: int | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A stateless random permutation of range(batch_size): each sample's mixing partner."""
    return tf.argsort(tf.random.stateless_uniform([batch_size], seed=seed), stable=True)


def one_hot_targets(
    labels: tf.Tensor, *, num_classes: Sequence[int] = BENGALI.num_classes, label_smoothing: float = 0.0
) -> tuple[tf.Tensor, ...]:
    """float32 [B, C_h] targets per head from int labels [B, heads]; smoothing spreads eps / C_h."""
    out = []
    for h, n in enumerate(num_classes):
        y = tf.one_hot(tf.cast(labels[:, h], tf.int32), n, dtype=tf.float32)
        if label_smoothing > 0:
            y = y * (1.0 - label_smoothing) + label_smoothing / n
        out.append(y)
    return tuple(out)


def mix_targets(targets: Sequence[tf.Tensor], perm: tf.Tensor, lam: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """lam * y + (1 - lam) * y[perm] for every head, one per-sample lam [B] for all heads."""
    lam = tf.cast(lam, tf.float32)[:, None]
    return tuple(lam * y + (1.0 - lam) * tf.gather(y, perm) for y in targets)


def mixup(images: tf.Tensor, perm: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """lam * x + (1 - lam) * x[perm] per sample, in the images' dtype."""
    w = tf.cast(lam, images.dtype)[:, None, None, None]
    return w * images + (1 - w) * tf.gather(images, perm)


def box_bounds(
    height: int | tf.Tensor, width: int | tf.Tensor, lam: tf.Tensor, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-sample int32 box (y1, y2, x1, x2), clipped to the image: uniform centre, sides H, W x sqrt(1-lam)."""
    return _box_bounds(height, width, lam, tf.random.stateless_uniform([2, tf.shape(lam)[0]], seed=seed))


def _box_bounds(height, width, lam, centres):
    """`box_bounds` from uniforms [2, B] placing the box centres.

    Sides are floor(H x cut), floor(W x cut) (the CutMix paper's code; the seed rounded): the box then
    never covers more than 1 - lam of the image, so a folded lam >= 0.5 keeps >= half of the pixels.
    Rounding could cover up to ~0.3 % more at 192x330 (kept share 0.4999 seen at lam ~0.5).
    """
    cut = tf.sqrt(1.0 - tf.cast(lam, tf.float32))
    bounds = []
    for size, u in ((height, centres[0]), (width, centres[1])):
        size_f = tf.cast(size, tf.float32)
        centre = tf.minimum(tf.cast(tf.floor(u * size_f), tf.int32), tf.cast(size, tf.int32) - 1)
        side = tf.cast(tf.floor(cut * size_f), tf.int32)
        lo = centre - side // 2
        bounds += [tf.clip_by_value(lo, 0, size), tf.clip_by_value(lo + side, 0, size)]
    return bounds[0], bounds[1], bounds[2], bounds[3]


def box_mask(
    height: int | tf.Tensor,
    width: int | tf.Tensor,
    y1: tf.Tensor,
    y2: tf.Tensor,
    x1: tf.Tensor,
    x2: tf.Tensor,
) -> tf.Tensor:
    """bool [B, H, W]: True inside each sample's box [y1, y2) x [x1, x2), from tf.range comparisons."""
    ys = tf.range(height)[None, :, None]
    xs = tf.range(width)[None, None, :]
    inside_y = (ys >= y1[:, None, None]) & (ys < y2[:, None, None])
    inside_x = (xs >= x1[:, None, None]) & (xs < x2[:, None, None])
    return inside_y & inside_x


def cutmix(
    images: tf.Tensor, perm: tf.Tensor, lam: tf.Tensor, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Paste a box of x[perm] into x; returns (images, lam corrected to the share of pixels kept)."""
    return _cutmix(images, perm, lam, tf.random.stateless_uniform([2, tf.shape(lam)[0]], seed=seed))


def _cutmix(images, perm, lam, centres):
    """`cutmix` with the box centres from uniforms [2, B]."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    y1, y2, x1, x2 = _box_bounds(height, width, lam, centres)
    mask = box_mask(height, width, y1, y2, x1, x2)[..., None]
    mixed = tf.where(mask, tf.gather(images, perm), images)
    area = tf.cast((y2 - y1) * (x2 - x1), tf.float32)
    kept = 1.0 - area / tf.cast(height * width, tf.float32)
    return mixed, kept


def mix_batch(
    images: tf.Tensor,
    labels: tf.Tensor,
    seed: tf.Tensor,
    *,
    mixup_alpha: float,
    cutmix_alpha: float,
    mix_prob: float = 1.0,
    cutmix_share: float = 0.5,
    num_classes: Sequence[int] = BENGALI.num_classes,
    label_smoothing: float = 0.0,
    fold_lambda: bool = True,
) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
    """Per batch: MixUp, CutMix or nothing (by mix_prob, cutmix_share); returns (images, soft targets).

    images float [B, H, W, C] keep their dtype; labels int [B, heads]; seed a stateless seed [2].
    Alpha <= 0 switches a kernel off; with both off this is the identity with one-hot targets.
    fold_lambda (the seed's rule) folds the sampled lambda to max(lam, 1 - lam) for both kernels, so
    each sample's own label weighs >= 0.5 (CutMix: the kept pixel share, which clipping only raises);
    off, lambda is the plain Beta draw (the MixUp and CutMix papers).
    """
    targets = one_hot_targets(labels, num_classes=num_classes, label_smoothing=label_smoothing)
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mixup or use_cutmix) or mix_prob <= 0:
        return images, targets
    # One stateless draw feeds every random choice: each RNG op costs seconds of XLA compile on CPU.
    batch = tf.shape(images)[0]
    u = tf.random.stateless_uniform([batch, 2 * GAMMA_UNIFORMS + 5], seed=seed)
    u_beta = tf.transpose(tf.reshape(u[:, : 2 * GAMMA_UNIFORMS], [batch, 2, GAMMA_UNIFORMS]), [1, 0, 2])
    u_perm = u[:, 2 * GAMMA_UNIFORMS]
    u_box = tf.transpose(u[:, 2 * GAMMA_UNIFORMS + 1 : 2 * GAMMA_UNIFORMS + 3])
    u_mix, u_kind = u[0, 2 * GAMMA_UNIFORMS + 3], u[0, 2 * GAMMA_UNIFORMS + 4]

    share = cutmix_share if (use_mixup and use_cutmix) else float(use_cutmix)
    branch = tf.where(u_mix < mix_prob, tf.where(u_kind < share, 2, 1), 0)
    # One Beta sampler serves both kernels (only one runs per batch).
    alpha = tf.where(branch == 2, cutmix_alpha if use_cutmix else 1.0, mixup_alpha if use_mixup else 1.0)
    lam = beta_from_uniforms(u_beta, alpha)
    if fold_lambda:
        lam = fold(lam)
    perm = tf.argsort(u_perm, stable=True)

    def none():
        return images, targets

    def do_mixup():
        return mixup(images, perm, lam), mix_targets(targets, perm, lam)

    def do_cutmix():
        mixed, kept = _cutmix(images, perm, lam, u_box)
        return mixed, mix_targets(targets, perm, kept)

    return tf.switch_case(branch, [none, do_mixup, do_cutmix])
