"""Argument types and option groups shared by the commands (devices, an earlier run, scale-out,
ImageNet record files), and their one-line errors."""
from __future__ import annotations

import argparse
import sys


def _int_of_at_least(low, words):
    def parse(text):
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f'must {words}, got {value}')
        return value
    parse.__name__ = 'int'  # what argparse calls the type in its messages
    return parse


def int_between(low, high):
    """An argparse ``type``: an ``int`` from ``low`` to ``high``."""
    def parse(text):
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f'must be from {low} to {high}, got {value}')
        return value
    parse.__name__ = 'int'
    return parse


positive_int = _int_of_at_least(1, 'be at least 1')
positive_int.__doc__ = 'An ``int`` of at least 1 (an argparse ``type``).'
non_negative_int = _int_of_at_least(0, 'not be negative')
non_negative_int.__doc__ = 'An ``int`` of at least 0 (an argparse ``type``).'


def non_negative_float(text):
    """A ``float`` of at least 0 (an argparse ``type``)."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must not be negative, got {text}')
    return value


def epoch_list(text):
    """Comma-separated epochs such as ``'300,450'`` (an argparse ``type``): checked, and kept as
    the text the original logs."""
    try:
        values = [int(part) for part in text.split(',') if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'not comma-separated epochs: {text!r}') from None
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f'epochs must not be negative: {text!r}')
    return text


def add_rec_options(parser):
    """``--rec-train``, ``--rec-train-idx``, ``--rec-val``, ``--rec-val-idx``: the ImageNet
    record files, with the original scripts' default locations."""
    from ..data.imagenet import DEFAULT_REC_FILES
    for dest, path in DEFAULT_REC_FILES.items():
        parser.add_argument('--' + dest.replace('_', '-'), default=path)


def rec_files_of(opt):
    """The record-file paths of :func:`add_rec_options`, by ``DEFAULT_REC_FILES`` key."""
    from ..data.imagenet import DEFAULT_REC_FILES
    return {key: getattr(opt, key) for key in DEFAULT_REC_FILES}


def add_devices_arg(parser, what='trains'):
    """``--devices``: the one way every command names its devices."""
    parser.add_argument('--devices', default=None, metavar='LIST',
                        help=f'devices it {what} on, e.g. gpu:0,gpu:1 or cpu:1,cpu:2 (overrides '
                             f'--gpus/--num-gpus; default: the GPUs those name, else the CPU)')


def add_run_args(parser, scale_out=False):
    """Options the training commands share for what happens to an earlier run in
    ``--save-dir``; with ``scale_out``, those of many devices and workers too
    (:func:`add_scale_out_args`)."""
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an earlier run of the same model in --save-dir (without '
                             'it, such a run is kept and the command refuses to start; '
                             '--resume-from latest continues it)')
    if scale_out:
        add_scale_out_args(parser)


def add_step_decay_args(parser, epochs):
    """The original scripts' step decay: ``--lr-decay-period`` and ``--lr-decay-epoch``
    (default ``epochs``, such as ``'300,450'``), read by :func:`openaff.engine.decay_epochs`."""
    parser.add_argument('--lr-decay-period', type=non_negative_int, default=0)
    parser.add_argument('--lr-decay-epoch', type=epoch_list, default=epochs)


def add_scale_out_args(parser):
    """Options for many devices and workers, and SyncBN (the recipe's
    ``--dist-timeout``, ``--dtype`` and ``--amp`` come with the recipe options)."""
    from ..engine.distributed import KVSTORES
    add = parser.add_argument
    add('--kvstore', default='device', choices=KVSTORES,
        help='gradient exchange: device/local/nccl in one process; dist_sync, dist_device_sync, '
             'dist_async under openaff-launch; horovod under horovodrun')
    add('--lr-scaling', default='none', choices=('none', 'linear'),
        help='linear: multiply --lr by the number of workers (the global batch grows with '
             'them); none: --lr is used as given')
    add('--syncbn', action='store_true',
        help='SyncBatchNorm: batch statistics over all GPUs of a worker instead of per GPU')
    add_devices_arg(parser)


def fail(message, status=2):
    """A one-line error instead of a traceback, for problems of the user's input; returns the
    exit status."""
    print(f'error: {message}', file=sys.stderr)
    return status
