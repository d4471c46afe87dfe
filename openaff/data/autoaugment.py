"""AutoAugment for Gluon data pipelines.

Implements the operations and the two published policies of *AutoAugment: Learning Augmentation
Strategies from Data* (Cubuk, Zoph, Mane, Vasudevan, Le, CVPR 2019, arXiv:1805.09501), replacing
``autogluon.utils.augment.AugmentationBlock(autoaug_*_policies())`` that the original AFF
training scripts used behind ``--auto_aug``.

A *policy* is a list of sub-policies; a sub-policy is a pair of steps ``(op_name, prob,
magnitude)`` with ``magnitude`` an integer level in ``0..10``. :class:`AutoAugment` picks one
sub-policy uniformly per image and applies each of its steps with its probability.

Magnitude ``m`` maps linearly onto the paper's range (Table 1 / appendix); the ends chosen:

* ShearX/Y: ``0.3 * m/10``, random sign, sheared about the image centre.
* TranslateX/Y: ``(150/331) * side * m/10`` px, random sign. The paper gives 150 px for
  331 px ImageNet crops; kept as that fraction of the side so it scales to CIFAR's 32 px.
* Rotate: ``30 * m/10`` degrees, random sign (counter-clockwise when positive).
* Solarize: threshold ``256 - 256 * m/10``; pixels ``>= threshold`` are inverted.
* Posterize: ``round(8 - 4 * m/10)`` bits kept, 8 (identity) down to 4.
* Contrast, Color, Brightness, Sharpness: factor ``0.1 + 1.8 * m/10`` (1.0, identity, at 5).
* Cutout: gray square of side ``round(20 * m/10)`` px, centre uniform, clipped at the border.
* SamplePairing: blend weight ``0.4 * m/10`` with a second image (``pair_image``).
* AutoContrast, Invert, Equalize: no magnitude.

Solarize and Posterize run "the wrong way" along their ranges so that, as for every other
operation, a larger magnitude means a stronger distortion. Area uncovered by geometric
operations and Cutout is filled with gray ``(128, 128, 128)``, as in the common implementations.
Neither published policy uses Cutout or SamplePairing; SamplePairing is only reachable through
:func:`apply_op` / :func:`apply_value` with an explicit ``pair_image``.
"""
from __future__ import annotations

import os
import random
from typing import Callable, Sequence

import mxnet as mx
import numpy as np
from mxnet.gluon import Block
from PIL import Image, ImageEnhance, ImageOps

__all__ = [
    'AutoAugment', 'OPERATIONS', 'FILL', 'MAX_MAGNITUDE', 'apply_op', 'apply_value',
    'magnitude_to_value', 'cifar10_policy', 'imagenet_policy', 'get_policy',
]

FILL = (128, 128, 128)
MAX_MAGNITUDE = 10
TRANSLATE_FRACTION = 150 / 331

SubPolicy = Sequence[tuple]


# --- operations on RGB PIL images, taking the operation's raw value -------------------------

def _affine(img: Image.Image, coeffs, resample=Image.BILINEAR) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs, resample=resample, fillcolor=FILL)


def shear_x(img: Image.Image, shear: float) -> Image.Image:
    """Horizontal shear about the centre row: row ``y`` moves by ``-shear * (y - h/2)`` px."""
    return _affine(img, (1, shear, -shear * img.height / 2, 0, 1, 0))


def shear_y(img: Image.Image, shear: float) -> Image.Image:
    """Vertical shear about the centre column: column ``x`` moves by ``-shear * (x - w/2)``."""
    return _affine(img, (1, 0, 0, shear, 1, -shear * img.width / 2))


def translate_x(img: Image.Image, pixels: int) -> Image.Image:
    """Shift the content right by ``pixels`` (left when negative)."""
    return _affine(img, (1, 0, -int(pixels), 0, 1, 0), resample=Image.NEAREST)


def translate_y(img: Image.Image, pixels: int) -> Image.Image:
    """Shift the content down by ``pixels`` (up when negative)."""
    return _affine(img, (1, 0, 0, 0, 1, -int(pixels)), resample=Image.NEAREST)


