"""``train_cifar.py``: train CIFAR AFF-ResNet/ResNeXt as the original runs did (every option of
the original with its default), on CIFAR-10/100 from local files or on the embedded digits."""
from __future__ import annotations

import argparse
import os

import mxnet as mx
from mxnet import gluon

from ..batchnorm import set_bn_momentum
from ..data import dataset_spec
from ..engine import decay_epochs
from ..engine.reporting import CifarReport
from ..engine.tasks import Classification
from ..models import CIFARAFFResNet, CIFARAFFResNeXt, CIFARInception
from ..models.external import gluoncv_name, gluoncv_spec
from ..models.inception import inception_merge
from .args import add_run_args, add_step_decay_args, int_between, non_negative_int, positive_int
from .checks import check_training_outputs
from .recipe_options import RecipeOptions
from .runtime import clamp_workers, shard_of
from .skeleton import TrainingCommand, run_training

DATASETS = ('cifar10', 'cifar100', 'digits')

# The embedded digits run (the Quick start's main job): a small AFF-ResNet and the original
# recipe's shape (linear warm-up, cosine to zero, label smoothing), sized to end in about three
# minutes on two CPU cores at >= 0.95 held-out accuracy with the running BatchNorm statistics
# (benchmarks/digits_seeds.py measures it over seeds). Options given on the command line win;
# the CIFAR defaults stay the original's.
DIGITS_DEFAULTS = dict(blocks=1, channel_times=1, num_epochs=20, batch_size=64, lr=0.1,
                       cosine=True, warmup_epochs=2, label_smoothing=True, no_wd=True,
                       num_workers=0, save_dir='runs/digits', logging_dir='runs/digits',
                       save_plot_dir='runs/digits')


# the original train_cifar.py's defaults and flag names where they differ from the recipe's;
# the schedule's mode, warm-up and decay epochs follow from --cosine and --lr-decay-epoch
RECIPE = RecipeOptions(
    defaults=dict(num_epochs=640, lr=0.2, warmup_epochs=10, mixup_alpha=1, mixup_off_epoch=40,
                  dist_timeout=300),
    flags=dict(step_factor='--lr-decay'),
    helps=dict(warmup_epochs='epochs of linear warm-up (with --cosine)'),
    exclude=('lr_mode', 'temperature', 'hard_weight'))


def build_parser():
    p = argparse.ArgumentParser(description='Train a CIFAR AFF network (Dai et al., WACV 2021).')
    add = p.add_argument
    add('--dataset', default='cifar100', choices=DATASETS,
        help='cifar10, cifar100, or digits (scikit-learn, embedded, 32x32), whose runs default '
             'to ' + ', '.join(f'{k}={v}' for k, v in DIGITS_DEFAULTS.items()))
    add('--data-dir', default=None,
        help='folder with the official CIFAR release (python or binary, unpacked or .tar.gz); '
             'without it gluon downloads to ~/.mxnet/datasets')
    add('--labels', default='fine', choices=('fine', 'coarse'),
        help='CIFAR-100 label set. The original silently trained on the 20 coarse labels')
    add('--batch-size', type=positive_int, default=128, help='training batch size per device')
    add('--askc-type', default='ASKCFuse',
        help='fusion: ASKCFuse (AFF), ResGlobLocaforGlobLocaCha (iAFF), DirectAdd, ...; for '
             '--model inception: AFF, concat or DirectAdd')
    add('--channel-times', type=positive_int, default=4,
        help='width multiplier of [16, 16, 32, 64]')
    add('--blocks', type=positive_int, default=1, help='blocks per stage')
    add('--start-layer', type=int_between(1, 3), default=1,
        help='first of the three stages with the fusion (earlier ones add plainly)')
    add('--summary', action='store_true', help='print parameters and FLOPs, then exit')
    add('--gpus', default='0,1,2,3', help='GPUs to use when present, e.g. 0,1')
    add('--model', default='resnet',
        help='resnet, resnext, inception (AFF-Inception, the same-layer scenario), or '
             'gluoncv:NAME for a GluonCV model-zoo baseline')
    add('-j', '--num-data-workers', dest='num_workers', type=non_negative_int, default=96,
        help='data loading processes (capped at the CPU count; 0 = in the main process)')
    RECIPE.add_to(p)
    add_step_decay_args(p, '300,450')
    add('--cosine', action='store_true', help='linear warm-up, then cosine decay')
    add('--drop-rate', type=float, default=0.0, help='unused, as in the original')
    add('--mode', default='hybrid', choices=('hybrid', 'imperative'))
    add('--save-dir', default='params')
    add('--logging-dir', default='logs')
    add('--resume-from', default=None, help="'latest', a checkpoint JSON, or a .params file")
    add('--save-plot-dir', default='.')
    add('--auto_aug', action='store_true', help='AutoAugment CIFAR-10 policy')
    add('--deep-stem', action='store_true')
    add('--seed', type=int, default=None, help='random seed (logged; random when absent)')
    add('--bn-branch-momentum', type=float, default=None,
        help='running-statistics momentum of the fusion branches\' BatchNorms (default 0.9)')
    add('--compare-log', default=None, help='an original log to draw in the history plot')
    add('--frozen-input-stats', action='store_true',
        help="the original's behaviour: the input BatchNorm's running statistics stay 0/1")
    add_run_args(p, scale_out=True)
    return p


