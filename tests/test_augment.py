import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tpu_grapheme.augment import (
    batch_permutation,
    box_bounds,
    box_mask,
    cutmix,
    mix_batch,
    mixup,
    one_hot_targets,
    sample_beta,
    sample_gamma,
)

B, H, W = 8, 12, 20
CLASSES = (168, 11, 7)


def _batch(dtype=tf.float32):
    # Sample i is the constant image i + 1, so every output pixel tells where it came from.
    images = tf.cast(
        tf.broadcast_to(tf.range(1, B + 1, dtype=tf.float32)[:, None, None, None], [B, H, W, 1]), dtype
    )
    labels = tf.stack([tf.range(B) * 7 % 168, tf.range(B) % 11, tf.range(B) % 7], axis=1)
    return images, labels


def _seed(i):
    return tf.constant([i, 17], tf.int64)


@pytest.mark.parametrize("alpha", [0.2, 0.7, 3.0])
def test_gamma_sampler_follows_gamma(alpha):
    g = sample_gamma([20000], alpha, _seed(1)).numpy()
    assert stats.kstest(g, stats.gamma(alpha).cdf).pvalue > 1e-3


@pytest.mark.parametrize("alpha", [0.4, 1.0, 2.0])
def test_beta_sampler_follows_beta(alpha):
    b = sample_beta([20000], alpha, _seed(2)).numpy()
    assert stats.kstest(b, stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    assert b.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)


def test_permutation_is_a_permutation_and_seeded():
    p = batch_permutation(64, _seed(3)).numpy()
    assert sorted(p) == list(range(64))
    np.testing.assert_array_equal(p, batch_permutation(64, _seed(3)).numpy())
    assert not np.array_equal(p, batch_permutation(64, _seed(4)).numpy())


def test_box_mask_matches_a_loop_and_bounds_are_clipped():
    lam = sample_beta([64], 1.0, _seed(5))
    y1, y2, x1, x2 = box_bounds(H, W, lam, _seed(6))
    assert (
        (y1.numpy() >= 0).all()
        and (y2.numpy() <= H).all()
        and (x1.numpy() >= 0).all()
        and (x2.numpy() <= W).all()
    )
    mask = box_mask(H, W, y1, y2, x1, x2).numpy()
    for i in range(64):
        ref = np.zeros((H, W), bool)
        ref[y1[i] : y2[i], x1[i] : x2[i]] = True
        np.testing.assert_array_equal(mask[i], ref)


def test_one_hot_targets_with_label_smoothing():
    _, labels = _batch()
    t = one_hot_targets(labels, num_classes=CLASSES, label_smoothing=0.1)
    assert [x.shape[1] for x in t] == list(CLASSES)
    np.testing.assert_allclose(t[1].numpy().sum(1), 1.0, rtol=1e-6)
    assert t[2].numpy()[3, 3] == pytest.approx(0.9 + 0.1 / 7)


def test_mixup_mixes_pixels_and_labels_with_one_lambda():
    images, _ = _batch()
    perm = batch_permutation(B, _seed(7))
    lam = sample_beta([B], 0.4, _seed(8))
    out = mixup(images, perm, lam).numpy()
    ref = lam.numpy() * np.arange(1, B + 1) + (1 - lam.numpy()) * (perm.numpy() + 1)
    np.testing.assert_allclose(out[:, 0, 0, 0], ref, rtol=1e-5)
    assert np.ptp(out, axis=(1, 2, 3)).max() < 1e-5


def test_cutmix_lambda_is_the_share_of_original_pixels():
    images, _ = _batch()
    perm = batch_permutation(B, _seed(9))
    lam = sample_beta([B], 1.0, _seed(10))
    out, kept = cutmix(images, perm, lam, _seed(11))
    own = (out.numpy()[..., 0] == np.arange(1, B + 1)[:, None, None]).mean(axis=(1, 2))
    fixed_points = perm.numpy() == np.arange(B)
    np.testing.assert_allclose(kept.numpy()[~fixed_points], own[~fixed_points], atol=1e-6)
    partner = (out.numpy()[..., 0] == (perm.numpy() + 1)[:, None, None]).mean(axis=(1, 2))
    assert ((own + partner)[~fixed_points] == 1).all()  # every pixel from the sample or its partner
    assert (kept.numpy()[fixed_points] <= 1).all()


