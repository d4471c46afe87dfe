"""What people look at: per-epoch history (JSON-able), the error-curve PNG, and the
comparison of a run with an original open-aff training log."""
from __future__ import annotations

import re

from ..plotting import pyplot

CIFAR_LINE = re.compile(r'\[Epoch (\d+)\] train=([\d.]+) val=([\d.]+)')
IMAGENET_LINE = re.compile(r'\[Epoch (\d+)\] validation: err-top1=([\d.]+)')


def parse_log(path):
    """Validation accuracy per epoch from a log in the original format (CIFAR lines
    ``[Epoch N] train=... val=...`` or ImageNet ``[Epoch N] validation: err-top1=...``).
    Restarted runs log some epochs twice: the last value wins."""
    accuracy = {}
    with open(path, errors='replace') as handle:
        for line in handle:
            # the original logs sometimes glue two lines together: scan every match
            for match in CIFAR_LINE.finditer(line):
                accuracy[int(match.group(1))] = float(match.group(3))
            for match in IMAGENET_LINE.finditer(line):
                accuracy[int(match.group(1))] = 1 - float(match.group(2))
    return dict(sorted(accuracy.items()))


class History:
    """Per-epoch records (dicts) with a plot of training and validation error."""

    def __init__(self, records=None):
        self.records = list(records or [])

    def add(self, **record):
        self.records.append(record)

    def column(self, key):
        return [r.get(key) for r in self.records]

    def plot(self, path, title='', compare_log=None, score='val_acc'):
        """Write the error curves (and an original run's validation error) to ``path``; the
        validation error is one minus the records' held-out ``score``."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.5))
        epochs = self.column('epoch')
        ax.plot(epochs, [1 - a for a in self.column('train_acc')], label='training error')
        held_out = 'validation error' if score == 'val_acc' else f'validation 1 - {score[4:]}'
        ax.plot(epochs, [1 - a for a in self.column(score)], label=held_out)
        if compare_log:
            reference = parse_log(compare_log)
            ax.plot(list(reference), [1 - a for a in reference.values()], '--',
                    label='original run: validation error')
        ax.set_xlabel('epoch')
        ax.set_ylabel('error')
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
