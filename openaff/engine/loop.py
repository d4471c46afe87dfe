"""The training engine shared by ``train_cifar.py`` and ``train_imagenet.py``: the recipe of
the original open-aff runs (NAG, warm-up + cosine/step schedules, mixup with off-epochs, label
smoothing, no weight decay on BN/bias, distillation, float16) around one fit loop with
reproducible seeds, crash-safe checkpoints, progress bars, logs and plots."""
from __future__ import annotations

import logging
import os
import random
import sys
import time
from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..batchnorm import precise_bn
from .checkpoint import CheckpointManager
from .history import History
from .schedule import make_lr_scheduler
from .targets import draw_mixup_lambda, mixup_batch, new_rng

__all__ = ['Recipe', 'Engine', 'evaluate', 'seed_everything', 'setup_logging']

LOG = logging.getLogger('openaff')


@dataclass
class Recipe:
    """Everything about how a network is trained (the original scripts' options)."""
    num_epochs: int = 1
    lr: float = 0.1
    momentum: float = 0.9
    wd: float = 1e-4
    optimizer: str = 'nag'
    lr_mode: str = 'step'
    warmup_epochs: int = 0
    warmup_lr: float = 0.0
    step_epochs: tuple = ()
    step_factor: float = 0.1
    mixup: bool = False
    mixup_alpha: float = 1.0
    mixup_off_epoch: int = 0
    label_smoothing: bool = False
    no_wd: bool = False
    dtype: str = 'float32'
    hybrid: bool = True
    precise_bn: int = 0          # batches for precise BN before each evaluation; 0 = off
    seed: int = 0
    log_style: str = 'cifar'     # 'cifar' or 'imagenet' line formats of the original logs
    log_interval: int = 50
    save_period: int = 10
    temperature: float = 20.0    # distillation
    hard_weight: float = 0.5

    @property
    def smoothing(self):
        return 0.1 if self.label_smoothing else 0.0


