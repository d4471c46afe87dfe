"""Validation curves of training logs in the original format over each other, e.g. a
reproduction against a released run of ``../shared/reference/original_logs``:

    openaff-plotlog logs/train_cifar100-ASKCFuse-resnet-32-c-4-s-1.log \\
        ../shared/reference/original_logs/cifar100__AFF-ResNet-32__train_cifar100-....log -o cmp.png
"""
from __future__ import annotations

import os

from ..engine.history import parse_log
from ..plotting import pyplot


def plot_logs(paths, output, labels=None):
    """Validation accuracy per epoch of every log in ``paths``, one line each, to ``output``
    (``.png`` appended when it has no extension, as savefig does); returns the path written.
    Every log is read before anything is drawn or written."""
    labels = labels or [os.path.basename(p) for p in paths]
    curves = []
    for path in paths:
        curve = parse_log(path)
        if not curve:
            raise ValueError(f'{path}: no "[Epoch N] ... val=" or "validation: err-top1=" lines')
        curves.append(curve)
    output = os.fspath(output)
    if not os.path.splitext(output)[1]:
        output += '.png'
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for curve, label in zip(curves, labels):
        ax.plot(list(curve), list(curve.values()),
                label=f'{label} (last {list(curve.values())[-1]:.4f})')
    ax.set_xlabel('epoch')
    ax.set_ylabel('validation accuracy')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output

