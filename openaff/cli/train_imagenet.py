"""``train_imagenet.py``: train ImageNet AFF/iAFF-ResNet/ResNeXt as the released runs did
(every option of the original with its default), from ``.rec`` files, an image folder, or
synthetic data for smoke runs."""
from __future__ import annotations

import argparse
import os

import mxnet as mx

from ..engine import decay_epochs
from ..engine.reporting import ImageNetReport
from ..engine.tasks import Classification, Distillation
from ..models import AFFResNet, AFFResNeXt
from ..models.external import gluoncv_name, gluoncv_spec
from .args import (
    add_rec_options,
    add_run_args,
    add_step_decay_args,
    int_between,
    non_negative_int,
    positive_int,
)
from .checks import check_training_outputs
from .recipe_options import RecipeOptions
from .runtime import clamp_workers, shard_of
from .skeleton import TrainingCommand, run_training

LAYERS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 4, 36, 3]}
# the original train_imagenet.py's defaults and flag names where they differ from the recipe's
RECIPE = RecipeOptions(
    defaults=dict(num_epochs=240, lr=0.075, lr_mode='cosine', warmup_epochs=5, mixup_alpha=0.2,
                  mixup_off_epoch=5, dtype='float16', temperature=20, dist_timeout=300),
    flags=dict(step_factor='--lr-decay', save_period='--save-frequency'),
    helps=dict(dtype='float16 (with multi-precision) or float32'))


def build_parser():
    p = argparse.ArgumentParser(description='Train an ImageNet AFF network (Dai et al., 2021).')
    add = p.add_argument
    add('--data-dir', default='~/.mxnet/datasets/imagenet',
        help='image folder with train/ and val/ class subfolders')
    add_rec_options(p)
    add('--use-rec', action='store_true', help='read the .rec files with ImageRecordIter')
    add('--synthetic', action='store_true', help='train on generated data (smoke runs)')
    add('--summary', action='store_true', help='print parameters and FLOPs, then exit')
    add('--batch-size', type=positive_int, default=128, help='batch size per device')
    add('--r', type=positive_int, default=16, help='reduction ratio of the fusion')
    add('--model', default='resnet',
        help='resnet, resnext, or gluoncv:NAME for a GluonCV model-zoo baseline')
    add('--askc-type', default='ASKCFuse')
    add('--num-gpus', type=non_negative_int, default=4, help='0 trains on the CPU')
    add('-j', '--num-data-workers', dest='num_workers', type=non_negative_int, default=96)
    RECIPE.add_to(p)
    add_step_decay_args(p, '40,60')
    add('--last-gamma', action='store_true',
        help='zero-initialise the last BN gamma of each block (the ResNeXt models always were '
             'in the released runs: their block inverted the flag)')
    add('--mode', default='hybrid', choices=('hybrid', 'imperative'))
    add('--input-size', type=positive_int, default=224)
    add('--crop-ratio', type=float, default=0.875)
    add('--use-pretrained', action='store_true', help='start from the released checkpoint')
    add('--use-se', action='store_true')
    add('--teacher', default=None, help='GluonCV model name of a distillation teacher')
    add('--batch-norm', action='store_true', help='unused, as in the original')
    add('--save-dir', default='params')
    add('--resume-epoch', type=non_negative_int, default=0, help='with --resume-params: its epoch')
    add('--resume-params', default='')
    add('--resume-states', default='')
    add('--resume-from', default=None, help="'latest', a checkpoint JSON, or a .params file")
    add('--log-interval', type=positive_int, default=50)
    add('--logging-file', default='train_imagenet.log')
    add('--use-gn', action='store_true', help='unused, as in the original')
    add('--auto_aug', action='store_true', help='AutoAugment ImageNet policy (image folders)')
    add('--start-layer', type=int_between(1, 4), default=3)
    add('--num-layer', type=int, default=50, choices=sorted(LAYERS))
    add('--classes', type=positive_int, default=1000)
    add('--seed', type=int, default=None)
    add('--save-plot-dir', default=None, help='where to write the history PNG')
    add('--compare-log', default=None, help='an original log to draw in the history plot')
    add_run_args(p, scale_out=True)
    return p


def net_spec(opt):
    """(class, constructor arguments, original run name ``ImageNet-ASKCFuse-resnet--50-s-3``)."""
    if gluoncv_name(opt.model):
        builder, kwargs, name = gluoncv_spec(opt.model, opt.classes)
        return builder, kwargs, f'ImageNet-{name}'
    if opt.model not in ('resnet', 'resnext'):
        raise ValueError(f'--model must be resnet, resnext or gluoncv:NAME, got {opt.model!r}')
    common = dict(askc_type=opt.askc_type, start_layer=opt.start_layer,
                  layers=LAYERS[opt.num_layer], classes=opt.classes, r=opt.r)
    name = f'ImageNet-{opt.askc_type}-{opt.model}--{opt.num_layer}-s-{opt.start_layer}'
    if opt.model == 'resnet':
        return AFFResNet, dict(common, last_gamma=opt.last_gamma), name
    # the released ResNeXt runs trained with zero-init whatever the flag said
    return (AFFResNeXt, dict(common, cardinality=32, bottleneck_width=4, use_se=opt.use_se,
                             last_gamma=True), name)