def seed_everything(seed):
    """Seed Python, NumPy and MXNet (every device) from one number."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    mx.random.seed(seed % (2 ** 31))


def setup_logging(log_file=None, level=logging.INFO):
    """Log lines (the original format) to stderr and, when given, a file, without duplicates
    when called twice."""
    LOG.setLevel(level)
    LOG.propagate = False
    for handler in list(LOG.handlers):
        LOG.removeHandler(handler)
        handler.close()
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(logging.Formatter('%(message)s'))
        LOG.addHandler(handler)
    return LOG


def _split(batch, contexts):
    data, label = batch[0], batch[1]
    return (gluon.utils.split_and_load(data, ctx_list=contexts, batch_axis=0, even_split=False),
            gluon.utils.split_and_load(label, ctx_list=contexts, batch_axis=0, even_split=False))


def evaluate(net, loader, contexts, dtype='float32'):
    """Top-1/top-5 accuracy and mean cross-entropy of ``net`` over ``loader`` (batches of
    ``(data, label)``), BatchNorm on its running statistics."""
    top1, top5 = mx.metric.Accuracy(), mx.metric.TopKAccuracy(5)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    loss_sum, count = 0.0, 0
    for batch in loader:
        data, labels = _split(batch, contexts)
        outputs = [net(x.astype(dtype, copy=False)).astype('float32') for x in data]
        top1.update(labels, outputs)
        if outputs[0].shape[1] >= 5:
            top5.update(labels, outputs)
        for out, label in zip(outputs, labels):
            loss_sum += loss_fn(out, label).sum().asscalar()
            count += out.shape[0]
    if count == 0:
        raise ValueError('the validation data is empty')
    return {'val_acc': top1.get()[1], 'val_top5': top5.get()[1] if top5.num_inst else None,
            'val_loss': loss_sum / count}


class _EpochStats:
    """Running sums of one training epoch."""

    def __init__(self):
        self.loss = self.samples = self.correct = 0.0
        self.rmse_sum = 0.0
        self.rmse_count = 0

    def update(self, outputs, targets, labels, losses):
        for out, target, label, loss in zip(outputs, targets, labels, losses):
            prob = mx.nd.softmax(out)
            # the original's training metric: RMSE between the (mixed, smoothed) target and the
            # softmax output, averaged over batches
            self.rmse_sum += float(mx.nd.sqrt(((prob - target) ** 2).mean()).asscalar())
            self.rmse_count += 1
            self.correct += float((out.argmax(axis=1) == label.astype('float32')).sum().asscalar())
            self.loss += float(loss.sum().asscalar())
            self.samples += out.shape[0]

    @property
    def rmse(self):
        return self.rmse_sum / max(1, self.rmse_count)

    def as_dict(self):
        n = max(1.0, self.samples)
        return {'train_rmse': self.rmse, 'train_acc': self.correct / n, 'train_loss': self.loss / n}


class Engine:
    """Fits ``net`` on ``train_data``, evaluates on ``val_data`` once per epoch, logs in the
    original format and checkpoints crash-safely. Loaders yield ``(data, label)`` batches."""

    def __init__(self, net, recipe, contexts, train_data, val_data, classes, model_name,
                 save_dir, plot_dir=None, teacher=None, compare_log=None, run_info=None):
        self.net, self.recipe, self.contexts = net, recipe, list(contexts)
        self.train_data, self.val_data, self.classes = train_data, val_data, classes
        self.model_name, self.teacher, self.compare_log = model_name, teacher, compare_log
        self.plot_path = os.path.join(plot_dir, f'{model_name}_history.png') if plot_dir else None
        self.checkpoints = CheckpointManager(save_dir, model_name, save_period=recipe.save_period)
        self.history, self.best = History(), None
        self.run_info = dict(run_info or {})
        self.trainer = self._make_trainer()
        if teacher is not None:
            from gluoncv.loss import DistillationSoftmaxCrossEntropyLoss
            self.loss_fn = DistillationSoftmaxCrossEntropyLoss(
                temperature=recipe.temperature, hard_weight=recipe.hard_weight, sparse_label=False)
        else:
            self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)

    # ------------------------------------------------------------------ set-up
    def _make_trainer(self):
        recipe = self.recipe
        if recipe.no_wd:
            for param in self.net.collect_params('.*beta|.*gamma|.*bias').values():
                param.wd_mult = 0.0
        scheduler = make_lr_scheduler(
            recipe.lr_mode, recipe.lr, recipe.num_epochs, max(1, len(self.train_data)),
            recipe.warmup_epochs, recipe.warmup_lr, recipe.step_epochs, recipe.step_factor)
        params = {'wd': recipe.wd, 'momentum': recipe.momentum, 'lr_scheduler': scheduler}
        if recipe.dtype != 'float32':
            params['multi_precision'] = True
        return gluon.Trainer(self.net.collect_params(), recipe.optimizer, params)

    def _resume(self, resume_from, start_epoch=0):
        if not resume_from:
            return start_epoch
        from ..store import load_checkpoint
        record = self.checkpoints.find(resume_from)
        load_checkpoint(self.net, record['params'], ctx=self.contexts)
        if record.get('states'):
            self.trainer.load_states(record['states'])
        self.history = History(record.get('history'))
        self.best = record.get('best')
        self.recipe.seed = record.get('seed', self.recipe.seed)
        start = 0 if record.get('epoch') is None else record['epoch'] + 1
        LOG.info('Resumed from %s: continuing at epoch %d', record['params'], start)
        return start

    # ------------------------------------------------------------------ training
    def _step(self, batch, lam):
        recipe = self.recipe
        data, labels = _split(batch, self.contexts)
        outputs, targets, losses = [], [], []
        with autograd.record():
            for x, label in zip(data, labels):
                x, target = mixup_batch(x.astype(recipe.dtype, copy=False), label, self.classes,
                                        lam, recipe.smoothing)
                out = self.net(x).astype('float32')
                if self.teacher is not None:
                    soft = mx.nd.softmax(self.teacher(x).astype('float32') / recipe.temperature)
                    loss = self.loss_fn(out, target, soft)
                else:
                    loss = self.loss_fn(out, target)
                outputs.append(out)
                targets.append(target)
                losses.append(loss)
        autograd.backward(losses)
        self.trainer.step(batch[0].shape[0])
        return outputs, targets, labels, losses

    def train_epoch(self, epoch):
        """One pass over the training data; returns the epoch's training statistics."""
        from tqdm import tqdm
        recipe = self.recipe
        rng = new_rng(recipe.seed, epoch)
        mixing = recipe.mixup and epoch < recipe.num_epochs - recipe.mixup_off_epoch
        stats, tic, seen = _EpochStats(), time.time(), 0
        bar = tqdm(total=len(self.train_data), desc=f'epoch {epoch}', leave=False,
                   disable=not sys.stderr.isatty())
        for index, batch in enumerate(self.train_data):
            stats.update(*self._step(batch, draw_mixup_lambda(rng, recipe.mixup_alpha, mixing)))
            seen += batch[0].shape[0]
            bar.update(1)
            bar.set_postfix(loss=f'{stats.loss / max(1, stats.samples):.3f}')
            if recipe.log_style == 'imagenet' and recipe.log_interval and \
                    (index + 1) % recipe.log_interval == 0:
                LOG.info('Epoch[%d] Batch [%d]\tSpeed: %f samples/sec\trmse=%f\tlr=%f', epoch,
                         index, seen / (time.time() - tic), stats.rmse, self.trainer.learning_rate)
        bar.close()
        if stats.samples == 0:
            raise ValueError('the training data gave no batch (is the dataset smaller than '
                             'one batch? the last incomplete batch is dropped)')
        return dict(stats.as_dict(), time=time.time() - tic, speed=seen / (time.time() - tic))

    def _refresh_bn(self):
        if not self.recipe.precise_bn:
            return
        dtype, ctx = self.recipe.dtype, self.contexts[0]
        batches = ((b[0].as_in_context(ctx).astype(dtype, copy=False),) for b in self.train_data)
        precise_bn(self.net, batches, num_batches=self.recipe.precise_bn)

    def bn_statistics(self):
        if self.recipe.precise_bn:
            return f'precise BN: re-estimated over {self.recipe.precise_bn} training batches'
        return 'running statistics (moving averages of training)'

    # ------------------------------------------------------------------ reporting
    def _log_epoch(self, epoch, record):
        if self.recipe.log_style == 'imagenet':
            LOG.info('[Epoch %d] training: rmse=%f', epoch, record['train_rmse'])
            LOG.info('[Epoch %d] speed: %d samples/sec\ttime cost: %f', epoch, record['speed'],
                     record['time'])
            top5 = record['val_top5'] if record['val_top5'] is not None else float('nan')
            LOG.info('[Epoch %d] validation: err-top1=%f err-top5=%f', epoch,
                     1 - record['val_acc'], 1 - top5)
        else:
            LOG.info('[Epoch %d] train=%f val=%f loss=%f lr: %f time: %f', epoch,
                     record['train_rmse'], record['val_acc'], record['train_loss'], record['lr'],
                     record['time'])

    def _save(self, epoch, record):
        improved = self.best is None or record['val_acc'] > self.best
        if improved:
            self.best = record['val_acc']
            if self.recipe.log_style == 'imagenet':
                score, name_epoch = 1 - record['val_acc'], epoch
            else:
                score, name_epoch = record['val_acc'], None
            self.checkpoints.save_best(self.net, score, name_epoch)
        state = {'seed': self.recipe.seed, 'best': self.best, 'history': self.history.records,
                 'metrics': record, 'bn_statistics': self.bn_statistics(), **self.run_info}
        self.checkpoints.save(self.net, self.trainer, epoch, state)
        if self.plot_path:
            self.history.plot(self.plot_path, title=self.model_name, compare_log=self.compare_log)

    def fit(self, resume_from=None, start_epoch=0):
        """Train to ``recipe.num_epochs`` from ``start_epoch``, or from where the checkpoint
        ``resume_from`` ('latest', a JSON or a .params file) left off; returns the history."""
        start = self._resume(resume_from, start_epoch)
        if self.recipe.hybrid:
            self.net.hybridize(static_alloc=True, static_shape=True)
        LOG.info('Validation BatchNorm statistics: %s', self.bn_statistics())
        for epoch in range(start, self.recipe.num_epochs):
            seed_everything(self.recipe.seed * 1000 + epoch)
            record = dict(epoch=epoch, **self.train_epoch(epoch))
            record['lr'] = self.trainer.learning_rate  # as the original: after the epoch
            self._refresh_bn()
            record.update(evaluate(self.net, self.val_data, self.contexts, self.recipe.dtype))
            self.history.add(**record)
            self._log_epoch(epoch, record)
            self._save(epoch, record)
        self.checkpoints.save_final(self.net)
        return self.history.records