def explicit_options(parser, argv):
    """The destinations of the options that ``argv`` sets itself."""
    sentinel = object()
    saved = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = sentinel
        given = parser.parse_args(argv)
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]
    return {dest for dest, value in vars(given).items() if value is not sentinel}


def parse_options(argv=None):
    """The command line, with the digits defaults where ``--dataset digits`` leaves an option
    unset."""
    parser = build_parser()
    opt = parser.parse_args(argv)
    if opt.dataset == 'digits':
        given = explicit_options(parser, argv)
        for dest, value in DIGITS_DEFAULTS.items():
            if dest not in given:
                setattr(opt, dest, value)
    return opt


def model_name_of(opt, layers, cardinality):
    prefix = f'{opt.dataset}-{opt.askc_type}'
    suffix = f'-c-{opt.channel_times}-s-{opt.start_layer}'
    if opt.model == 'resnet':
        return f'{prefix}-resnet-{sum(layers) * 2 + 2}{suffix}'
    if opt.model == 'inception':
        return f'{prefix}-inception-{sum(layers)}{suffix}'
    return f'{prefix}-resneXt-{sum(layers) * 3 + 2}-{cardinality}x4{suffix}'


def net_spec(opt, classes):
    """(class, constructor arguments, original run name such as
    ``cifar100-ASKCFuse-resnet-32-c-4-s-1``)."""
    if gluoncv_name(opt.model):
        builder, kwargs, name = gluoncv_spec(opt.model, classes)
        return builder, kwargs, f'{opt.dataset}-{name}'
    if opt.model not in ('resnet', 'resnext', 'inception'):
        raise ValueError(f'--model must be resnet, resnext, inception or gluoncv:NAME, got '
                         f'{opt.model!r}')
    layers = [opt.blocks] * 3
    channels = [c * opt.channel_times for c in (16, 16, 32, 64)]
    if opt.model == 'inception':
        inception_merge(opt.askc_type)  # a fusion it cannot merge with fails here
        if opt.deep_stem or opt.start_layer != 1:
            raise ValueError('--model inception fuses in every stage and has one stem: '
                             '--deep-stem and --start-layer do not apply')
        return (CIFARInception, dict(askc_type=opt.askc_type, layers=layers, channels=channels,
                                     classes=classes), model_name_of(opt, layers, None))
    cardinality = {64: 32, 128: 64}.get(channels[0])
    common = dict(askc_type=opt.askc_type, start_layer=opt.start_layer, layers=layers,
                  channels=channels, classes=classes, deep_stem=opt.deep_stem)
    if opt.model == 'resnext':
        if cardinality is None:
            raise ValueError('--model resnext needs --channel-times 4 or 8')
        return (CIFARAFFResNeXt, dict(common, cardinality=cardinality, bottleneck_width=4),
                model_name_of(opt, layers, cardinality))
    common['track_input_stats'] = not opt.frozen_input_stats
    return CIFARAFFResNet, common, model_name_of(opt, layers, cardinality)


