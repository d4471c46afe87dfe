"""Argument types and option groups shared by the commands, and their one-line errors."""
from __future__ import annotations

import argparse
import sys


def positive_int(text):
    """An ``int`` of at least 1 (an argparse ``type``)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def non_negative_int(text):
    """An ``int`` of at least 0 (an argparse ``type``)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must not be negative, got {value}')
    return value


def non_negative_float(text):
    """A ``float`` of at least 0 (an argparse ``type``)."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must not be negative, got {text}')
    return value


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


def fail(message, status=2):
    """A one-line error instead of a traceback, for problems of the user's input; returns the
    exit status."""
    print(f'error: {message}', file=sys.stderr)
    return status
