"""The benchmark's rows: a table, a JSON file and a PNG (throughput against FLOPs and
parameters)."""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass

import mxnet as mx

from ..._threads import mxnet_threads
from ...models.external import display_name

NAN = float('nan')


@dataclass
class Result:
    """One row. Ratios are the other step's time / this row's time (above 1: this row is
    faster), from rounds that time the two back to back in alternating order (see
    :func:`~openaff.apps.benchmark.balanced_ratio`), so that drift in the machine's speed and
    the order cancel; the absolute figures are medians over the rounds.

    ``infer_ratio`` and the others compare with the baseline run the same way (same runtime
    and precision); ``add_*`` with the same network with plain addition, run the same way;
    ``own_infer_ratio`` with this network in MXNet at the benchmark's float precision (the
    speed-up INT8 or another runtime gives)."""
    model: str
    params_m: float
    gflops: float
    infer_ips: float = 0.0
    train_ips: float = 0.0
    latency_ms: float = 0.0
    memory_mb: float = 0.0
    infer_ratio: float = 1.0
    train_ratio: float = NAN
    latency_ratio: float = 1.0
    add_infer_ratio: float = NAN
    add_train_ratio: float = NAN
    own_infer_ratio: float = NAN


#: (header, width, Result field, decimals); 'flops_ratio' is this row's GFLOPs / the baseline's
COLUMNS = (('infer x', 7, 'infer_ratio', 3), ('train x', 7, 'train_ratio', 3),
           ('b1 x', 6, 'latency_ratio', 3), ('infer x add', 11, 'add_infer_ratio', 3),
           ('train x add', 11, 'add_train_ratio', 3), ('x own f32', 9, 'own_infer_ratio', 3),
           ('img/s', 7, 'infer_ips', 1), ('train img/s', 11, 'train_ips', 1),
           ('b1 ms', 7, 'latency_ms', 1), ('GFLOPs', 6, 'gflops', 2),
           ('params M', 8, 'params_m', 2), ('FLOPs x', 7, 'flops_ratio', 3),
           ('peak MB', 7, 'memory_mb', 0))


def table(results, baseline):
    """The rows as a text table; the ``x own f32`` column only when a row has a value."""
    base = next((r for r in results if r.model == baseline), results[0])
    columns = [c for c in COLUMNS if c[2] != 'own_infer_ratio' or any(
        r.own_infer_ratio == r.own_infer_ratio for r in results)]
    width = max(30, max(len(r.model) for r in results) + 1)

    def cell(row, field, decimals):
        value = row.gflops / base.gflops if field == 'flops_ratio' else getattr(row, field)
        return f'{value:.{decimals}f}'
    header = f'{"model":<{width}}' + ''.join(f' {name:>{size}}' for name, size, _, _ in columns)
    lines = [header, '-' * len(header)]
    for r in results:
        lines.append(f'{r.model:<{width}}' + ''.join(
            f' {cell(r, field, decimals):>{size}}' for _, size, field, decimals in columns))
    return '\n'.join(lines)


def plot(results, path):
    from ...plotting import pyplot
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], 'gflops', 'GFLOPs'), (axes[1], 'params_m', 'parameters (M)')):
        for r in results:
            ax.scatter(getattr(r, key), r.infer_ips)
            ax.annotate(display_name(r.model), (getattr(r, key), r.infer_ips),
                        fontsize=7, xytext=(3, 3), textcoords='offset points')
        ax.set_xlabel(label)
        ax.set_ylabel('inference images/s')
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine():
    """The machine the numbers come from (its CPU's INT8 instructions included)."""
    return {'platform': platform.platform(),
            'processor': platform.processor() or platform.machine(),
            'cpu_int8_instructions': cpu_int8_instructions(),
            'cpus': os.cpu_count(), 'mxnet_cpu_threads': mxnet_threads(), 'mxnet': mx.__version__,
            'gpus': mx.context.num_gpus()}


def cpu_int8_instructions():
    """The CPU's vector instructions oneDNN's INT8 kernels use (AVX-512 VNNI, AMX), or 'AVX2
    only'; '' where /proc/cpuinfo cannot be read."""
    try:
        with open('/proc/cpuinfo', encoding='ascii', errors='replace') as info:
            flags = next((line.split(':', 1)[1].split() for line in info
                          if line.startswith('flags')), [])
    except OSError:
        return ''
    found = [f for f in ('avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8') if f in flags]
    return ' '.join(found) if found else ('AVX2 only' if 'avx2' in flags else 'no AVX2')


def write(results, settings, baseline, stem):
    """``stem.json`` (settings, machine, rows) and ``stem.png``."""
    with open(stem + '.json', 'w') as handle:
        json.dump({'settings': asdict(settings), 'machine': machine(), 'baseline': baseline,
                   'results': [asdict(r) for r in results]}, handle, indent=1)
    plot(results, stem + '.png')
