"""The training recipe: every option of the original scripts that says *how* a network is
trained, declared once with its type, default, help and validation. Both training scripts
generate their command-line options from these declarations
(:class:`openaff.cli.recipe_options.RecipeOptions`, with each task's own defaults and original
flag names), and the engine reads the resulting :class:`Recipe`, never a command line.

Adding an option: a field here, and the engine code that reads it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

__all__ = ['Recipe', 'check_recipe', 'recipe_record']


def _option(default, help, flag=True, check=None, choices=None, metavar=None):
    """A recipe field: ``flag`` False for fields a task derives from its own options;
    ``check(value)`` returns an error message or None."""
    return field(default=default, metadata=dict(help=help, flag=flag, check=check,
                                                choices=choices, metavar=metavar))


def _at_least(low):
    return lambda v: None if v >= low else f'must be at least {low}, got {v}'


def _finite_at_least(low):
    return lambda v: None if math.isfinite(v) and v >= low else \
        f'must be a finite number of at least {low}, got {v}'


def _fraction(v):
    return None if 0 <= v <= 1 else f'must lie in [0, 1], got {v}'


def _positive(v):
    return None if math.isfinite(v) and v > 0 else f'must be a finite number above 0, got {v}'


@dataclass
class Recipe:
    """Everything about how a network is trained (the original scripts' options)."""
    num_epochs: int = _option(1, 'epochs to train', check=_at_least(1))
    lr: float = _option(0.1, 'base learning rate (of the whole global batch)',
                        check=_finite_at_least(0))
    momentum: float = _option(0.9, 'NAG momentum', check=_fraction)
    wd: float = _option(1e-4, 'weight decay', check=_finite_at_least(0))
    optimizer: str = _option('nag', 'optimizer', flag=False)
    lr_mode: str = _option('step', 'learning-rate schedule after the warm-up',
                           choices=('cosine', 'step', 'poly', 'linear'))
    warmup_epochs: int = _option(0, 'epochs of linear warm-up', check=_at_least(0))
    warmup_lr: float = _option(0.0, 'learning rate the warm-up starts from',
                               check=_finite_at_least(0))
    step_epochs: tuple = _option((), 'epochs at which a step schedule decays', flag=False)
    step_factor: float = _option(0.1, 'factor of each step decay', check=_positive)
    mixup: bool = _option(False, 'mixup (Zhang et al., 2018)')
    mixup_alpha: float = _option(1.0, 'Beta(alpha, alpha) of the mixup weight', check=_positive)
    mixup_off_epoch: int = _option(0, 'last epochs trained without mixup', check=_at_least(0))
    label_smoothing: bool = _option(False, 'label smoothing 0.1')
    no_wd: bool = _option(False, 'no weight decay on BN gamma/beta and biases')
    dtype: str = _option('float32', 'float32, or float16 with multi-precision (GPUs)',
                         choices=('float32', 'float16'))
    amp: bool = _option(False, 'automatic mixed precision (mxnet.contrib.amp): float16 on GPUs, '
                               'bfloat16 on CPUs; set up by the script before the network')
    hybrid: bool = _option(True, 'hybridize the network', flag=False)
    precise_bn: int = _option(0, 're-estimate BatchNorm statistics over N training batches '
                                 'before each evaluation (0: off)', check=_at_least(0),
                              metavar='N')
    seed: int = _option(0, 'random seed', flag=False)
    save_period: int = _option(10, 'keep every N-th epoch checkpoint', check=_at_least(1))
    temperature: float = _option(20.0, 'distillation temperature', check=_positive)
    hard_weight: float = _option(0.5, 'weight of the hard-label loss in distillation',
                                 check=_fraction)
    dist_timeout: float = _option(300.0, 'a distributed worker that makes no progress for this '
                                         'long exits with an error (a peer died); 0 waits '
                                         'forever', check=_finite_at_least(0),
                                  metavar='SECONDS')

    @property
    def smoothing(self):
        return 0.1 if self.label_smoothing else 0.0

    def __post_init__(self):
        check_recipe(self)


def check_recipe(recipe):
    """``ValueError`` naming the first field whose value its declaration refuses."""
    for spec in fields(recipe):
        check = spec.metadata.get('check')
        problem = check(getattr(recipe, spec.name)) if check else None
        if problem:
            raise ValueError(f'{spec.name}: {problem}')


def recipe_record(recipe):
    """The recipe as a checkpoint record stores it (JSON types: tuples become lists)."""
    return json.loads(json.dumps(asdict(recipe)))

