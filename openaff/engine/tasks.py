"""What the engine trains for: the targets, loss, training statistics and held-out score of a
task. :class:`Classification` is the original recipe's (image classification, Dai et al.,
WACV 2021); :class:`Segmentation` trains the paper's long-skip scenario, an AFF-FPN, per pixel.

A task's ``score`` names the entry of its held-out record that the engine keeps the best
checkpoint by (``val_acc``, top-1 accuracy; ``val_miou``, mean IoU, for segmentation); the
checkpoint records name it too (:func:`openaff.engine.checkpoint.score_name`).
"""
from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import gluon

from .targets import mixup_batch, soft_targets

__all__ = ['Classification', 'Distillation', 'Segmentation', 'evaluate']


def _split(batch, contexts):
    """A batch's slices, one per device; a batch smaller than the device list (a shard's last
    validation batch) goes to as many devices as it has samples, none gets an empty slice."""
    data, label = batch[0], batch[1]
    contexts = contexts[:max(1, min(len(contexts), data.shape[0]))]
    return (gluon.utils.split_and_load(data, ctx_list=contexts, batch_axis=0, even_split=False),
            gluon.utils.split_and_load(label, ctx_list=contexts, batch_axis=0, even_split=False))


def _reduce(sums, cluster, key):
    if cluster is not None and cluster.can_reduce:
        return cluster.allreduce(sums, key)
    return sums


def evaluate(net, loader, contexts, dtype='float32', cluster=None, beat=None):
    """Top-1/top-5 accuracy and mean cross-entropy of ``net`` over ``loader`` (batches of
    ``(data, label)``), BatchNorm on its running statistics. With a distributed ``cluster``
    each worker passes its shard and all get the totals over every worker's shard."""
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    totals = np.zeros(5)  # correct top-1, correct top-5, loss sum, samples, samples with top-5
    for batch in loader:
        data, labels = _split(batch, contexts)
        for x, label in zip(data, labels):
            out = net(x.astype(dtype, copy=False)).astype('float32')
            label = label.astype('float32')
            totals[:4] += [(out.argmax(axis=1) == label).sum().asscalar(), 0.0,
                           loss_fn(out, label).sum().asscalar(), out.shape[0]]
            if out.shape[1] >= 5:
                top5 = mx.nd.topk(out, k=5, ret_typ='indices').astype('float32')
                totals[1] += (top5 == label.reshape((-1, 1))).sum().asscalar()
                totals[4] += out.shape[0]
        if beat:
            beat()
    totals = _reduce(totals, cluster, 'evaluate')
    if totals[3] == 0:
        raise ValueError('the validation data is empty')
    return {'val_acc': totals[0] / totals[3],
            'val_top5': totals[1] / totals[4] if totals[4] else None,
            'val_loss': totals[2] / totals[3]}


class EpochStats:
    """Running sums of one training epoch: the loss, the original's RMSE between the (mixed,
    smoothed) targets and the softmax over ``axis`` 1, and the accuracy of the arg-max (per
    sample, or per pixel for segmentation maps).

    :meth:`update` only queues device computations; the sums reach the host in one transfer
    per :meth:`sync` (the engine syncs once per log interval), so a step does not wait for
    the device. The host adds the per-step values in float64, in step order."""

    def __init__(self):
        self.loss = self.samples = self.correct = self.counted = 0.0
        self.rmse_sum = 0.0
        self.rmse_count = 0
        self._pending = []  # per device and step: [loss sum, correct, rmse] on the device
        self._pending_samples = []  # (samples, counted) known without the device

    def update(self, outputs, targets, labels, losses):
        for out, target, label, loss in zip(outputs, targets, labels, losses):
            prob = mx.nd.softmax(out, axis=1)
            hits = out.argmax(axis=1) == label.astype('float32')
            self._pending.append(mx.nd.stack(
                loss.sum(), hits.sum(), mx.nd.sqrt(((prob - target) ** 2).mean())).reshape((3,)))
            self._pending_samples.append((out.shape[0], hits.size))

    def sync(self):
        """Bring the queued sums to the host (one wait for the devices); returns self."""
        if not self._pending:
            return self
        first = self._pending[0].context
        values = mx.nd.stack(*(v.as_in_context(first) for v in self._pending)).asnumpy()
        for (loss, correct, rmse), (samples, counted) in zip(values.astype(np.float64),
                                                             self._pending_samples):
            self.loss += loss
            self.correct += correct
            self.rmse_sum += rmse
            self.rmse_count += 1
            self.samples += samples
            self.counted += counted
        self._pending, self._pending_samples = [], []
        return self

    @property
    def rmse(self):
        return self.rmse_sum / max(1, self.rmse_count)

    def as_dict(self, cluster=None):
        """The epoch's statistics, over every worker's batches when ``cluster`` can sum."""
        self.sync()
        sums = np.array([self.loss, self.samples, self.correct, self.rmse_sum, self.rmse_count,
                         self.counted])
        loss, samples, correct, rmse_sum, rmse_count, counted = _reduce(sums, cluster,
                                                                        'train_stats')
        return {'train_rmse': rmse_sum / max(1, rmse_count),
                'train_acc': correct / max(1.0, counted),
                'train_loss': loss / max(1.0, samples), 'samples': int(samples)}


