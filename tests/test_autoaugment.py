"""AutoAugment (Cubuk et al., CVPR 2019): each operation against an independently computed
property, the published policies, and the Gluon block."""
import multiprocessing
import random

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon.data.vision import transforms
from PIL import Image

from openaff.data.autoaugment import (
    FILL,
    OPERATIONS,
    AutoAugment,
    apply_op,
    apply_value,
    cifar10_policy,
    get_policy,
    imagenet_policy,
    magnitude_to_value,
)

GRAY = np.array(FILL, dtype=np.uint8)


def pil(arr):
    return Image.fromarray(np.asarray(arr, dtype=np.uint8), 'RGB')


def arr(img):
    return np.asarray(img, dtype=np.int64)


def gradient(size=32):
    """Colourful image: R ramps left to right, G top to bottom, B along the diagonal."""
    ramp = np.linspace(0, 255, size)
    r, g = np.meshgrid(ramp, ramp)
    return np.stack([r, g, (r + g) / 2], axis=-1).round().astype(np.uint8)


def square(size=32, top=8, left=8, side=8):
    """A white square on black."""
    img = np.zeros((size, size, 3), np.uint8)
    img[top:top + side, left:left + side] = 255
    return img


def white_mask(img):
    return np.all(arr(img) >= 200, axis=-1)


# --- pixel-value operations -------------------------------------------------------------------

def test_invert():
    x = gradient()
    np.testing.assert_array_equal(arr(apply_op(pil(x), 'Invert', 7)), 255 - x.astype(int))


@pytest.mark.parametrize('threshold', [0, 100, 128, 256])
def test_solarize_inverts_only_pixels_at_or_above_threshold(threshold):
    x = gradient().astype(int)
    expected = np.where(x >= threshold, 255 - x, x)
    np.testing.assert_array_equal(arr(apply_value(pil(x), 'Solarize', threshold)), expected)


def test_solarize_magnitude_maps_256_to_0():
    assert magnitude_to_value('Solarize', 0, (32, 32)) == 256
    assert magnitude_to_value('Solarize', 5, (32, 32)) == 128
    assert magnitude_to_value('Solarize', 10, (32, 32)) == 0
    x = gradient()
    np.testing.assert_array_equal(arr(apply_op(pil(x), 'Solarize', 0)), x)


@pytest.mark.parametrize('bits', [4, 5, 6, 7, 8])
def test_posterize_keeps_top_bits(bits):
    x = gradient().astype(int)
    mask = (0xFF << (8 - bits)) & 0xFF
    np.testing.assert_array_equal(arr(apply_value(pil(x), 'Posterize', bits)), x & mask)


def test_posterize_magnitude_maps_8_to_4_bits():
    bits = [magnitude_to_value('Posterize', m, (32, 32)) for m in range(11)]
    assert bits[0] == 8 and bits[-1] == 4
    assert all(a >= b for a, b in zip(bits, bits[1:]))