def test_disabled_is_identity_with_one_hot_targets():
    images, labels = _batch()
    out, targets = mix_batch(images, labels, _seed(0), mixup_alpha=0.0, cutmix_alpha=-1.0)
    assert out is images
    for t, ref in zip(targets, one_hot_targets(labels), strict=True):
        np.testing.assert_array_equal(t.numpy(), ref.numpy())


def _kind(images, targets):
    """Which kernel ran, read off the constant-per-sample images."""
    x = images.numpy()[..., 0]
    if np.array_equal(x, _batch()[0].numpy()[..., 0]) and targets[0].numpy().max() == 1:
        return "none"
    distinct = [len(np.unique(x[i])) for i in range(B)]
    return "cutmix" if max(distinct) == 2 or np.allclose(x, np.round(x)) else "mixup"


def test_mix_batch_under_xla_is_reproducible_and_targets_are_consistent():
    images, labels = _batch()
    fn = tf.function(
        lambda s: mix_batch(images, labels, s, mixup_alpha=0.4, cutmix_alpha=1.0),
        jit_compile=True,
    )
    kinds = set()
    for i in range(8):
        out, targets = fn(_seed(i))
        out2, targets2 = fn(_seed(i))
        np.testing.assert_array_equal(out.numpy(), out2.numpy())
        np.testing.assert_array_equal(targets[0].numpy(), targets2[0].numpy())
        assert [t.shape for t in targets] == [(B, c) for c in CLASSES] and targets[0].dtype == tf.float32
        for t in targets:
            np.testing.assert_allclose(t.numpy().sum(1), 1.0, rtol=1e-5)
        # The label weights explain the pixels: mean pixel = w * own + (1 - w) * partner, for every head.
        roots = list(labels[:, 0].numpy())
        for i in range(B):
            t0 = targets[0].numpy()[i]
            w = t0[roots[i]]
            others = [k for k in np.flatnonzero(t0 > 1e-7) if k != roots[i]]
            j = roots.index(others[0]) if others else i
            np.testing.assert_allclose(out.numpy()[i].mean(), w * (i + 1) + (1 - w) * (j + 1), rtol=1e-5)
            assert targets[2].numpy()[i, labels[i, 2]] >= w - 1e-6  # same lambda on the other heads
        kinds.add(_kind(out, targets))
    assert kinds == {"mixup", "cutmix"}


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_dtype_is_kept(dtype):
    images, labels = _batch(dtype)
    for seed in range(4):
        out, targets = mix_batch(images, labels, _seed(seed), mixup_alpha=1.0, cutmix_alpha=1.0)
        assert out.dtype == dtype and targets[0].dtype == tf.float32


def test_per_batch_choice_follows_mix_prob_and_cutmix_share():
    images, labels = _batch()
    fn = tf.function(
        lambda s: mix_batch(
            images, labels, s, mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.5, cutmix_share=0.25
        )
    )
    counts = {"none": 0, "mixup": 0, "cutmix": 0}
    for i in range(200):
        counts[_kind(*fn(tf.constant([i, 99], tf.int64)))] += 1
    assert counts["none"] == pytest.approx(100, abs=25)  # ~3.5 sigma
    assert counts["cutmix"] == pytest.approx(25, abs=17)
    assert counts["mixup"] == pytest.approx(75, abs=23)


