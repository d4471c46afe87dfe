"""Where and how a training command computes, settled from its options: the cluster of
workers, this process's devices, the precision they can train in, SyncBN, the worker's shard of
the data, data-loading processes, the seed and the learning rate's scaling."""
from __future__ import annotations

import os
import random

from ..engine.devices import cpu_runs_bfloat16, default_devices, parse_devices


def contexts_of(opt, cluster=None):
    """The devices of this process: ``--devices`` when given, else the original scripts'
    ``--gpus`` / ``--num-gpus`` (this worker's share of them when several workers share a
    host), the CPU when there is no GPU. ``ValueError`` names a bad ``--devices``."""
    named = None
    if getattr(opt, 'devices', None):
        try:
            named = parse_devices(opt.devices)
        except ValueError as err:
            raise ValueError(f'--devices {opt.devices}: {err}') from None
        if cluster is None:
            return named
    local = dict(local_rank=cluster.local_rank, local_size=cluster.local_size) if cluster else {}
    default = default_devices(gpus=getattr(opt, 'gpus', None),
                              num_gpus=getattr(opt, 'num_gpus', None), **local)
    return cluster.contexts(default, named) if cluster else default


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
        if on_cpu and not cpu_runs_bfloat16():
            raise ValueError('--amp on CPUs trains in bfloat16, whose oneDNN kernels need '
                             'AVX-512, which this CPU lacks: train in float32 (drop --amp)')
        mx_amp.init(target_dtype=target)
        notes.append(f'AMP: {target} where mxnet.contrib.amp deems it safe, float32 elsewhere')
    return dtype, notes


def apply_syncbn(net, syncbn, contexts):
    """``--syncbn``: one SyncBatchNorm over the worker's GPUs (a no-op on one device)."""
    if not syncbn or len(contexts) < 2:
        return
    if any(c.device_type == 'cpu' for c in contexts):
        # see openaff.batchnorm._SYNC_DEVICE_TYPES: one worker thread per CPU device and
        # workspaces shared by all of them (measured: training hangs in its first step)
        raise ValueError('--syncbn synchronises GPUs: on CPU devices mxnet 1.9.1 deadlocks in '
                         'SyncBatchNorm (one worker thread per CPU device, shared workspaces)')
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


def clamp_workers(requested):
    """The original default (96 workers) on a small machine only adds processes."""
    return max(0, min(requested, os.cpu_count() or 1))


def resolve_seed(seed):
    return seed if seed is not None else random.SystemRandom().randrange(2 ** 31)
