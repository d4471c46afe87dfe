"""Semantic segmentation with an AFF-FPN (Dai et al., "Attentional Feature Fusion", WACV 2021,
the long-skip scenario): a CIFAR AFF-ResNet backbone whose three stages feed
:class:`~openaff.fpn.FPNSegmentation`, trained and scored (mean IoU) on
:func:`~openaff.data.canvases.digit_canvases`.

    net = segmentation_network('AFF')
    history = fit(net, digit_canvases(800), digit_canvases(200, train=False), epochs=10)
"""
from __future__ import annotations

import math

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .data.canvases import CANVAS_CLASSES
from .fpn import FPNSegmentation
from .models import CIFARAFFResNet

__all__ = ['segmentation_network', 'confusion', 'mean_iou', 'fit']


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


def _batches(arrays, batch_size, shuffle, rng):
    images, labels = arrays
    order = rng.permutation(len(images)) if shuffle else np.arange(len(images))
    for start in range(0, len(order) - (batch_size - 1 if shuffle else 0), batch_size):
        pick = order[start:start + batch_size]
        yield mx.nd.array(images[pick]), mx.nd.array(labels[pick])


def evaluate_iou(net, data, batch_size=64):
    """Mean IoU of ``net`` on ``data`` (images, labels) in inference mode."""
    classes, total = None, None
    for images, labels in _batches(data, batch_size, False, None):
        scores = net(images)
        classes = scores.shape[1]
        matrix = confusion(scores, labels, classes)
        total = matrix if total is None else total + matrix
    return mean_iou(total)


def fit(net, train, val, epochs=10, lr=0.1, batch_size=32, seed=0, foreground_weight=5.0,
        report=print):
    """Train with NAG, a cosine schedule and per-pixel softmax cross-entropy, object pixels
    weighted ``foreground_weight`` times the background (about 95 % of a canvas, which a
    network otherwise learns to predict everywhere); returns one ``{'epoch', 'loss',
    'val_miou'}`` per epoch."""
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    net.initialize(mx.init.Xavier())
    net.hybridize(static_alloc=True)
    steps = max(1, epochs * (len(train[0]) // batch_size))
    schedule = mx.lr_scheduler.CosineScheduler(steps, base_lr=lr, final_lr=0)
    trainer = gluon.Trainer(net.collect_params(), 'nag',
                            {'learning_rate': lr, 'momentum': 0.9, 'wd': 1e-4,
                             'lr_scheduler': schedule})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(axis=1)
    history = []
    for epoch in range(epochs):
        total, seen = 0.0, 0
        for images, labels in _batches(train, batch_size, True, rng):
            weights = 1 + (foreground_weight - 1) * (labels > 0)
            with autograd.record():
                loss = loss_fn(net(images), labels, weights.expand_dims(1))
            loss.backward()
            mx.nd.waitall()  # see Engine.update: bit-reproducible CPU steps
            trainer.step(images.shape[0])
            total += float(loss.sum().asscalar())
            seen += images.shape[0]
        if not math.isfinite(total):
            raise ArithmeticError(f'epoch {epoch}: the training loss is {total} (diverged)')
        history.append({'epoch': epoch, 'loss': total / seen, 'val_miou': evaluate_iou(net, val)})
        report(f'[Epoch {epoch}] loss={history[-1]["loss"]:.4f} '
               f'val mIoU={history[-1]["val_miou"]:.4f}')
    return history
