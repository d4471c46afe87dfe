"""The one skeleton of the training commands (``train_cifar.py``, ``train_imagenet.py``,
``train_segmentation.py``): cluster, devices, precision, network, seed, recipe, checks, data,
log, engine. A command is a :class:`TrainingCommand`: the few things it does its own way."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..data.errors import DatasetNotFoundError
from ..engine import Engine, Outputs
from ..engine.checkpoint import release_claims
from ..engine.distributed import DistributedError
from ..models import builder_name
from .args import fail
from .fitting import run_engine, start_log, summarize_and_exit
from .runtime import (
    apply_syncbn,
    contexts_of,
    resolve_precision,
    resolve_seed,
    scaled_lr,
    start_cluster,
)


def _class_record(builder, kwargs):
    return {'class': builder_name(builder), 'kwargs': kwargs}


@dataclass(frozen=True)
class TrainingCommand:
    """What one training command does its own way; :func:`run_training` does the rest.

    ``network(opt)`` -> (builder, kwargs, run name); ``recipe(opt, seed, lr)``;
    ``check_outputs(opt, run name, recipe, net, chief)``; ``loaders(opt, global batch,
    cluster)`` -> (train, val, classes); ``prepare(opt, net, contexts)`` initialises or loads
    the weights; ``task(opt, classes, contexts)`` what the engine trains for
    (:mod:`openaff.engine.tasks`, a distillation teacher included); ``report(opt)`` its log
    lines and best checkpoint's name (:mod:`openaff.engine.reporting`); ``run_info(opt)``
    what checkpoints record besides the network; ``log_file(opt, run name)``;
    ``best_line(log, best)`` the log's last line."""
    parse: Callable
    network: Callable
    recipe: Callable
    check_outputs: Callable
    loaders: Callable
    prepare: Callable
    task: Callable
    report: Callable
    run_info: Callable
    log_file: Callable
    best_line: Callable
    summary_size: Callable = lambda opt: 32
    net_record: Callable = _class_record
    start_epoch: Callable = lambda opt: 0
    before_fit: Callable = lambda opt, engine: None
    errors: tuple = (ValueError, DistributedError, DatasetNotFoundError, FileNotFoundError)


def run_training(command: TrainingCommand, argv=None) -> int:
    """Parse ``argv``, check everything that can be checked before any work (one ``error:``
    line, exit 2, on bad input), then train with the shared engine; returns the exit status."""
    opt = command.parse(argv)
    try:
        cluster = start_cluster(getattr(opt, 'kvstore', 'device'))
        contexts = contexts_of(opt, cluster)
        notes = []
        if not getattr(opt, 'summary', False):
            opt.dtype, notes = resolve_precision(opt.dtype, getattr(opt, 'amp', False), contexts)
        builder, kwargs, model_name = command.network(opt)
        net = builder(**kwargs)
        if getattr(opt, 'summary', False):
            return summarize_and_exit(net, command.summary_size(opt))
        apply_syncbn(net, getattr(opt, 'syncbn', False), contexts)
        opt.seed = cluster.broadcast_int(resolve_seed(opt.seed))
        lr = scaled_lr(opt.lr, getattr(opt, 'lr_scaling', 'none'), cluster)
        recipe = command.recipe(opt, opt.seed, lr)
        command.check_outputs(opt, model_name, recipe, net, cluster.is_chief)
        train, val, classes = command.loaders(opt, opt.batch_size * len(contexts), cluster)
        command.prepare(opt, net, contexts)
    except command.errors as err:
        release_claims()
        return fail(str(err))
    log = start_log(opt, command.log_file(opt, model_name), cluster.is_chief,
                    run=dict(devices=contexts, dtype=opt.dtype, amp=getattr(opt, 'amp', False),
                             cluster=cluster))
    for note in notes:
        log.info('%s', note)
    outputs = Outputs(model_name, opt.save_dir or '.', plot_dir=opt.save_plot_dir,
                      compare_log=getattr(opt, 'compare_log', None),
                      run_info={**command.run_info(opt),
                                'net': command.net_record(builder, kwargs)})
    engine = Engine(net, recipe, contexts, train, val, command.task(opt, classes, contexts),
                    command.report(opt), outputs, cluster=cluster)
    command.before_fit(opt, engine)
    return run_engine(engine, log, opt.resume_from, lambda best: command.best_line(log, best),
                      start_epoch=command.start_epoch(opt))