def rotate(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate counter-clockwise about the centre, keeping the size."""
    return img.rotate(degrees, resample=Image.BILINEAR, fillcolor=FILL)


def cutout(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """Paint a ``size`` x ``size`` gray square (clipped at the border) at a random centre
    (DeVries & Taylor, 2017)."""
    if size <= 0:
        return img.copy()
    cx, cy = rng.randrange(img.width), rng.randrange(img.height)
    x0, y0 = max(cx - size // 2, 0), max(cy - size // 2, 0)
    x1, y1 = min(cx - size // 2 + size, img.width), min(cy - size // 2 + size, img.height)
    out = img.copy()
    out.paste(FILL, (x0, y0, x1, y1))
    return out


def autocontrast(img: Image.Image) -> Image.Image:
    """Stretch each channel linearly so its darkest pixel is 0 and its brightest 255."""
    # Own LUT rather than ImageOps.autocontrast, whose truncation can stop at 254.
    pixels = np.asarray(img, dtype=np.float64)
    lo = pixels.min(axis=(0, 1))
    span = np.maximum(pixels.max(axis=(0, 1)) - lo, 1)
    levels = np.arange(256, dtype=np.float64)[:, None]
    lut = np.clip(np.round((levels - lo) * 255 / span), 0, 255)
    lut = np.where(pixels.max(axis=(0, 1)) > lo, lut, levels)
    return img.point(lut.T.astype(int).ravel().tolist())


def sample_pairing(img: Image.Image, pair_image: Image.Image, weight: float) -> Image.Image:
    """``(1 - weight) * img + weight * pair_image`` (Inoue, 2018), the pair resized to fit."""
    if pair_image is None:
        raise ValueError('SamplePairing needs a second image: pass pair_image')
    pair = _as_rgb(pair_image).resize(img.size, Image.BILINEAR)
    return Image.blend(img, pair, weight)


def _enhancer(kind) -> Callable[[Image.Image, float], Image.Image]:
    return lambda img, factor: kind(img).enhance(factor)


_SIMPLE_OPS: dict[str, Callable[[Image.Image, object], Image.Image]] = {
    'ShearX': shear_x,
    'ShearY': shear_y,
    'TranslateX': translate_x,
    'TranslateY': translate_y,
    'Rotate': rotate,
    'AutoContrast': lambda img, _: autocontrast(img),
    'Invert': lambda img, _: ImageOps.invert(img),
    'Equalize': lambda img, _: ImageOps.equalize(img),
    'Solarize': lambda img, threshold: ImageOps.solarize(img, threshold),
    'Posterize': lambda img, bits: ImageOps.posterize(img, int(bits)),
    'Contrast': _enhancer(ImageEnhance.Contrast),
    'Color': _enhancer(ImageEnhance.Color),
    'Brightness': _enhancer(ImageEnhance.Brightness),
    'Sharpness': _enhancer(ImageEnhance.Sharpness),
}

OPERATIONS = tuple(_SIMPLE_OPS) + ('Cutout', 'SamplePairing')


# --- magnitude levels -> raw values ---------------------------------------------------------

def _linear(high: float, low: float = 0.0) -> Callable[[float, tuple], float]:
    return lambda m, size: low + (high - low) * m / MAX_MAGNITUDE


def _translate(axis: int) -> Callable[[float, tuple], int]:
    return lambda m, size: int(round(TRANSLATE_FRACTION * size[axis] * m / MAX_MAGNITUDE))


_VALUES: dict[str, Callable[[float, tuple], object]] = {
    'ShearX': _linear(0.3),
    'ShearY': _linear(0.3),
    'TranslateX': _translate(0),
    'TranslateY': _translate(1),
    'Rotate': _linear(30.0),
    'Solarize': lambda m, size: int(round(_linear(0.0, 256.0)(m, size))),
    'Posterize': lambda m, size: int(round(_linear(4.0, 8.0)(m, size))),
    'Contrast': _linear(1.9, 0.1),
    'Color': _linear(1.9, 0.1),
    'Brightness': _linear(1.9, 0.1),
    'Sharpness': _linear(1.9, 0.1),
    'Cutout': lambda m, size: int(round(_linear(20.0)(m, size))),
    'SamplePairing': _linear(0.4),
}

_SIGNED = frozenset({'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate'})


def _check_op(name: str):
    if name not in OPERATIONS:
        raise ValueError(f'unknown AutoAugment operation {name!r}; known: {OPERATIONS}')


def magnitude_to_value(name: str, magnitude: float, size: tuple[int, int],
                       rng: random.Random | None = None):
    """Raw value of operation ``name`` at ``magnitude`` (0..10) for an image of ``size``
    ``(width, height)``; signed operations (shear, translate, rotate) get a random sign from
    ``rng`` (positive when ``rng`` is None). ``None`` for operations without a magnitude.
    Ranges follow Cubuk et al., CVPR 2019 (see the module docstring)."""
    _check_op(name)
    if not 0 <= magnitude <= MAX_MAGNITUDE:
        raise ValueError(f'magnitude must be in [0, {MAX_MAGNITUDE}], got {magnitude}')
    if name not in _VALUES:
        return None
    value = _VALUES[name](magnitude, size)
    if name in _SIGNED and rng is not None and rng.random() < 0.5:
        value = -value
    return value


def apply_value(img: Image.Image, name: str, value, rng: random.Random | None = None,
                pair_image: Image.Image | None = None) -> Image.Image:
    """Apply AutoAugment operation ``name`` with its raw ``value`` (degrees, pixels, factor,
    bits, threshold...) to an RGB PIL image. ``rng`` places the Cutout square; ``pair_image``
    is SamplePairing's second image. Operations of Cubuk et al., CVPR 2019."""
    _check_op(name)
    if name == 'Cutout':
        return cutout(img, value, rng if rng is not None else random.Random())
    if name == 'SamplePairing':
        return sample_pairing(img, pair_image, value)
    return _SIMPLE_OPS[name](img, value)


def apply_op(img: Image.Image, name: str, magnitude: float, rng: random.Random | None = None,
             pair_image: Image.Image | None = None) -> Image.Image:
    """Apply AutoAugment operation ``name`` at ``magnitude`` level 0..10 to an RGB PIL image
    (Cubuk et al., CVPR 2019): :func:`magnitude_to_value` then :func:`apply_value`."""
    value = magnitude_to_value(name, magnitude, img.size, rng)
    return apply_value(img, name, value, rng, pair_image)


# --- published policies ---------------------------------------------------------------------

def cifar10_policy() -> list[tuple]:
    """The 25 sub-policies found on reduced CIFAR-10 (Cubuk et al., CVPR 2019, appendix)."""
    return [
        (('Invert', 0.1, 7), ('Contrast', 0.2, 6)),
        (('Rotate', 0.7, 2), ('TranslateX', 0.3, 9)),
        (('Sharpness', 0.8, 1), ('Sharpness', 0.9, 3)),
        (('ShearY', 0.5, 8), ('TranslateY', 0.7, 9)),
        (('AutoContrast', 0.5, 8), ('Equalize', 0.9, 2)),
        (('ShearY', 0.2, 7), ('Posterize', 0.3, 7)),
        (('Color', 0.4, 3), ('Brightness', 0.6, 7)),
        (('Sharpness', 0.3, 9), ('Brightness', 0.7, 9)),
        (('Equalize', 0.6, 5), ('Equalize', 0.5, 1)),
        (('Contrast', 0.6, 7), ('Sharpness', 0.6, 5)),
        (('Color', 0.7, 7), ('TranslateX', 0.5, 8)),
        (('Equalize', 0.3, 7), ('AutoContrast', 0.4, 8)),
        (('TranslateY', 0.4, 3), ('Sharpness', 0.2, 6)),
        (('Brightness', 0.9, 6), ('Color', 0.2, 8)),
        (('Solarize', 0.5, 2), ('Invert', 0.0, 3)),
        (('Equalize', 0.2, 0), ('AutoContrast', 0.6, 0)),
        (('Equalize', 0.2, 8), ('Equalize', 0.6, 4)),
        (('Color', 0.9, 9), ('Equalize', 0.6, 6)),
        (('AutoContrast', 0.8, 4), ('Solarize', 0.2, 8)),
        (('Brightness', 0.1, 3), ('Color', 0.7, 0)),
        (('Solarize', 0.4, 5), ('AutoContrast', 0.9, 3)),
        (('TranslateY', 0.9, 9), ('TranslateY', 0.7, 9)),
        (('AutoContrast', 0.9, 2), ('Solarize', 0.8, 3)),
        (('Equalize', 0.8, 8), ('Invert', 0.1, 3)),
        (('TranslateY', 0.7, 9), ('AutoContrast', 0.9, 1)),
    ]


def imagenet_policy() -> list[tuple]:
    """The 25 sub-policies found on reduced ImageNet (Cubuk et al., CVPR 2019, appendix).
    The published table repeats five sub-policies (rows 21-25); they are kept, since the
    repetition weights those sub-policies in the uniform draw."""
    return [
        (('Posterize', 0.4, 8), ('Rotate', 0.6, 9)),
        (('Solarize', 0.6, 5), ('AutoContrast', 0.6, 5)),
        (('Equalize', 0.8, 8), ('Equalize', 0.6, 3)),
        (('Posterize', 0.6, 7), ('Posterize', 0.6, 6)),
        (('Equalize', 0.4, 7), ('Solarize', 0.2, 4)),
        (('Equalize', 0.4, 4), ('Rotate', 0.8, 8)),
        (('Solarize', 0.6, 3), ('Equalize', 0.6, 7)),
        (('Posterize', 0.8, 5), ('Equalize', 1.0, 2)),
        (('Rotate', 0.2, 3), ('Solarize', 0.6, 8)),
        (('Equalize', 0.6, 8), ('Posterize', 0.4, 6)),
        (('Rotate', 0.8, 8), ('Color', 0.4, 0)),
        (('Rotate', 0.4, 9), ('Equalize', 0.6, 2)),
        (('Equalize', 0.0, 7), ('Equalize', 0.8, 8)),
        (('Invert', 0.6, 4), ('Equalize', 1.0, 8)),
        (('Color', 0.6, 4), ('Contrast', 1.0, 8)),
        (('Rotate', 0.8, 8), ('Color', 1.0, 2)),
        (('Color', 0.8, 8), ('Solarize', 0.8, 7)),
        (('Sharpness', 0.4, 7), ('Invert', 0.6, 8)),
        (('ShearX', 0.6, 5), ('Equalize', 1.0, 9)),
        (('Color', 0.4, 0), ('Equalize', 0.6, 3)),
        (('Equalize', 0.4, 7), ('Solarize', 0.2, 4)),
        (('Solarize', 0.6, 5), ('AutoContrast', 0.6, 5)),
        (('Invert', 0.6, 4), ('Equalize', 1.0, 8)),
        (('Color', 0.6, 4), ('Contrast', 1.0, 8)),
        (('Equalize', 0.8, 8), ('Equalize', 0.6, 3)),
    ]


_POLICIES = {'cifar10': cifar10_policy, 'imagenet': imagenet_policy}


def _check_policy(policy: Sequence[SubPolicy]) -> list[tuple]:
    if not policy:
        raise ValueError('an AutoAugment policy needs at least one sub-policy')
    checked = []
    for sub in policy:
        steps = tuple((str(name), float(prob), float(mag)) for name, prob, mag in sub)
        for name, prob, mag in steps:
            _check_op(name)
            if name == 'SamplePairing':
                raise ValueError('SamplePairing needs a second image; use apply_op directly')
            if not (0 <= prob <= 1 and 0 <= mag <= MAX_MAGNITUDE):
                raise ValueError(f'bad step {(name, prob, mag)}: prob in [0, 1], '
                                 f'magnitude in [0, {MAX_MAGNITUDE}]')
        checked.append(steps)
    return checked


def get_policy(policy: str | Sequence[SubPolicy]) -> tuple[str, list[tuple]]:
    """``(name, sub_policies)`` for ``'cifar10'``, ``'imagenet'`` or a custom list of
    sub-policies (named ``'custom'``), validated."""
    if isinstance(policy, str):
        if policy not in _POLICIES:
            raise ValueError(f'unknown policy {policy!r}; choose from {sorted(_POLICIES)} '
                             'or pass a list of sub-policies')
        return policy, _check_policy(_POLICIES[policy]())
    return 'custom', _check_policy(policy)


# --- image type conversions -----------------------------------------------------------------

def _as_rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == 'RGB' else img.convert('RGB')


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise TypeError(f'AutoAugment expects uint8 pixels, got {arr.dtype}')
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(arr, 'L').convert('RGB')
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Image.fromarray(arr, 'RGB')
    raise ValueError(f'AutoAugment expects an HWC image with 1 or 3 channels, got {arr.shape}')


def _pil_to_array(img: Image.Image, like: np.ndarray) -> np.ndarray:
    if like.ndim == 3 and like.shape[2] == 3:
        return np.array(img, dtype=np.uint8)
    gray = np.array(img.convert('L'), dtype=np.uint8)
    return gray.reshape(like.shape)


def _to_pil(img) -> tuple[Image.Image, Callable[[Image.Image], object]]:
    """The RGB PIL image to augment and a function turning the result back into ``img``'s
    type, dtype, layout and (for NDArray) context."""
    if isinstance(img, Image.Image):
        return _as_rgb(img), (lambda out: out if img.mode == 'RGB' else out.convert(img.mode))
    if isinstance(img, mx.nd.NDArray):
        arr = img.asnumpy()
        return _array_to_pil(arr), (lambda out: mx.nd.array(
            _pil_to_array(out, arr), ctx=img.context, dtype=np.uint8))
    if isinstance(img, np.ndarray):
        return _array_to_pil(img), (lambda out: _pil_to_array(out, img))
    raise TypeError(f'AutoAugment expects an NDArray, numpy array or PIL image, got {type(img)}')


# --- the Gluon block ------------------------------------------------------------------------

class AutoAugment(Block):
    """AutoAugment (Cubuk et al., CVPR 2019) as a Gluon ``Block`` for
    ``transforms.Compose`` or ``dataset.transform_first``.

    Parameters
    ----------
    policy : ``'cifar10'``, ``'imagenet'`` or a list of sub-policies, each a sequence of
        ``(op_name, prob, magnitude)`` steps with ``op_name`` in :data:`OPERATIONS`.
    seed : seed of the block's own ``random.Random``. Within one process a given seed gives
        one reproducible stream. A process other than the one that last drew from the block
        (e.g. a DataLoader worker) reseeds on first use: from OS entropy when ``seed`` is None,
        else from ``(seed, pid)``, so workers never replay the same stream.

    ``forward(img)`` takes an HWC uint8 ``NDArray`` (what Gluon's vision datasets yield), an HWC
    (or HW) uint8 numpy array or a PIL image, and returns the same type and shape.
    """

    def __init__(self, policy: str | Sequence[SubPolicy] = 'cifar10', seed: int | None = None):
        super().__init__()
        self.policy_name, self.policy = get_policy(policy)
        self._seed = seed
        self._pid = os.getpid()
        self._rng = random.Random(seed)

    def _process_rng(self) -> random.Random:
        pid = os.getpid()
        if pid != self._pid:
            # A forked or unpickled copy would otherwise replay the parent's stream.
            seed = None if self._seed is None else int(
                np.random.SeedSequence([self._seed, pid]).generate_state(1)[0])
            self._pid, self._rng = pid, random.Random(seed)
        return self._rng

    def augment(self, img: Image.Image) -> Image.Image:
        """Apply one uniformly drawn sub-policy to an RGB PIL image."""
        rng = self._process_rng()
        for name, prob, magnitude in rng.choice(self.policy):
            if rng.random() < prob:
                img = apply_op(img, name, magnitude, rng)
        return img

    def forward(self, img):
        pil, restore = _to_pil(img)
        return restore(self.augment(pil))

    def __repr__(self):
        return (f'{self.__class__.__name__}(policy={self.policy_name}, '
                f'{len(self.policy)} sub-policies, seed={self._seed})')
