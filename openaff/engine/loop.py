"""The training engine shared by ``train_cifar.py`` and ``train_imagenet.py``: the recipe of
the original open-aff runs (NAG, warm-up + cosine/step schedules, mixup with off-epochs, label
smoothing, no weight decay on BN/bias, distillation, float16, AMP) around one fit loop with
reproducible seeds, crash-safe checkpoints, progress bars, logs and plots, on one process or
many (:mod:`openaff.engine.distributed`)."""
from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field

import mxnet as mx
import numpy as np
from mxnet import autograd

from ..batchnorm import precise_bn
from .checkpoint import CheckpointManager
from .devices import all_on_cpu
from .distributed import Cluster, Watchdog
from .history import History
from .recipe import Recipe, recipe_record
from .schedule import make_lr_scheduler
from .targets import draw_mixup_lambda, new_rng
from .tasks import _split, evaluate

__all__ = ['Recipe', 'Engine', 'Outputs', 'TrainingDiverged', 'evaluate', 'seed_everything',
           'setup_logging']

LOG = logging.getLogger('openaff')


class TrainingDiverged(ArithmeticError):
    """The training loss or the weights stopped being finite; nothing non-finite is saved."""


def _non_finite_parameter(net):
    """The name of the first parameter holding NaN or inf, or None."""
    for name, param in net.collect_params().items():
        if param._data is not None and not all(np.isfinite(copy.asnumpy()).all()
                                               for copy in param.list_data()):
            return name
    return None


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


@dataclass
class Outputs:
    """Where a run writes, and under what name: checkpoints of ``model_name`` in ``save_dir``,
    the history plot in ``plot_dir`` (none without it), drawn beside an original log
    ``compare_log`` when given; ``run_info`` is what checkpoint records hold besides the
    engine's own entries (the network record, the dataset)."""
    model_name: str
    save_dir: str = '.'
    plot_dir: str | None = None
    compare_log: str | None = None
    run_info: dict = field(default_factory=dict)


