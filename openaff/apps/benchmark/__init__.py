"""Side-by-side speed of AFF/iAFF networks (Dai et al., WACV 2021) and GluonCV baselines:
inference and training images/s, batch-1 latency, FLOPs and parameters, peak memory; ratios
to a baseline first, each model timed in rounds interleaved with the baseline in one process.
Writes a table, JSON and a PNG (throughput against FLOPs and parameters).

    openaff-benchmark                         # ImageNet set, CPU, batch 8, 224x224
    openaff-benchmark --set cifar --batch-size 64
    openaff-benchmark --models gluoncv:resnet50_v1d aff_resnet50@reference aff_resnet50
                                                        # NAME@IMPL: one fusion algebra per row
    openaff-benchmark --models cifar_aff_resnet20 cifar_aff_resnet20/iAFF
                                                        # NAME/FUSION: another fusion, same net
    openaff-benchmark --set cifar --dtype int8 --runtime onnxruntime
                                                        # + INT8 and onnxruntime rows

Every zoo network with a fusion is also timed against its own backbone with plain addition
(``NAME/DirectAdd``): the ``x add`` columns, the fair measure of what the fusion costs. With
``--dtype int8`` every row is timed in float32 and in INT8 (:func:`openaff.quantize`), each
INT8 row against the baseline's INT8 row and its own float32 one (``x own f32``).

The package is split by concern: :mod:`.build` (rows to networks and steps), :mod:`.timing`
(order-balanced rounds, memory probes), :mod:`.report` (table, JSON, plot).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import mxnet as mx

from ..._threads import mxnet_threads
from .build import (
    RUNTIMES,
    Candidate,
    build,
    check_entry,
    is_int8_release,
    parse_entry,
    plain_addition_twin,
    runtime_of,
    with_runtime,
)
from .report import Result, machine, plot, table, write
from .timing import (
    balanced_ratio,
    inference_step,
    median_time,
    paired_times,
    peak_memory_mb,
    peak_rss_mb,
    timed,
    training_step,
)

__all__ = ['SETS', 'BASELINES', 'BATCH_SIZES', 'DTYPES', 'RUNTIMES', 'Settings', 'Result',
           'Candidate', 'build', 'check_entry', 'rows_of', 'measure_all', 'run', 'table',
           'plot', 'machine', 'paired_times', 'balanced_ratio', 'median_time',
           'inference_step', 'training_step', 'plain_addition_twin',
           'parse_entry', 'peak_memory_mb', 'peak_rss_mb', 'probe_memory']

SETS = {
    'imagenet': ['gluoncv:resnet50_v1d', 'aff_resnet50', 'iaff_resnet50', 'gluoncv:resnet101_v1d',
                 'gluoncv:resnext50_32x4d', 'aff_resnext50_32x4d', 'iaff_resnext50_32x4d',
                 'gluoncv:se_resnext50_32x4d'],
    'cifar': ['gluoncv:cifar_resnet56_v2', 'cifar_aff_resnet20', 'cifar_iaff_resnet20',
              'cifar_aff_resnet32', 'cifar_iaff_resnet32', 'cifar_aff_resnext38_32x4d',
              'cifar_aff_resnext47_32x4d'],
}
BASELINES = {'imagenet': 'gluoncv:resnet50_v1d', 'cifar': 'gluoncv:cifar_resnet56_v2'}
BATCH_SIZES = {'imagenet': 8, 'cifar': 64}
#: int8: every row in float32 and in INT8 (oneDNN, CPU)
DTYPES = ('float32', 'float16', 'int8')


@dataclass
class Settings:
    """How to measure: the input batch, precision, runtime, device and fusion algebra of every
    row, and how many timed rounds (see :func:`~openaff.apps.benchmark.timing.timed`)."""
    set: str = 'imagenet'
    device: str = 'cpu'
    dtype: str = 'float32'
    batch_size: int = 8
    input_size: int | None = None
    fusion_impl: str = 'native'
    optimize_for: str | None = None
    train: bool = True
    memory: bool = True
    repeats: int = 10
    warmup: int = 3
    device_id: int = 0
    runtime: str = 'mxnet'

    @property
    def ctx(self):
        return mx.gpu(self.device_id) if self.device == 'gpu' else mx.cpu(self.device_id)

    @property
    def float_dtype(self):
        """The precision of the float rows (INT8 rows are quantized from float32 ones)."""
        return 'float32' if self.dtype == 'int8' else self.dtype

    @property
    def dataset(self):
        """The registered dataset whose head width and input size a ``set`` measures with."""
        from ...data import dataset_spec
        return dataset_spec('cifar100' if self.set == 'cifar' else self.set)

    @property
    def classes(self):
        return self.dataset.classes

    @property
    def size(self):
        return self.input_size or self.dataset.input_size


def rows_of(models, settings):
    """The rows ``models`` give: each in the float precision, plus ``#int8`` with ``--dtype
    int8`` and ``#onnxruntime`` (``#onnxruntime-int8``) with ``--runtime onnxruntime``; rows
    that name their runtime, and GluonCV's INT8 networks, stay as they are."""
    extra = []
    if settings.dtype == 'int8':
        extra.append('int8')
    if settings.runtime == 'onnxruntime':
        extra += ['onnxruntime'] + (['onnxruntime-int8'] if settings.dtype == 'int8' else [])
    rows = []
    for entry in models:
        rows.append(entry)
        if not runtime_of(entry) and not is_int8_release(entry.partition('@')[0]):
            rows += [with_runtime(entry, runtime) for runtime in extra]
    return list(dict.fromkeys(rows))