def test_autocontrast_stretches_to_full_range():
    x = (50 + gradient().astype(int) * 50 // 255).astype(np.uint8)
    assert x.min() == 50 and x.max() == 100
    out = arr(apply_op(pil(x), 'AutoContrast', 0))
    for c in range(3):
        assert out[..., c].min() == 0 and out[..., c].max() == 255
    flat_in, flat_out = x[..., 0].ravel(), out[..., 0].ravel()
    order = np.argsort(flat_in, kind='stable')
    assert np.all(np.diff(flat_out[order]) >= 0), 'autocontrast must be monotonic'


def test_equalize_flattens_a_skewed_ramp():
    values = (np.linspace(0, 1, 32 * 32) ** 3 * 255).round().astype(np.uint8)
    x = np.repeat(values.reshape(32, 32, 1), 3, axis=-1)
    quartiles_in = np.percentile(x[..., 0], [25, 50, 75])
    assert quartiles_in[1] < 50, 'the input itself is far from uniform'
    out = arr(apply_op(pil(x), 'Equalize', 3))[..., 0]
    np.testing.assert_allclose(np.percentile(out, [25, 50, 75]), [64, 128, 191], atol=20)
    assert out.max() == 255


# --- enhancers ------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['Brightness', 'Color', 'Contrast', 'Sharpness'])
def test_enhancer_factor_one_is_identity(name):
    x = gradient()
    assert magnitude_to_value(name, 5, (32, 32)) == pytest.approx(1.0)
    np.testing.assert_array_equal(arr(apply_value(pil(x), name, 1.0)), x)
    np.testing.assert_array_equal(arr(apply_op(pil(x), name, 5)), x)


@pytest.mark.parametrize('name', ['Brightness', 'Color', 'Contrast', 'Sharpness'])
def test_enhancer_magnitude_range(name):
    assert magnitude_to_value(name, 0, (32, 32)) == pytest.approx(0.1)
    assert magnitude_to_value(name, 10, (32, 32)) == pytest.approx(1.9)


def test_brightness_direction():
    x = (gradient() // 2 + 40).astype(np.uint8)
    assert arr(apply_value(pil(x), 'Brightness', 1.5)).mean() > x.mean() + 10
    assert arr(apply_value(pil(x), 'Brightness', 0.5)).mean() < x.mean() - 10


def saturation(img):
    a = arr(img)
    return (a.max(axis=-1) - a.min(axis=-1)).mean()


def test_color_low_factor_is_near_grayscale():
    x = gradient()
    low = apply_op(pil(x), 'Color', 0)
    assert saturation(low) < 0.15 * saturation(x)
    assert saturation(apply_op(pil(x), 'Color', 10)) > saturation(x)


def test_contrast_direction():
    x = (gradient() // 2 + 64).astype(np.uint8)
    assert arr(apply_value(pil(x), 'Contrast', 0.1)).std() < 0.2 * x.std()
    assert arr(apply_value(pil(x), 'Contrast', 1.9)).std() > 1.3 * x.std()


def high_frequency(img):
    a = arr(img)[..., 0]
    return np.abs(np.diff(a, 2, axis=1)).sum()


def test_sharpness_direction():
    x = np.zeros((32, 32, 3), np.uint8)
    x[:, 16:] = 200
    x[:, 15] = 100
    x[:, 16] = 150
    assert high_frequency(apply_value(pil(x), 'Sharpness', 1.9)) > high_frequency(x)
    assert high_frequency(apply_value(pil(x), 'Sharpness', 0.1)) < high_frequency(x)


# --- geometric operations -------------------------------------------------------------------

@pytest.mark.parametrize('k', [3, -5])
def test_translate_x_moves_square_by_k(k):
    x = square(top=10, left=12)
    out = apply_value(pil(x), 'TranslateX', k)
    np.testing.assert_array_equal(white_mask(out), np.roll(white_mask(x), k, axis=1))
    vacated = arr(out)[:, :k] if k > 0 else arr(out)[:, k:]
    assert np.all(vacated == GRAY)


@pytest.mark.parametrize('k', [4, -6])
def test_translate_y_moves_square_by_k(k):
    x = square(top=10, left=12)
    out = apply_value(pil(x), 'TranslateY', k)
    np.testing.assert_array_equal(white_mask(out), np.roll(white_mask(x), k, axis=0))
    vacated = arr(out)[:k] if k > 0 else arr(out)[k:]
    assert np.all(vacated == GRAY)


def test_translate_magnitude_is_a_fraction_of_the_side():
    assert magnitude_to_value('TranslateX', 10, (331, 64)) == 150
    assert magnitude_to_value('TranslateY', 10, (331, 331)) == 150
    assert magnitude_to_value('TranslateX', 10, (32, 32)) == round(32 * 150 / 331)
    assert magnitude_to_value('TranslateY', 5, (100, 64)) == round(64 * 150 / 331 / 2)


def test_rotate_90_is_counterclockwise_quarter_turn():
    x = np.zeros((32, 32, 3), np.uint8)
    x[2:6, 20:30] = (255, 0, 0)
    x[20:30, 3:7] = (0, 255, 0)
    np.testing.assert_array_equal(arr(apply_value(pil(x), 'Rotate', 90)), np.rot90(x))


def test_rotate_fills_corners_with_gray():
    out = arr(apply_value(pil(np.zeros((32, 32, 3), np.uint8)), 'Rotate', 30))
    assert np.all(out[0, 0] == GRAY) and np.all(out[16, 16] == 0)


def test_signed_magnitudes_take_both_signs():
    rng = random.Random(0)
    for name, top in [('ShearX', 0.3), ('ShearY', 0.3), ('Rotate', 30.0)]:
        values = {magnitude_to_value(name, 10, (32, 32), rng) for _ in range(50)}
        assert values == {top, -top}, name


def column_centroid(mask_row):
    return np.flatnonzero(mask_row).mean()


def test_shear_x_moves_top_and_bottom_rows_opposite_ways():
    x = np.zeros((32, 32, 3), np.uint8)
    x[:, 15:17] = 255
    out = white_mask(apply_value(pil(x), 'ShearX', 0.3))
    top, middle, bottom = (column_centroid(out[row]) for row in (1, 16, 30))
    assert top - 15.5 > 3 and bottom - 15.5 < -3
    assert abs(middle - 15.5) <= 1


def test_shear_y_moves_left_and_right_columns_opposite_ways():
    x = np.zeros((32, 32, 3), np.uint8)
    x[15:17, :] = 255
    out = white_mask(apply_value(pil(x), 'ShearY', -0.3))
    left, middle, right = (column_centroid(out[:, col]) for col in (1, 16, 30))
    assert left - 15.5 < -3 and right - 15.5 > 3
    assert abs(middle - 15.5) <= 1


# --- Cutout and SamplePairing ---------------------------------------------------------------

def test_cutout_paints_a_gray_square():
    rng = random.Random(3)
    x = np.zeros((32, 32, 3), np.uint8)
    sizes = set()
    for _ in range(20):
        out = arr(apply_op(pil(x), 'Cutout', 4, rng))
        gray = np.all(out == GRAY, axis=-1)
        rows, cols = np.flatnonzero(gray.any(axis=1)), np.flatnonzero(gray.any(axis=0))
        assert gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all(), 'not a filled box'
        assert np.all(out[~gray] == 0)
        sizes.add((len(rows), len(cols)))
    assert max(sizes) == (8, 8) and all(h <= 8 and w <= 8 for h, w in sizes)


def test_cutout_magnitude_zero_is_identity():
    x = gradient()
    np.testing.assert_array_equal(arr(apply_op(pil(x), 'Cutout', 0, random.Random(0))), x)


def test_sample_pairing_blends_with_the_pair_image():
    x, y = gradient(), square()
    out = arr(apply_op(pil(x), 'SamplePairing', 10, pair_image=pil(y)))
    np.testing.assert_allclose(out, 0.6 * x + 0.4 * y, atol=1)
    with pytest.raises(ValueError, match='second image'):
        apply_op(pil(x), 'SamplePairing', 5)


def test_unknown_op_and_bad_magnitude_are_rejected():
    with pytest.raises(ValueError, match='unknown'):
        apply_op(pil(gradient()), 'Blur', 3)
    with pytest.raises(ValueError, match='magnitude'):
        apply_op(pil(gradient()), 'Rotate', 11)


# --- policies -------------------------------------------------------------------------------

@pytest.mark.parametrize('policy', [cifar10_policy, imagenet_policy])
def test_policy_shape(policy):
    subs = policy()
    assert len(subs) == 25
    for sub in subs:
        assert len(sub) == 2
        for name, prob, magnitude in sub:
            assert name in OPERATIONS and name not in ('Cutout', 'SamplePairing')
            assert 0 <= prob <= 1
            assert isinstance(magnitude, int) and 0 <= magnitude <= 10


def test_published_entries():
    cifar, imagenet = cifar10_policy(), imagenet_policy()
    assert cifar[0] == (('Invert', 0.1, 7), ('Contrast', 0.2, 6))
    assert cifar[1] == (('Rotate', 0.7, 2), ('TranslateX', 0.3, 9))
    assert cifar[24] == (('TranslateY', 0.7, 9), ('AutoContrast', 0.9, 1))
    assert imagenet[0] == (('Posterize', 0.4, 8), ('Rotate', 0.6, 9))
    assert imagenet[18] == (('ShearX', 0.6, 5), ('Equalize', 1.0, 9))
    assert imagenet[24] == (('Equalize', 0.8, 8), ('Equalize', 0.6, 3))


def test_get_policy_validates_custom_lists():
    name, subs = get_policy([[('Rotate', 1.0, 10), ('Invert', 0.5, 0)]])
    assert name == 'custom' and len(subs) == 1
    for bad in ([[('Blur', 0.5, 3)]], [[('Rotate', 1.5, 3)]], [[('Rotate', 0.5, 12)]],
                [[('SamplePairing', 0.5, 3)]], []):
        with pytest.raises(ValueError):
            get_policy(bad)
    with pytest.raises(ValueError, match='unknown policy'):
        AutoAugment('svhn')


# --- the Gluon block ------------------------------------------------------------------------

def nd_image(seed=0, size=32):
    return mx.nd.array(np.random.RandomState(seed).randint(0, 256, (size, size, 3)),
                       dtype=np.uint8)


@pytest.mark.parametrize('policy', ['cifar10', 'imagenet'])
def test_block_ndarray_in_ndarray_out(policy):
    block, x = AutoAugment(policy, seed=1), nd_image()
    for _ in range(10):
        y = block(x)
        assert isinstance(y, mx.nd.NDArray)
        assert y.dtype == np.uint8 and y.shape == x.shape and y.context == x.context


def test_block_keeps_numpy_and_pil_types():
    block, x = AutoAugment('imagenet', seed=2), nd_image().asnumpy()
    out = block(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == x.shape
    gray = block(x[:, :, :1])
    assert gray.shape == (32, 32, 1)
    img = block(pil(x))
    assert isinstance(img, Image.Image) and img.mode == 'RGB' and img.size == (32, 32)
    with pytest.raises(TypeError):
        block(x.astype(np.float32))


def test_block_in_compose_with_to_tensor():
    pipeline = transforms.Compose([AutoAugment('cifar10', seed=0), transforms.ToTensor()])
    out = pipeline(nd_image())
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    assert 0 <= out.min().asscalar() and out.max().asscalar() <= 1


def outputs(block, n=30):
    x = nd_image()
    return [block(x).asnumpy() for _ in range(n)]


def test_same_seed_same_outputs_different_seed_differs():
    a, b, c = (outputs(AutoAugment('cifar10', seed=s)) for s in (7, 7, 8))
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_block_changes_images():
    x = nd_image().asnumpy()
    changed = [not np.array_equal(y, x) for y in outputs(AutoAugment('cifar10', seed=0))]
    assert 5 < sum(changed) < len(changed), 'some but not all draws should alter the image'


def test_custom_policy_always_applied():
    block = AutoAugment([[('Invert', 1.0, 0), ('Invert', 0.0, 0)]], seed=0)
    x = nd_image()
    np.testing.assert_array_equal(block(x).asnumpy(), 255 - x.asnumpy())


def test_repr_names_the_policy():
    assert 'cifar10' in repr(AutoAugment('cifar10'))
    assert 'imagenet' in repr(AutoAugment('imagenet'))
    assert 'custom' in repr(AutoAugment([[('Invert', 1.0, 0), ('Equalize', 1.0, 0)]]))


def _child_stream(block, queue):
    queue.put([hash(y.tobytes()) for y in outputs(block, 12)])


@pytest.mark.parametrize('seed', [None, 5])
def test_forked_workers_draw_different_streams(seed):
    block = AutoAugment('cifar10', seed=seed)
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    workers = [ctx.Process(target=_child_stream, args=(block, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    streams = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert streams[0] != streams[1]
