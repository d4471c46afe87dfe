"""Pieces both training scripts share: devices, logging set-up, one-line errors."""
from __future__ import annotations

import os
import random
import sys

import mxnet as mx

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


def start_log(opt, log_file):
    """The original first line: the option Namespace."""
    log = setup_logging(log_file)
    log.info('%s', opt)
    return log


def fail(message):
    """A one-line error instead of a traceback, for problems of the user's input."""
    print(f'error: {message}', file=sys.stderr)
    return 2
