"""What both training commands share: devices, precision, scale-out options, logging set-up and
the fit-and-report step."""
from __future__ import annotations

import os
import random
import sys
import traceback

import mxnet as mx

from .args import fail
from ..engine import setup_logging


def contexts_from(gpus=None, num_gpus=None):
    """GPUs named by ``gpus`` ('0,1') or counted by ``num_gpus``; the CPU when there are none."""
    available = mx.context.num_gpus()
    if num_gpus is not None:
        ids = list(range(min(num_gpus, available)))
    else:
        ids = [int(i) for i in str(gpus or '').split(',') if i.strip() and int(i) < available]
    return [mx.gpu(i) for i in ids] or [mx.cpu()]


def clamp_workers(requested):
    """The original default (96 workers) on a small machine only adds processes."""
    return max(0, min(requested, os.cpu_count() or 1))


def resolve_seed(seed):
    return seed if seed is not None else random.SystemRandom().randrange(2 ** 31)


def start_log(opt, log_file, chief=True):
    """The original first line: the option Namespace. Distributed workers other than rank 0
    keep no log file and print warnings and errors only."""
    import logging
    log = setup_logging(log_file if chief else None, logging.INFO if chief else logging.WARNING)
    log.info('%s', opt)
    return log


def add_scale_out_args(parser):
    """Options both scripts share for many devices and workers, and SyncBN (the recipe's
    ``--dist-timeout``, ``--dtype`` and ``--amp`` come with the recipe options)."""
    from ..engine.distributed import KVSTORES
    add = parser.add_argument
    add('--kvstore', default='device', choices=KVSTORES,
        help='gradient exchange: device/local/nccl in one process; dist_sync, dist_device_sync, '
             'dist_async under python -m openaff.launch; horovod under horovodrun')
    add('--lr-scaling', default='none', choices=('none', 'linear'),
        help='linear: multiply --lr by the number of workers (the global batch grows with '
             'them); none: --lr is used as given')
    add('--syncbn', action='store_true',
        help='SyncBatchNorm: batch statistics over all GPUs of a worker instead of per GPU')


def summarize_and_exit(net, input_size=32):
    """``--summary``: print the parameter and FLOP table of ``net`` instead of training."""
    from ..summary import summarize
    net.initialize(mx.init.Xavier())
    result = summarize(net, (1, 3, input_size, input_size))
    print(result.table())
    print(result.totals())
    return 0


def start_cluster(kvstore):
    """The :class:`~openaff.engine.distributed.Cluster` of this process; set-up errors name
    the option."""
    from ..engine.distributed import Cluster, DistributedError
    try:
        return Cluster.create(kvstore)
    except DistributedError as err:
        raise DistributedError(f'--kvstore {kvstore} {err}') from None


def resolve_precision(dtype, amp, contexts):
    """``(dtype, notes)``: the precision the devices can train in, with notes for the log.
    float16 falls back to float32 on CPUs (mxnet 1.9.1 has no float16 GEMM there); AMP keeps
    the network float32 and must be set up before the network is built, so this runs first."""
    notes = []
    on_cpu = all(c.device_type == 'cpu' for c in contexts)
    if amp and dtype != 'float32':
        notes.append(f'--amp chooses the precision per operator: the network stays float32 '
                     f'(--dtype {dtype} ignored)')
        dtype = 'float32'
    if dtype != 'float32' and on_cpu:
        notes.append(f'{dtype} needs a GPU (mxnet 1.9.1 has no float16 GEMM on the CPU): '
                     'training in float32')
        dtype = 'float32'
    if amp:
        from mxnet.contrib import amp as mx_amp
        target = 'bfloat16' if on_cpu else 'float16'
        mx_amp.init(target_dtype=target)
        notes.append(f'AMP: {target} where mxnet.contrib.amp deems it safe, float32 elsewhere')
    return dtype, notes


def apply_syncbn(net, syncbn, contexts):
    """``--syncbn``: one SyncBatchNorm over the worker's GPUs (a no-op on one device)."""
    if not syncbn or len(contexts) < 2:
        return
    if any(c.device_type == 'cpu' for c in contexts):
        raise ValueError('--syncbn synchronises GPUs; on CPU contexts mxnet 1.9.1 deadlocks')
    from ..batchnorm import use_sync_batchnorm
    use_sync_batchnorm(net, len(contexts))


def scaled_lr(lr, scaling, cluster):
    """``--lr-scaling linear`` multiplies the learning rate by the number of workers."""
    return lr * cluster.size if scaling == 'linear' else lr


def shard_of(cluster, train):
    """(num_parts, part_index) of this worker's data: training is always split; validation
    too when the workers can sum their metrics (not under dist_async)."""
    if train or cluster.can_reduce:
        return cluster.size, cluster.rank
    return 1, 0


def run_engine(engine, log, resume_from, report_best, start_epoch=0):
    """Fit, then report the best validation accuracy. A missing resume file is a one-line
    error. A distributed worker that fails exits at once: waiting in ps-lite's or Horovod's
    shutdown for peers that are gone (or that wait for it) would hang the job."""
    try:
        records = engine.fit(resume_from=resume_from, start_epoch=start_epoch)
    except FileNotFoundError as err:
        return fail(f'--resume-from {resume_from}: {err}' if resume_from else str(err))
    except Exception as err:  # pylint: disable=broad-except
        if not engine.cluster.distributed:
            raise
        if type(err).__name__ in _PEER_FAILURES:
            fail(f'{engine.cluster.describe()}: {type(err).__name__}: {err} '
                 f'(another worker has probably died)')
        else:
            traceback.print_exc()
        _exit_now(3)
    best = max(r['val_acc'] for r in records) if records else engine.best
    report_best(best if best is not None else float('nan'))
    return 0


def _exit_now(status):
    import logging
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# what a collective raises when a peer is gone
_PEER_FAILURES = ('HorovodInternalError', 'HostsUpdatedInterrupt', 'MXNetError')
