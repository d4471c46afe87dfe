"""``openaff-compare`` (``python -m openaff.cli.compare``): train AFF/iAFF networks and GluonCV
baselines with one recipe, data and seeds, then tabulate and plot accuracy against cost.

    openaff-compare                                  # digits, 6 models, 3 seeds
    openaff-compare --dataset cifar100 --data-dir ~/data/cifar --epochs 200
    openaff-compare --models AFF-ResNet-20 cifar_resnet20_v2 --seeds 0 1
"""
from __future__ import annotations

import argparse
import os
import sys

from .args import fail, non_negative_int, positive_int


def build_parser():
    from ..apps.compare import DIGITS_EPOCHS, DIGITS_RECIPE
    p = argparse.ArgumentParser(prog='openaff-compare',
                                description=__doc__.split('\n')[0].split(': ', 1)[1])
    p.add_argument('--dataset', default='digits',
                   choices=('digits', 'cifar10', 'cifar100', 'imagenet'))
    p.add_argument('--data-dir', default=None)
    p.add_argument('--models', nargs='+', default=None,
                   help='names of the dataset\'s set (all of it by default); on CIFAR and '
                        'digits also AFF-Inception, Inception-concat, Inception-add')
    p.add_argument('--epochs', type=positive_int, default=DIGITS_EPOCHS)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--workers', type=non_negative_int, default=0)
    p.add_argument('--speed-batch', type=positive_int, default=64)
    p.add_argument('--repeats', type=positive_int, default=5)
    p.add_argument('--reuse', action='store_true',
                   help='collect finished runs instead of retraining')
    p.add_argument('--out', default='runs/compare')
    p.add_argument('--recipe', nargs=argparse.REMAINDER, default=DIGITS_RECIPE,
                   help='training options shared by every model (default: '
                        f'{" ".join(DIGITS_RECIPE)}), e.g. --recipe --lr 0.1 --mixup')
    return p


def run_args(opt, model_args, seed, run_dir):
    """The training command line of one (model, seed) run."""
    dirs = (['--save-dir', run_dir, '--logging-file', os.path.join(run_dir, 'train.log'),
             '--save-plot-dir', run_dir] if opt.dataset == 'imagenet' else
            ['--dataset', opt.dataset, '--save-dir', run_dir, '--logging-dir', run_dir,
             '--save-plot-dir', run_dir])
    data = ['--data-dir', opt.data_dir] if opt.data_dir else []
    return [*model_args, *dirs, *data, '--num-epochs', str(opt.epochs), '--seed', str(seed),
            '-j', str(opt.workers), *opt.recipe]


def train_runs(opt, label, model_args):
    """Train (or, with ``--reuse``, collect) every seed of one model with the training
    command; returns the run summaries and the last checkpoint record."""
    from ..apps.compare import finished_record, run_summary
    from . import train_cifar, train_imagenet
    command = train_imagenet if opt.dataset == 'imagenet' else train_cifar
    script = 'train_imagenet.py' if opt.dataset == 'imagenet' else 'train_cifar.py'
    runs, record = [], None
    for seed in opt.seeds:
        run_dir = os.path.join(opt.out, label, f'seed{seed}')
        argv = run_args(opt, model_args, seed, run_dir)
        record = finished_record(run_dir, opt.epochs) if opt.reuse else None
        if record is None:  # a fresh run replaces whatever an unfinished one left there
            if command.main([*argv, '--overwrite']) != 0:
                raise RuntimeError(f'training {label} (seed {seed}) failed')
            record = finished_record(run_dir, opt.epochs)
        runs.append(run_summary(record, seed, f'python {script} ' + ' '.join(argv)))
    return runs, record


def main(argv=None):
    from ..apps.compare import (
        CIFAR_SET,
        IMAGENET_SET,
        SAME_LAYER_SET,
        costs,
        finished_record,
        summarize_row,
        write_report,
    )
    opt = build_parser().parse_args(argv)
    default = IMAGENET_SET if opt.dataset == 'imagenet' else CIFAR_SET
    catalog = default if opt.dataset == 'imagenet' else {**CIFAR_SET, **SAME_LAYER_SET}
    unknown = [m for m in opt.models or [] if m not in catalog]
    if unknown:
        return fail(f'unknown models {unknown}; valid: {", ".join(catalog)}')
    chosen = opt.models or list(default)
    if opt.reuse and not any(finished_record(os.path.join(opt.out, label, f'seed{seed}'),
                                             opt.epochs)
                             for label in chosen for seed in opt.seeds):
        return fail(f'--reuse: no finished {opt.epochs}-epoch run under {opt.out} (leave out '
                    f'--reuse to train them)')
    rows = []
    for label in chosen:
        try:
            runs, record = train_runs(opt, label, catalog[label])
        except RuntimeError as err:  # the training command said why, in its own error line
            return fail(f'{err}; finished runs are kept (--reuse collects them)', status=1)
        rows.append(summarize_row(label, runs, costs(record, opt.speed_batch, opt.repeats)))
    stem = write_report(rows, opt.out, opt.dataset, opt.seeds, vars(opt))
    print(f'wrote {stem}.md, {stem}.json and {stem}.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