class Classification:
    """One label per image: mixup and label smoothing of one-hot targets, softmax
    cross-entropy, top-1/top-5 accuracy (the score: ``val_acc``)."""

    score = 'val_acc'

    def __init__(self, classes):
        self.classes = classes
        self._loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)

    def targets(self, data, labels, lam, eta):
        return mixup_batch(data, labels, self.classes, lam, eta)

    def loss(self, out, target, data=None):
        """The per-sample loss of outputs ``out`` (float32) against soft ``target``; ``data``,
        the network's input, is for tasks that look at it again (distillation)."""
        return self._loss(out, target)

    def new_stats(self):
        return EpochStats()

    def evaluate(self, net, loader, contexts, dtype, cluster, beat):
        return evaluate(net, loader, contexts, dtype, cluster, beat)


class Distillation:
    """Knowledge distillation (Hinton et al., 2015) around a classification ``task``: the
    ``teacher``'s softmax at ``temperature`` is the soft target of GluonCV's
    ``DistillationSoftmaxCrossEntropyLoss``, which weighs the task's own targets by
    ``hard_weight``. Targets, statistics and the held-out score are the task's."""

    def __init__(self, task, teacher, temperature, hard_weight):
        from gluoncv.loss import DistillationSoftmaxCrossEntropyLoss
        self.task, self.teacher, self.temperature = task, teacher, temperature
        self.classes, self.score = task.classes, task.score
        self._loss = DistillationSoftmaxCrossEntropyLoss(
            temperature=temperature, hard_weight=hard_weight, sparse_label=False)

    def targets(self, data, labels, lam, eta):
        return self.task.targets(data, labels, lam, eta)

    def loss(self, out, target, data=None):
        soft = mx.nd.softmax(self.teacher(data).astype('float32') / self.temperature)
        return self._loss(out, target, soft)

    def new_stats(self):
        return self.task.new_stats()

    def evaluate(self, net, loader, contexts, dtype, cluster, beat):
        return self.task.evaluate(net, loader, contexts, dtype, cluster, beat)


class WeightedPixelCrossEntropy(gluon.loss.Loss):
    """Per-pixel softmax cross-entropy against soft targets ``(N, K, H, W)``, pixels whose
    target is an object (not class 0) weighted ``foreground_weight`` times the background; the
    mean over a sample's pixels."""

    def __init__(self, foreground_weight=5.0, **kwargs):
        super().__init__(weight=None, batch_axis=0, **kwargs)
        self._foreground_weight = foreground_weight

    def hybrid_forward(self, F, pred, target):
        per_pixel = -F.sum(F.log_softmax(pred, axis=1) * target, axis=1)
        background = F.slice_axis(target, axis=1, begin=0, end=1).reshape((0, -3, -2))
        weight = 1 + (self._foreground_weight - 1) * (1 - background)
        return F.mean((per_pixel * weight).reshape((0, -1)), axis=1)


class Segmentation:
    """A class per pixel (labels ``(N, H, W)``, scores ``(N, K, H, W)``): smoothed one-hot
    targets per pixel (no mixup), :class:`WeightedPixelCrossEntropy`, and held-out mean IoU
    over the classes present (the score: ``val_miou``) with pixel accuracy."""

    score = 'val_miou'

    def __init__(self, classes, foreground_weight=5.0):
        self.classes = classes
        self.foreground_weight = foreground_weight
        self._loss = WeightedPixelCrossEntropy(foreground_weight)

    def targets(self, data, labels, lam, eta):
        if lam != 1:
            raise ValueError('mixup does not apply to segmentation')
        return data, soft_targets(labels, self.classes, eta).transpose((0, 3, 1, 2))

    def loss(self, out, target, data=None):
        return self._loss(out, target)

    def new_stats(self):
        return EpochStats()

    def evaluate(self, net, loader, contexts, dtype, cluster, beat):
        from ..segmentation import confusion, mean_iou
        total = np.zeros((self.classes, self.classes))
        for batch in loader:
            for x, label in zip(*_split(batch, contexts)):
                total += confusion(net(x.astype(dtype, copy=False)), label, self.classes)
            if beat:
                beat()
        total = np.asarray(_reduce(total.ravel(), cluster, 'evaluate')).reshape(total.shape)
        if total.sum() == 0:
            raise ValueError('the validation data is empty')
        miou = mean_iou(total)
        return {'val_miou': miou, 'val_pixel_acc': float(np.trace(total) / total.sum())}