def loaders(opt, batch_size, cluster=None):
    """Training and validation loaders of this worker's shard (all of it in one process).
    Synthetic data differ per worker; files are split with ``part_index/num_parts``."""
    from ..data import imagenet
    from ..engine.distributed import Cluster
    cluster = cluster or Cluster()
    size, workers = opt.input_size, clamp_workers(opt.num_workers)
    if opt.synthetic:
        return imagenet.synthetic_loaders(batch_size, size, opt.classes,
                                          seed=opt.seed + cluster.rank)
    train_parts, val_parts = shard_of(cluster, True), shard_of(cluster, False)
    if train_parts != val_parts:
        raise ValueError(f'--kvstore {cluster.kvstore} keeps validation on every worker, '
                         'which the ImageNet loaders cannot do: use dist_sync or horovod')
    if opt.use_rec:
        return imagenet.rec_loaders(
            *(os.path.expanduser(p) for p in (opt.rec_train, opt.rec_train_idx, opt.rec_val,
                                                opt.rec_val_idx)),
            batch_size, size, opt.crop_ratio, max(1, workers), *train_parts)
    return imagenet.folder_loaders(os.path.expanduser(opt.data_dir), batch_size, size,
                                   opt.crop_ratio, workers, opt.auto_aug, *train_parts)


def recipe_of(opt, seed, lr=None):
    return RECIPE.recipe(opt, lr=opt.lr if lr is None else lr,
                         step_epochs=tuple(decay_epochs(opt.num_epochs, opt.lr_decay_epoch,
                                                        opt.lr_decay_period)),
                         hybrid=opt.mode == 'hybrid', seed=seed)


def teacher_of(opt, contexts):
    if opt.teacher is None or opt.hard_weight >= 1.0:
        return None
    from ..models import resolve_network
    from ..models.registry import gluoncv_entry
    # --teacher takes a bare GluonCV name, as the original script did
    builder, kwargs = resolve_network(gluoncv_entry(opt.teacher), opt.classes, pretrained=True,
                                      ctx=contexts)
    teacher = builder(**kwargs)
    teacher.cast(opt.dtype)
    teacher.hybridize(static_alloc=True, static_shape=True)
    return teacher


def task_of(opt, classes, contexts):
    """Classification, distilled from ``--teacher`` when one is given and ``--hard-weight`` is
    below 1."""
    task = Classification(classes)
    teacher = teacher_of(opt, contexts)
    if teacher is None:
        return task
    return Distillation(task, teacher, opt.temperature, opt.hard_weight)


def prepare_net(opt, net, contexts):
    """Initialise (or load) on ``contexts`` and cast to ``--dtype``."""
    if opt.use_pretrained:
        from ..store import fetch_release, load_checkpoint
        from ..zoo import released_for
        release = released_for(type(net), askc_type=opt.askc_type).release
        load_checkpoint(net, fetch_release(release.path, release.blob_sha1), ctx=contexts)
    else:
        from ..engine import seed_everything
        seed_everything(opt.seed)
        net.initialize(mx.init.MSRAPrelu(), ctx=contexts)
    if opt.resume_params:
        from ..store import load_checkpoint
        load_checkpoint(net, opt.resume_params, ctx=contexts)
    net.cast(opt.dtype)


def check_teacher(name):
    if name is None:
        return
    from gluoncv.model_zoo import get_model_list
    if name.lower() not in get_model_list():
        raise ValueError(f'--teacher {name}: not a GluonCV model-zoo name (see '
                         f'gluoncv.model_zoo.get_model_list())')


def check_outputs(opt, model_name, recipe, net=None, chief=True):
    """Output folders writable, inputs there, no earlier run replaced unasked."""
    check_training_outputs(opt, model_name, recipe, RECIPE, net, chief,
                           dirs=[('--save-dir', opt.save_dir),
                                 ('--save-plot-dir', opt.save_plot_dir),
                                 ('--logging-file', os.path.dirname(opt.logging_file or ''))],
                           files=[('--compare-log', opt.compare_log),
                                  ('--resume-params', opt.resume_params),
                                  ('--resume-states', opt.resume_states)])
    check_teacher(opt.teacher)


def _resume_states(opt, engine):
    # --resume-params/--resume-states/--resume-epoch: the original way, still accepted
    if opt.resume_states:
        engine.trainer.load_states(opt.resume_states)


def _network(opt):
    builder, kwargs, name = net_spec(opt)
    return builder, kwargs, f'imagenet-{name}'


COMMAND = TrainingCommand(
    parse=lambda argv: build_parser().parse_args(argv),
    network=_network,
    recipe=recipe_of,
    check_outputs=check_outputs,
    loaders=lambda opt, batch, cluster: (*loaders(opt, batch, cluster), opt.classes),
    prepare=prepare_net,
    task=task_of,
    report=lambda opt: ImageNetReport(opt.log_interval),
    run_info=lambda opt: {'dataset': 'imagenet', 'input_size': opt.input_size},
    log_file=lambda opt, name: opt.logging_file,
    best_line=lambda log, best: log.info('best err-top1: %f', 1 - best),
    summary_size=lambda opt: opt.input_size,
    start_epoch=lambda opt: opt.resume_epoch,
    before_fit=_resume_states)


def main(argv=None):
    return run_training(COMMAND, argv)


if __name__ == '__main__':
    raise SystemExit(main())
