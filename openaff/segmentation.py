"""Semantic segmentation with an AFF-FPN (Dai et al., "Attentional Feature Fusion", WACV 2021,
the long-skip scenario): a CIFAR AFF-ResNet backbone whose three stages feed
:class:`~openaff.fpn.FPNSegmentation`, trained and scored (mean IoU) on
:func:`~openaff.data.canvases.digit_canvases`.

    net = segmentation_network('AFF')      # trained by train_segmentation.py (the engine's
                                           # Segmentation task), scored by mean_iou
"""
from __future__ import annotations

import numpy as np

from .data.canvases import CANVAS_CLASSES
from .fpn import FPNSegmentation
from .models import CIFARAFFResNet, register_network

__all__ = ['segmentation_network', 'confusion', 'mean_iou']


@register_network(task='segmentation')
def segmentation_network(merge='AFF', classes=CANVAS_CLASSES, blocks=1, channel_times=1,
                         width=32, askc_type='ASKCFuse'):
    """An :class:`FPNSegmentation` over the stages of a CIFAR AFF-ResNet (``askc_type`` in
    the residual blocks, strides 1, 2, 2), the pyramid's merges ``merge``."""
    backbone = CIFARAFFResNet(askc_type, 1, [blocks] * 3,
                              [c * channel_times for c in (16, 16, 32, 64)], classes,
                              deep_stem=False)
    parts = list(backbone.features._children.values())
    # the first convolution without the input BatchNorm: its running statistics are kept
    # outside the graph (CIFARAFFResNet.forward), and the canvases come normalised
    return FPNSegmentation(parts[1], parts[2:5], classes, width=width, merge=merge)


def confusion(scores, labels, classes):
    """The (classes, classes) confusion matrix of per-pixel predictions (rows: truth)."""
    predicted = scores.argmax(axis=1).asnumpy().astype(np.int64).ravel()
    truth = labels.asnumpy().astype(np.int64).ravel()
    return np.bincount(truth * classes + predicted, minlength=classes ** 2).reshape(classes,
                                                                                      classes)


def mean_iou(matrix):
    """Mean intersection over union of the classes present in the truth or the predictions."""
    intersection = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean())