def datasets(opt):
    """(train dataset, val dataset, classes) with transforms applied to the images."""
    from ..data import SplitOptions, dataset_spec
    spec = dataset_spec(opt.dataset)
    train, val = spec.splits(SplitOptions(data_dir=opt.data_dir, labels=opt.labels,
                                          augment=True, auto_aug=opt.auto_aug))
    return train, val, spec.classes

def loaders(opt, batch_size, cluster=None):
    """Training and validation loaders of this worker's shard (all of it in one process)."""
    from ..data.sampler import ShardSampler
    from ..engine.distributed import Cluster
    cluster = cluster or Cluster()
    train, val, classes = datasets(opt)
    workers = clamp_workers(opt.num_workers)
    train_loader = gluon.data.DataLoader(
        train, batch_size=batch_size, last_batch='discard', num_workers=workers,
        sampler=ShardSampler(len(train), *shard_of(cluster, True), shuffle=True, even=True))
    val_loader = gluon.data.DataLoader(
        val, batch_size=batch_size, num_workers=workers,
        sampler=ShardSampler(len(val), *shard_of(cluster, False)))
    return train_loader, val_loader, classes


def recipe_of(opt, seed, lr=None):
    """The :class:`~openaff.engine.Recipe` of parsed options: the schedule as the original
    script built it (warm-up only with --cosine; step decay at the start of an epoch)."""
    warmup = opt.warmup_epochs if opt.cosine else 0
    # as the original: decay epochs are counted with the warm-up subtracted, even without it
    steps = [e - (opt.warmup_epochs - warmup)
             for e in decay_epochs(opt.num_epochs, opt.lr_decay_epoch, opt.lr_decay_period)]
    return RECIPE.recipe(opt, lr=opt.lr if lr is None else lr,
                         lr_mode='cosine' if opt.cosine else 'epoch_step',
                         warmup_epochs=warmup, step_epochs=tuple(steps),
                         hybrid=opt.mode == 'hybrid', seed=seed)


def check_outputs(opt, model_name, recipe, net=None, chief=True):
    """Output folders writable, the compare log there, no earlier run replaced unasked."""
    check_training_outputs(opt, model_name, recipe, RECIPE, net, chief,
                           dirs=[('--save-dir', opt.save_dir), ('--logging-dir', opt.logging_dir),
                                 ('--save-plot-dir', opt.save_plot_dir)],
                           files=[('--compare-log', opt.compare_log)])


def prepare(opt, net, contexts):
    """Fusion-branch BatchNorm momentum, then fresh weights from the run's seed."""
    from ..engine import seed_everything
    if opt.bn_branch_momentum is not None:
        set_bn_momentum(net, opt.bn_branch_momentum)
    seed_everything(opt.seed)
    net.initialize(mx.init.Xavier(), ctx=contexts)
    if opt.dtype != 'float32':
        net.cast(opt.dtype)


COMMAND = TrainingCommand(
    parse=parse_options,
    network=lambda opt: net_spec(opt, dataset_spec(opt.dataset).classes),
    recipe=recipe_of,
    check_outputs=check_outputs,
    loaders=loaders,
    prepare=prepare,
    task=lambda opt, classes, contexts: Classification(classes),
    report=lambda opt: CifarReport(),
    run_info=lambda opt: {'dataset': opt.dataset, 'labels': opt.labels},
    log_file=lambda opt, name: (os.path.join(opt.logging_dir, f'train_{name}.log')
                                if opt.logging_dir else None),
    best_line=lambda log, best: log.info('best_val_score: %f', best))


def main(argv=None):
    return run_training(COMMAND, argv)


if __name__ == '__main__':
    raise SystemExit(main())