def test_only_cutmix_enabled_never_mixes_up():
    images, labels = _batch()
    for i in range(6):
        out, targets = mix_batch(images, labels, _seed(i), mixup_alpha=-1, cutmix_alpha=1.0)
        assert _kind(out, targets) in ("cutmix", "none")
        assert np.allclose(out.numpy(), np.round(out.numpy()))


# --- lambda folding (the seed: lam = max(lam, 1 - lam) for both kernels) --------------------------
SEED_H, SEED_W, DISTINCT_B = 192, 330, 16  # the seed's --resize; roots of the 16 samples all differ


def _own_label_weights(kernel: str, fold_lambda: bool, seeds: int = 60) -> np.ndarray:
    """Weight of each sample's own root label in its target, at 192x330 with alpha 1 (the definition:
    target_i[root_i], labels all distinct so the partner never adds to it), checked against the pixels."""
    ids = np.arange(1, DISTINCT_B + 1, dtype=np.float32)
    images = tf.constant(np.broadcast_to(ids[:, None, None, None], (DISTINCT_B, SEED_H, SEED_W, 1)).copy())
    roots = np.arange(DISTINCT_B) * 10  # distinct root classes
    labels = tf.constant(np.stack([roots, roots % 11, roots % 7], axis=1), tf.int32)
    alphas = (
        {"mixup_alpha": 1.0, "cutmix_alpha": -1.0}
        if kernel == "mixup"
        else {
            "mixup_alpha": -1.0,
            "cutmix_alpha": 1.0,
        }
    )
    fn = tf.function(
        lambda s: mix_batch(images, labels, s, fold_lambda=fold_lambda, **alphas), jit_compile=True
    )
    weights = []
    for i in range(seeds):
        out, targets = fn(tf.constant([i, 31], tf.int64))
        t = targets[0].numpy()
        own = t[np.arange(DISTINCT_B), roots]
        moved = own < 1 - 1e-6  # samples whose partner is another sample (not itself)
        assert np.allclose(t.sum(1), 1.0, atol=1e-5)
        if kernel == "cutmix":  # the weight is the share of the sample's own pixels
            kept = (out.numpy()[..., 0] == ids[:, None, None]).mean(axis=(1, 2))
            np.testing.assert_allclose(own[moved], kept[moved], atol=1e-6)
        weights.append(own[moved])
    return np.concatenate(weights)


@pytest.mark.parametrize("kernel", ["mixup", "cutmix"])
def test_folded_lambda_keeps_own_label_weight_at_least_half(kernel):
    own = _own_label_weights(kernel, fold_lambda=True)
    assert own.size > 500
    assert own.min() >= 0.5, (kernel, own.min())


@pytest.mark.parametrize("kernel", ["mixup", "cutmix"])
def test_unfolded_lambda_is_the_papers_rule(kernel):
    own = _own_label_weights(kernel, fold_lambda=False)
    # Beta(1, 1) is uniform: about half (MixUp) or ~18 % (CutMix, clipping raises the kept share) < 0.5.
    share = np.mean(own < 0.5)
    assert (0.35 < share < 0.65) if kernel == "mixup" else (0.1 < share < 0.3), share
    assert own.min() < 0.2


def test_cutmix_box_never_covers_more_than_one_minus_lambda():
    """Unclipped and clipped alike: box area <= (1 - lam) H W, in exact arithmetic, right above 0.5 too."""
    lam = tf.constant(np.concatenate([np.linspace(0.5, 0.52, 2000), np.linspace(0.5, 1.0, 2000)]), tf.float32)
    y1, y2, x1, x2 = box_bounds(SEED_H, SEED_W, lam, _seed(12))
    area = (y2.numpy() - y1.numpy()).astype(np.int64) * (x2.numpy() - x1.numpy())
    bound = (1.0 - lam.numpy().astype(np.float64)) * SEED_H * SEED_W
    assert (area <= bound).all(), (area - bound).max()
    # Not trivially small: the unclipped boxes of lam ~0.5 cover nearly half of the image.
    assert area.max() > 0.49 * SEED_H * SEED_W
