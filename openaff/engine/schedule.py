"""Learning-rate schedules of the original recipes, built from GluonCV's LRScheduler."""
from __future__ import annotations

from gluoncv.utils import LRScheduler, LRSequential
from mxnet import lr_scheduler

# 'epoch_step' decays at the start of an epoch, as the original train_cifar.py did without
# --cosine (trainer.set_learning_rate before the epoch's first batch); GluonCV's 'step', which
# the original train_imagenet.py used, decays one update earlier, at the last update of the
# epoch before
MODES = ('cosine', 'step', 'epoch_step', 'poly', 'linear', 'constant')


class EpochStepSchedule(lr_scheduler.LRScheduler):
    """``base_lr * factor ** k`` from the first update of the k-th epoch of ``step_epochs`` on.

    MXNet numbers updates from 1: update ``n`` belongs to epoch ``(n - 1) // iters_per_epoch``,
    so the rate read after an epoch's last update (what the original logs print) is still the
    rate that epoch trained with."""

    def __init__(self, base_lr, iters_per_epoch, step_epochs, factor):
        super().__init__(base_lr)
        self.iters_per_epoch = iters_per_epoch
        self.step_epochs = sorted(step_epochs)
        self.factor = factor

    def __call__(self, num_update):
        epoch = (num_update - 1) // self.iters_per_epoch
        decays = sum(1 for e in self.step_epochs if e <= epoch)
        return self.base_lr * self.factor ** decays


def decay_epochs(num_epochs, lr_decay_epoch='40,60', lr_decay_period=0):
    """Epochs at which a step schedule decays: every ``lr_decay_period`` epochs, or the
    comma-separated list ``lr_decay_epoch``."""
    if lr_decay_period > 0:
        return list(range(lr_decay_period, num_epochs, lr_decay_period))
    return [int(e) for e in str(lr_decay_epoch).split(',') if e.strip()]


def make_lr_scheduler(mode, base_lr, num_epochs, iters_per_epoch, warmup_epochs=0,
                      warmup_lr=0.0, step_epochs=(), step_factor=0.1, power=2):
    """Linear warm-up from ``warmup_lr`` to ``base_lr`` over ``warmup_epochs``, then ``mode``
    over the remaining epochs (cosine/poly/linear to 0; step and epoch_step decay by
    ``step_factor`` at ``step_epochs``, counted from the start of training as in the original
    scripts; epoch_step, the CIFAR script's decay, has no warm-up)."""
    if mode not in MODES:
        raise ValueError(f'unknown lr mode {mode!r}; valid: {", ".join(MODES)}')
    if iters_per_epoch < 1:
        raise ValueError('iters_per_epoch must be at least 1')
    if mode == 'epoch_step':
        if warmup_epochs > 0:
            raise ValueError('the epoch_step schedule has no warm-up (use step or cosine)')
        return EpochStepSchedule(base_lr, iters_per_epoch, step_epochs, step_factor)
    parts = []
    if warmup_epochs > 0:
        parts.append(LRScheduler('linear', base_lr=warmup_lr, target_lr=base_lr,
                                 nepochs=warmup_epochs, iters_per_epoch=iters_per_epoch))
    main_epochs = max(1, num_epochs - warmup_epochs)
    parts.append(LRScheduler(mode, base_lr=base_lr, target_lr=0, nepochs=main_epochs,
                             iters_per_epoch=iters_per_epoch,
                             step_epoch=[e - warmup_epochs for e in step_epochs],
                             step_factor=step_factor, power=power))
    return LRSequential(parts)
