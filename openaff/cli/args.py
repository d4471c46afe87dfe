"""Argument types and option groups shared by the commands, and their one-line errors."""
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


def fail(message, status=2):
    """A one-line error instead of a traceback, for problems of the user's input; returns the
    exit status."""
    print(f'error: {message}', file=sys.stderr)
    return status