def probe_memory(entry, settings):
    """In the probe process: build ``entry``'s steps, then report the memory in use (MB)."""
    settings = Settings(**settings)
    Candidate(entry, settings)
    if settings.device == 'gpu':
        free, total = mx.context.gpu_memory_info(0)
        return round((total - free) / 2 ** 20, 1)
    return round(peak_rss_mb(), 1)


def compare(base, other, settings):
    """``other``'s row, its timings interleaved with ``base``'s (``other`` may be ``base``)."""
    result = Result(other.entry, other.params_m, other.gflops)
    for metric, (own, ratio) in timed(base, other, settings).items():
        if metric == 'latency':
            result.latency_ms, result.latency_ratio = 1000 * own, ratio
        else:
            setattr(result, f'{metric}_ips', other.batch_size / own)
            setattr(result, f'{metric}_ratio', ratio)
    return result


class _Kept:
    """Candidates built once and reused by later rows, one per role; a new entry for a role
    frees the previous one first."""

    def __init__(self, settings):
        self.settings, self.held = settings, {}

    def get(self, role, entry):
        held = self.held.get(role)
        if held is None or held.entry != entry:
            self.held[role] = None
            self.held[role] = Candidate(entry, self.settings)
        return self.held[role]


def _baseline_for(baseline, entry, settings):
    """The baseline run as ``entry`` runs; GluonCV's INT8 graphs are compared with the
    baseline's INT8 row when there is one."""
    if runtime_of(baseline) or is_int8_release(baseline):
        return baseline
    if is_int8_release(entry):
        return with_runtime(baseline, 'int8' if settings.dtype == 'int8' else '')
    return with_runtime(baseline, runtime_of(entry))


def measure_all(models, baseline, settings):
    """Rows in ``models`` order (expanded by :func:`rows_of`); each row is timed against the
    baseline run the same way, against its plain-addition twin run the same way, and (rows
    of another runtime) against its own MXNet float row."""
    kept, results = _Kept(settings), []
    for entry in rows_of(models, settings):
        base_entry = _baseline_for(baseline, entry, settings)
        base = kept.get('base' + runtime_of(base_entry), base_entry)
        other = base if entry == base.entry else Candidate(entry, settings)
        if not runtime_of(entry):  # the own float row of the runtime rows after it
            kept.held['own'] = other
        results.append(compare(base, other, settings))
        twin_name = plain_addition_twin(entry)
        if twin_name:
            twin = kept.get('twin' + runtime_of(entry), twin_name)
            for metric, (_, ratio) in timed(twin, other, settings, ('infer', 'train')).items():
                setattr(results[-1], f'add_{metric}_ratio', ratio)
        if runtime_of(entry):
            own = kept.get('own', with_runtime(entry, ''))
            results[-1].own_infer_ratio = timed(own, other, settings, ('infer',))['infer'][1]
        if settings.memory:
            results[-1].memory_mb = peak_memory_mb(entry, settings)
        print(f'measured {entry}: {results[-1].infer_ips:.1f} img/s, '
              f'{results[-1].infer_ratio:.3f}x the baseline', file=sys.stderr)
    return results


def run(models, baseline, settings, out):
    """Measure every row, print the table, write JSON and a PNG under ``out``; returns the
    path stem of the files."""
    results = measure_all(models, baseline, settings)
    print(table(results, baseline))
    print(f'{settings.device}, {settings.dtype}, batch {settings.batch_size}; MXNet CPU threads: '
          f'{mxnet_threads()} of {os.cpu_count()} processors; CPU INT8 instructions: '
          f'{machine()["cpu_int8_instructions"] or "unknown"}')
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f'benchmark-{settings.set}-{settings.device}-{settings.dtype}-'
                             f'{settings.fusion_impl}'
                             + ('-onnxruntime' if settings.runtime == 'onnxruntime' else ''))
    write(results, settings, baseline, stem)
    return stem
