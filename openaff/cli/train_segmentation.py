"""``train_segmentation.py``: train the paper's long-skip scenario, a segmentation network whose
feature-pyramid merges are plain additions, AFF or iAFF (Dai et al., WACV 2021), on digits
pasted on canvases (:func:`openaff.data.canvases.digit_canvases`), with the shared engine:
the same recipe options, checkpoints, resume, logs and plots as ``train_cifar.py``.

    python train_segmentation.py --merge AFF --seed 0
    python train_segmentation.py --merge add --seed 0      # the plain FPN on the same data
"""
from __future__ import annotations

import argparse
import os
import sys

import mxnet as mx

from ..data.canvases import CANVAS_CLASSES
from .args import add_devices_arg, add_run_args, non_negative_int, positive_int
from .checks import check_training_outputs
from .recipe_options import RecipeOptions
from .skeleton import TrainingCommand, run_training

MERGES = ('add', 'AFF', 'iAFF')
RECIPE = RecipeOptions(
    defaults=dict(num_epochs=10, lr=0.05, warmup_epochs=1, lr_mode='cosine'),
    exclude=('mixup', 'mixup_alpha', 'mixup_off_epoch', 'temperature', 'hard_weight', 'amp',
             'dist_timeout'))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0].split(': ', 1)[1])
    add = p.add_argument
    add('--merge', choices=MERGES, default='AFF', help='how the pyramid merges top-down')
    add('--askc-type', default='ASKCFuse', help="the backbone blocks' fusion")
    add('--blocks', type=positive_int, default=1, help='backbone blocks per stage')
    add('--channel-times', type=positive_int, default=2,
        help='backbone width multiplier of [16, 16, 32, 64]')
    add('--width', type=positive_int, default=32, help='pyramid width')
    add('--canvases', type=positive_int, default=800, help='training canvases')
    add('--val-canvases', type=positive_int, default=200, help='held-out canvases')
    add('--size', type=positive_int, default=40, help='canvas side (at least 20)')
    add('--foreground-weight', type=float, default=5.0,
        help='loss weight of object pixels relative to the background')
    add('--batch-size', type=positive_int, default=32, help='batch size per device')
    add('-j', '--num-data-workers', dest='num_workers', type=non_negative_int, default=0)
    add('--seed', type=int, default=None, help='random seed (logged; random when absent)')
    add('--gpus', default='', help='GPUs to use when present, e.g. 0')
    add_devices_arg(p)
    add('--save-dir', default='runs/segmentation')
    add('--logging-dir', default='runs/segmentation')
    add('--save-plot-dir', default='runs/segmentation')
    add('--resume-from', default=None, help="'latest', a checkpoint JSON, or a .params file")
    RECIPE.add_to(p)
    add_run_args(p)
    return p


def loaders(opt, seed, batch_size=None):
    """Training and held-out canvases (the held-out ones from the digits' test glyphs); the
    canvases are drawn from ``seed``, so that merges compared on one seed see the same data."""
    from mxnet import gluon

    from ..data.canvases import digit_canvases
    scales = (10, 20)
    train = digit_canvases(opt.canvases, size=opt.size, seed=seed, scales=scales)
    val = digit_canvases(opt.val_canvases, size=opt.size, train=False, seed=seed + 1000,
                         scales=scales)
    make = lambda arrays, shuffle: gluon.data.DataLoader(  # noqa: E731
        gluon.data.ArrayDataset(*arrays), batch_size=batch_size or opt.batch_size, shuffle=shuffle,
        last_batch='discard' if shuffle else 'keep', num_workers=opt.num_workers)
    return make(train, True), make(val, False)


def network(opt):
    """(builder, kwargs, run name) of the segmentation network the options describe."""
    from ..segmentation import segmentation_network
    if opt.size < 20:
        raise ValueError(f'--size must be at least 20 (the largest glyph), got {opt.size}')
    if not opt.foreground_weight > 0:
        raise ValueError(f'--foreground-weight must be above 0, got {opt.foreground_weight}')
    kwargs = dict(merge=opt.merge, askc_type=opt.askc_type, blocks=opt.blocks,
                  channel_times=opt.channel_times, width=opt.width)
    name = (f'canvases-{opt.merge}-FPN-{opt.askc_type}-resnet-{opt.blocks * 6 + 2}'
            f'-c-{opt.channel_times}')
    return segmentation_network, kwargs, name


def check_outputs(opt, model_name, recipe, net=None, chief=True):
    check_training_outputs(opt, model_name, recipe, RECIPE, net, chief,
                           dirs=[('--save-dir', opt.save_dir), ('--logging-dir', opt.logging_dir),
                                 ('--save-plot-dir', opt.save_plot_dir)])


def prepare(opt, net, contexts):
    from ..engine import seed_everything
    seed_everything(opt.seed)
    net.initialize(mx.init.Xavier(), ctx=contexts)


def task_of(opt, classes, contexts):
    from ..engine.tasks import Segmentation
    return Segmentation(classes, opt.foreground_weight)


def report_of(opt):
    from ..engine.reporting import SegmentationReport
    return SegmentationReport()


COMMAND = TrainingCommand(
    parse=lambda argv: build_parser().parse_args(argv),
    network=network,
    recipe=lambda opt, seed, lr: RECIPE.recipe(opt, seed=seed),
    check_outputs=check_outputs,
    loaders=lambda opt, batch, cluster: (*loaders(opt, opt.seed, batch), CANVAS_CLASSES),
    prepare=prepare,
    task=task_of,
    report=report_of,
    run_info=lambda opt: {'dataset': 'canvases'},
    log_file=lambda opt, name: os.path.join(opt.logging_dir, f'train_{name}.log'),
    best_line=lambda log, best: log.info('best_val_miou: %f', best),
    net_record=lambda builder, kwargs: {'function': 'segmentation_network', 'kwargs': kwargs})


def main(argv=None):
    return run_training(COMMAND, argv)

if __name__ == '__main__':
    sys.exit(main())
