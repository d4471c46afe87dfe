"""Validation curves of training logs in the original format over each other, e.g. a
reproduction against a released run of ``../shared/reference/original_logs``:

    python -m openaff.plotlog logs/train_cifar100-ASKCFuse-resnet-32-c-4-s-1.log \\
        ../shared/reference/original_logs/cifar100__AFF-ResNet-32__train_cifar100-....log -o cmp.png
"""
from __future__ import annotations

import os
import sys

from .engine.history import parse_log
from .plotting import pyplot


def plot_logs(paths, output, labels=None):
    """Validation accuracy per epoch of every log in ``paths``, one line each, to ``output``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for path, label in zip(paths, labels or [os.path.basename(p) for p in paths]):
        curve = parse_log(path)
        if not curve:
            raise ValueError(f'{path}: no "[Epoch N] ... val=" or "validation: err-top1=" lines')
        ax.plot(list(curve), list(curve.values()), label=f'{label} (last {list(curve.values())[-1]:.4f})')
    ax.set_xlabel('epoch')
    ax.set_ylabel('validation accuracy')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


if __name__ == '__main__':
    from .cli.plotlog import main
    sys.exit(main())
