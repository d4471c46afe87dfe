"""Learning-rate schedules of the original recipes, built from GluonCV's LRScheduler."""
from __future__ import annotations

from gluoncv.utils import LRScheduler, LRSequential

MODES = ('cosine', 'step', 'poly', 'linear', 'constant')


def decay_epochs(num_epochs, lr_decay_epoch='40,60', lr_decay_period=0):
    """Epochs at which a step schedule decays: every ``lr_decay_period`` epochs, or the
    comma-separated list ``lr_decay_epoch``."""
    if lr_decay_period > 0:
        return list(range(lr_decay_period, num_epochs, lr_decay_period))
    return [int(e) for e in str(lr_decay_epoch).split(',') if e.strip()]


def make_lr_scheduler(mode, base_lr, num_epochs, iters_per_epoch, warmup_epochs=0,
                      warmup_lr=0.0, step_epochs=(), step_factor=0.1, power=2):
    """Linear warm-up from ``warmup_lr`` to ``base_lr`` over ``warmup_epochs``, then ``mode``
    over the remaining epochs (cosine/poly/linear to 0; step decays by ``step_factor`` at
    ``step_epochs``, counted from the start of training as in the original scripts)."""
    if mode not in MODES:
        raise ValueError(f'unknown lr mode {mode!r}; valid: {", ".join(MODES)}')
    if iters_per_epoch < 1:
        raise ValueError('iters_per_epoch must be at least 1')
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
