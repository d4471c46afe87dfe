"""A small real segmentation task: scikit-learn's handwritten digits pasted at random scales
and places on larger canvases, each pixel labelled with its digit (1-10 for 0-9) or background
(0). Small glyphs on a large canvas are the small objects for which the paper's AFF-FPN helps
(Dai et al., WACV 2021, Sec. 4)."""
from __future__ import annotations

import numpy as np

from .digits import DIGITS_MEAN, DIGITS_STD, DIGITS_TEST_SIZE

__all__ = ['digit_canvases', 'CANVAS_CLASSES']

CANVAS_CLASSES = 11  # background + ten digits


def _glyphs(train):
    from sklearn.datasets import load_digits
    digits = load_digits()
    cut = len(digits.images) - DIGITS_TEST_SIZE
    part = slice(None, cut) if train else slice(cut, None)
    return digits.images[part] / 16.0, digits.target[part]


def digit_canvases(count, size=48, train=True, seed=0, per_canvas=(1, 3), scales=(8, 20)):
    """``(images (N, 3, size, size) float32, normalised; labels (N, size, size) int32)``:
    ``count`` canvases with ``per_canvas`` digits each, side ``scales`` pixels, from the
    digits' training or held-out glyphs (never both)."""
    from PIL import Image
    if size < scales[1]:
        raise ValueError(f'size must be at least the largest glyph ({scales[1]}), got {size}')
    rng = np.random.RandomState(seed)
    glyphs, digits = _glyphs(train)
    images = np.zeros((count, size, size), np.float32)
    labels = np.zeros((count, size, size), np.int32)
    for n in range(count):
        for _ in range(rng.randint(per_canvas[0], per_canvas[1] + 1)):
            pick, side = rng.randint(len(glyphs)), rng.randint(scales[0], scales[1] + 1)
            glyph = np.asarray(Image.fromarray(glyphs[pick].astype(np.float32), mode='F')
                               .resize((side, side), Image.BILINEAR))
            top, left = rng.randint(0, size - side + 1, size=2)
            window = (slice(top, top + side), slice(left, left + side))
            images[n][window] = np.maximum(images[n][window], glyph)
            labels[n][window][glyph > 0.5] = digits[pick] + 1
    normalised = (images - DIGITS_MEAN[0]) / DIGITS_STD[0]
    return np.repeat(normalised[:, None], 3, axis=1), labels