class Engine:
    """Fits ``net`` on ``train_data`` for a ``task`` (:mod:`openaff.engine.tasks`: targets,
    loss, statistics, held-out score), evaluates on ``val_data`` once per epoch, logs
    through ``report`` (:mod:`openaff.engine.reporting`) and checkpoints crash-safely where
    ``outputs`` (:class:`Outputs`) says. Loaders yield ``(data, label)`` batches.

    With a distributed ``cluster`` (:class:`~openaff.engine.distributed.Cluster`) each worker
    passes its shard of the data; gradients are averaged over the global batch, parameters
    (BatchNorm running statistics included) averaged before every evaluation, metrics summed
    over the workers, and
    only rank 0 writes checkpoints and plots."""

    def __init__(self, net, recipe, contexts, train_data, val_data, task, report, outputs,
                 cluster=None):
        self.net, self.recipe, self.contexts = net, recipe, list(contexts)
        self._cpu_only = all_on_cpu(self.contexts)
        self.task, self.report, self.outputs = task, report, outputs
        self.cluster = cluster or Cluster()
        self.watchdog = Watchdog(recipe.dist_timeout if self.cluster.distributed else 0,
                                 self.cluster.describe())
        self.train_data, self.val_data = train_data, val_data
        self.model_name = outputs.model_name
        chief = self.cluster.is_chief
        self.plot_path = os.path.join(outputs.plot_dir, f'{outputs.model_name}_history.png') \
            if outputs.plot_dir and chief else None
        self.checkpoints = CheckpointManager(outputs.save_dir, outputs.model_name,
                                             save_period=recipe.save_period, create=chief)
        self.history, self.best = History(), None
        self.run_info = dict(outputs.run_info or {})
        self.trainer = self._make_trainer()

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
        if recipe.dtype != 'float32' or recipe.amp:
            params['multi_precision'] = True
        trainer = self.cluster.make_trainer(self.net.collect_params(), recipe.optimizer, params,
                                            local_update=recipe.amp)
        if recipe.amp:
            from mxnet.contrib import amp
            amp.init_trainer(trainer)
        return trainer

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
        if record.get('seed') is not None:
            self.recipe.seed = record['seed']
        start = 0 if record.get('epoch') is None else record['epoch'] + 1
        LOG.info('Resumed from %s: continuing at epoch %d', record['params'], start)
        return start

    # ------------------------------------------------------------------ training
    def _step(self, batch, lam):
        recipe = self.recipe
        data, labels = _split(batch, self.contexts)
        mixed = [self.task.targets(x.astype(recipe.dtype, copy=False), label, lam,
                                   recipe.smoothing) for x, label in zip(data, labels)]
        outputs, losses = self.update([x for x, _ in mixed], [t for _, t in mixed],
                                      batch[0].shape[0])
        return outputs, [t for _, t in mixed], labels, losses

    def update(self, data, targets, batch_size):
        """One optimizer step on network inputs ``data`` and loss targets ``targets`` (one
        array per device, mixup and smoothing already applied); ``batch_size`` is this
        worker's batch. Returns the outputs and the per-sample losses."""
        recipe = self.recipe
        outputs, losses = [], []
        with autograd.record():
            for x, target in zip(data, targets):
                out = self.net(x).astype('float32')
                outputs.append(out)
                losses.append(self.task.loss(out, target, x))
            if recipe.amp:  # the scaling has to be recorded too
                from mxnet.contrib import amp
                with amp.scale_loss(losses, self.trainer) as scaled:
                    autograd.backward(scaled)
        if not recipe.amp:
            autograd.backward(losses)
        # mxnet 1.9.1 on CPU gives different steps for the same gradients unless they are
        # complete before the update (measured: 1e-6 after two steps, 5e-3 after six); on
        # GPUs the wait would only keep the backward from overlapping the gradient exchange
        if self._cpu_only:
            mx.nd.waitall()
        self.trainer.step(self.cluster.step_size(batch_size))
        self.watchdog.beat()
        return outputs, losses

    def train_epoch(self, epoch):
        """One pass over the training data; returns the epoch's training statistics. The
        devices are waited for once per report interval (loss check, progress, log line)."""
        from tqdm import tqdm
        recipe = self.recipe
        rng = new_rng(recipe.seed, epoch)
        mixing = recipe.mixup and epoch < recipe.num_epochs - recipe.mixup_off_epoch
        stats, tic, seen = self.task.new_stats(), time.time(), 0
        interval = max(1, getattr(self.report, 'interval', 0) or 50)
        bar = tqdm(total=len(self.train_data), desc=f'epoch {epoch}', leave=False,
                   disable=not (sys.stderr.isatty() and self.cluster.is_chief))
        index = -1
        for index, batch in enumerate(self.train_data):
            stats.update(*self._step(batch, draw_mixup_lambda(rng, recipe.mixup_alpha, mixing)))
            seen += batch[0].shape[0]
            if (index + 1) % interval == 0:
                self._check_progress(stats.sync(), epoch, index, bar, interval)
                self.report.batch(epoch, index, seen / (time.time() - tic), stats.rmse,
                                  self.trainer.learning_rate)
        self._check_progress(stats.sync(), epoch, index, bar, (index + 1) % interval)
        bar.close()
        if stats.samples == 0:
            raise ValueError('the training data gave no batch (is the dataset smaller than '
                             'one batch? the last incomplete batch is dropped)')
        record = stats.as_dict(self.cluster)
        elapsed = time.time() - tic
        return dict(record, time=elapsed, speed=record.pop('samples') / elapsed)

    @staticmethod
    def _check_progress(stats, epoch, index, bar, batches):
        if not math.isfinite(stats.loss):
            bar.close()
            raise TrainingDiverged(f'epoch {epoch}, by batch {index}: the training loss is '
                                   f'{stats.loss} (the run diverged)')
        bar.update(batches)
        bar.set_postfix(loss=f'{stats.loss / max(1, stats.samples):.3f}')

    def _refresh_bn(self):
        if not self.recipe.precise_bn:
            return
        # each batch split over the devices as a training step splits it: the whole batch on
        # the first one would need its memory there, and would normalise over the whole batch
        # what plain BatchNorms normalise per device in training
        precise_bn(self.net, self.train_data, num_batches=self.recipe.precise_bn,
                   ctx=self.contexts, dtype=self.recipe.dtype)
        self.watchdog.beat()

    def bn_statistics(self):
        if self.recipe.precise_bn:
            return f'precise BN: re-estimated over {self.recipe.precise_bn} training batches'
        return 'running statistics (moving averages of training)'

    # ------------------------------------------------------------------ reporting
    def _save(self, epoch, record):
        broken = _non_finite_parameter(self.net)
        if broken:
            raise TrainingDiverged(f'epoch {epoch}: parameter {broken} is not finite (the run '
                                   f'diverged)')
        score = record[self.task.score]
        if not self.cluster.is_chief:
            self.best = score if self.best is None else max(self.best, score)
            return
        improved = self.best is None or score > self.best
        if improved:
            self.best = score
            self.checkpoints.save_best(self.net, *self.report.best_name(epoch, score))
        state = {'seed': self.recipe.seed, 'best': self.best, 'score': self.task.score,
                 'history': self.history.records,
                 'metrics': record, 'bn_statistics': self.bn_statistics(),
                 'recipe': recipe_record(self.recipe), **self.run_info}
        # dist_async keeps the optimizer state on the servers, where it cannot be saved
        trainer = self.trainer if self.cluster.synchronous else None
        self.checkpoints.save(self.net, trainer, epoch, state)
        if self.plot_path:
            self.history.plot(self.plot_path, title=self.model_name,
                              compare_log=self.outputs.compare_log, score=self.task.score)

    def fit(self, resume_from=None, start_epoch=0):
        """Train to ``recipe.num_epochs`` from ``start_epoch``, or from where the checkpoint
        ``resume_from`` ('latest', a JSON or a .params file) left off; returns the history."""
        start = self._resume(resume_from, start_epoch)
        self.cluster.broadcast_parameters(self.net)
        if self.recipe.hybrid:
            self.net.hybridize(static_alloc=True, static_shape=True)
        LOG.info('Validation BatchNorm statistics: %s', self.bn_statistics())
        if self.cluster.distributed:
            LOG.info('Distributed: %s', self.cluster.describe())
        with self.watchdog:
            for epoch in range(start, self.recipe.num_epochs):
                self._run_epoch(epoch)
            if self.cluster.is_chief:
                self.checkpoints.save_final(self.net)
            self._check_identical()
        return self.history.records

    def _run_epoch(self, epoch):
        seed_everything(self.recipe.seed * 1000 + epoch)
        record = dict(epoch=epoch, **self.train_epoch(epoch))
        record['lr'] = self.trainer.learning_rate  # as the original: after the epoch
        self._refresh_bn()
        self.cluster.synchronize(self.net)
        record.update(self.task.evaluate(self.net, self.val_data, self.contexts,
                                         self.recipe.dtype, self.cluster, self.watchdog.beat))
        self.history.add(**record)
        self.report.epoch(epoch, record)
        self._save(epoch, record)
        self.watchdog.beat()

    def _check_identical(self):
        """Log whether every worker ended with the same parameters (rank 0 reports)."""
        if not self.cluster.distributed:
            return
        digests = self.cluster.parameter_digests(self.net)
        if digests is None:
            LOG.info('Final parameters: %s does not keep workers identical', self.cluster.kvstore)
        elif len(set(digests)) == 1:
            LOG.info('Final parameters identical on all %d workers (sha1 %s)', len(digests),
                     digests[0][:12])
        else:
            LOG.warning('Final parameters differ between workers: %s', ', '.join(
                f'rank {rank} sha1 {digest[:12]}' for rank, digest in enumerate(digests)))
