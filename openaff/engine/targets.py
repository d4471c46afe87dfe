"""Training targets: label smoothing and mixup (Zhang et al., 2018), as the original recipe."""
from __future__ import annotations

import numpy as np


def soft_targets(labels, classes, eta=0.0):
    """One-hot targets with label smoothing ``eta``: ``1 - eta + eta/K`` on the label."""
    return labels.one_hot(classes, on_value=1 - eta + eta / classes, off_value=eta / classes)


def mixup_batch(data, labels, classes, lam, eta=0.0):
    """Mix each sample with the batch reversed: ``lam * x + (1 - lam) * x[::-1]``, and the
    (smoothed) one-hot targets likewise."""
    mixed = lam * data + (1 - lam) * data[::-1]
    targets = lam * soft_targets(labels, classes, eta) + \
        (1 - lam) * soft_targets(labels[::-1], classes, eta)
    return mixed, targets


def draw_mixup_lambda(rng, alpha, active):
    """``Beta(alpha, alpha)`` while mixup is active, 1 (no mixing) in the off epochs."""
    return float(rng.beta(alpha, alpha)) if active else 1.0


def new_rng(seed, epoch):
    """An epoch's own random stream: a resumed run draws what an uninterrupted one did."""
    return np.random.RandomState((int(seed) * 100003 + int(epoch)) % (2 ** 32))
