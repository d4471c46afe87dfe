"""Device lists: parsing ``--devices`` (``cpu:1,cpu:2``, ``gpu:0,gpu:1``), the original
scripts' ``--gpus`` / ``--num-gpus``, and helpers that read a parameter on whichever devices
it lives.

A GPU list never contains ``cpu(0)``, so every path that runs on several GPUs is exercised on
CPU stand-ins such as ``[cpu(1), cpu(2)]``: any code that assumes ``cpu(0)`` (``param.data()``
without a context, ``as_in_context(mx.cpu())`` of a gradient) fails there as it would on GPUs.
"""
from __future__ import annotations

import mxnet as mx

__all__ = ['parse_devices', 'default_devices', 'describe_devices', 'first_copy',
           'all_on_cpu', 'cpu_runs_bfloat16']

_KINDS = {'cpu': mx.cpu, 'gpu': mx.gpu}


def parse_devices(text: str) -> list:
    """The contexts of a comma list such as ``'gpu:0,gpu:1'`` or ``'cpu:1,cpu:2'`` (``cpu``
    alone is ``cpu:0``). ``ValueError`` names the bad entry, a repeated device or a GPU that
    this MXNet does not see."""
    contexts = []
    for entry in (part.strip() for part in str(text).split(',')):
        if not entry:
            continue
        kind, _, index = entry.partition(':')
        if kind not in _KINDS or (index and not index.isdigit()):
            raise ValueError(f'device {entry!r}: write cpu:N or gpu:N (e.g. gpu:0,gpu:1)')
        context = _KINDS[kind](int(index or 0))
        if context in contexts:
            raise ValueError(f'device {entry!r} is listed twice')
        contexts.append(context)
    if not contexts:
        raise ValueError(f'no device in {text!r}: write e.g. gpu:0,gpu:1 or cpu')
    gpus = [c for c in contexts if c.device_type == 'gpu']
    if gpus:
        available = mx.context.num_gpus()
        missing = [c for c in gpus if c.device_id >= available]
        if missing:
            raise ValueError(f'{", ".join(f"gpu:{c.device_id}" for c in missing)}: MXNet sees '
                             f'{available} GPU(s) on this machine'
                             + ('' if available else ' (a CUDA build of mxnet, e.g. '
                                                     'mxnet-cu112, is needed for GPUs)'))
    if len({c.device_type for c in contexts}) > 1:
        raise ValueError(f'{text!r} mixes CPUs and GPUs: one training step runs on one kind')
    return contexts


def default_devices(gpus=None, num_gpus=None, local_rank=0, local_size=1):
    """The original scripts' choice: the GPUs named by ``gpus`` ('0,1') or counted by
    ``num_gpus`` that exist, the CPU when there are none. With ``local_size`` workers on one
    host (parameter-server workers started together) each takes its own share of them, so two
    workers do not train on the same GPUs."""
    available = mx.context.num_gpus()
    if num_gpus is not None:
        ids = list(range(min(num_gpus, available)))
    else:
        ids = [int(i) for i in str(gpus or '').split(',') if i.strip() and int(i) < available]
    if ids and local_size > 1:
        share = len(ids) // local_size
        if share == 0:
            raise ValueError(f'{local_size} workers on this host share {len(ids)} GPU(s): give '
                             f'each worker its own with --devices or fewer workers per host')
        ids = ids[local_rank * share:(local_rank + 1) * share]
    return [mx.gpu(i) for i in ids] or [mx.cpu()]


def describe_devices(contexts) -> str:
    """``'gpu:0,gpu:1'``: the form ``--devices`` takes."""
    return ','.join(f'{c.device_type}:{c.device_id}' for c in contexts)


def all_on_cpu(contexts) -> bool:
    return all(c.device_type in ('cpu', 'cpu_pinned', 'cpu_shared') for c in contexts)


def first_copy(param):
    """A parameter's value on the first device it lives on (``param.data()`` without a
    context asks for the current default context, ``cpu(0)``, which a GPU list lacks)."""
    return param.list_data()[0]


def cpu_runs_bfloat16() -> bool:
    """Whether this CPU can run oneDNN's bfloat16 convolutions (AMP on CPUs): they need
    AVX-512 (oneDNN's avx512_core); without it mxnet 1.9.1 fails at the first convolution with
    "could not create a primitive descriptor iterator". True where the flags cannot be read."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as handle:
            flags = next((line for line in handle if line.startswith('flags')), None)
    except OSError:
        return True
    if flags is None:
        return True
    words = set(flags.split())
    return {'avx512f', 'avx512bw', 'avx512vl', 'avx512dq'} <= words
