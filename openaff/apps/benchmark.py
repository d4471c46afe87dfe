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

Every zoo network with a fusion is also timed against its own backbone with plain addition
(``NAME/DirectAdd``): the ``x add`` columns, the fair measure of what the fusion costs.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import mxnet as mx
import numpy as np

from .._threads import mxnet_threads
from ..fusion import IMPLEMENTATIONS, implementation
from ..models.external import display_name, gluoncv_name

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


@dataclass
class Result:
    """One row. Ratios are baseline time / this model's time, from rounds that time the two
    back to back in alternating order (see :func:`balanced_ratio`), so that drift in the
    machine's speed and the order cancel; the absolute figures are medians over the rounds."""
    model: str
    params_m: float
    gflops: float
    infer_ips: float = 0.0
    train_ips: float = 0.0
    latency_ms: float = 0.0
    memory_mb: float = 0.0
    infer_ratio: float = 1.0
    train_ratio: float = float('nan')
    latency_ratio: float = 1.0
    add_infer_ratio: float = float('nan')  # against the same network with plain addition
    add_train_ratio: float = float('nan')


@dataclass
class Settings:
    """How to measure: the input batch, precision, device and fusion algebra of every row, and
    how many timed rounds (see :func:`compare`)."""
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

    @property
    def ctx(self):
        return mx.gpu(self.device_id) if self.device == 'gpu' else mx.cpu(self.device_id)

    @property
    def dataset(self):
        """The registered dataset whose head width and input size a ``set`` measures with."""
        from ..data import dataset_spec
        return dataset_spec('cifar100' if self.set == 'cifar' else self.set)

    @property
    def classes(self):
        return self.dataset.classes

    @property
    def size(self):
        return self.input_size or self.dataset.input_size


def build(name, classes, ctx, dtype):
    """An initialised network: ``gluoncv:NAME``, an openaff zoo name, or ``NAME/FUSION`` (the
    zoo network with another ``askc_type``)."""
    name, _, fusion = name.partition('/')
    if gluoncv_name(name):
        from ..models import resolve_network
        builder, kwargs = resolve_network(name, classes)
        net = builder(**kwargs)
    else:
        from ..zoo import get_model
        net = get_model(name, classes=classes, **({'askc_type': fusion} if fusion else {}))
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net.cast(dtype)
    return net


def _count(net, size, ctx, dtype):
    from .summary import summarize
    result = summarize(net, (1, 3, size, size), ctx=ctx, dtype=dtype)
    return result.weight_params / 1e6, result.flops / 1e9


def peak_memory_mb(entry, settings):
    """Peak memory of a fresh process that builds ``entry`` and runs its inference (and
    training) steps once: host RSS on CPU, device memory in use on GPU. Returns NaN (and
    says why) if that process fails."""
    code = ('import json, sys; from openaff.apps.benchmark import probe_memory; '
            'print(probe_memory(*json.loads(sys.argv[1])))')
    command = [sys.executable, '-c', code, json.dumps([entry, asdict(settings)])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        print(f'memory probe of {entry} failed: {done.stderr.strip()[-500:]}', file=sys.stderr)
        return float('nan')
    return float(done.stdout.split()[-1])


def probe_memory(entry, settings):
    """In the probe process: build ``entry``'s steps, then report the memory in use (MB)."""
    settings = Settings(**settings)
    Candidate(entry, settings)
    if settings.device == 'gpu':
        free, total = mx.context.gpu_memory_info(0)
        return round((total - free) / 2 ** 20, 1)
    return round(peak_rss_mb(), 1)


def peak_rss_mb():
    """This process's peak resident memory in MB. Linux's ``ru_maxrss`` carries the parent's
    resident size over ``fork`` + ``exec`` (the probes then grew with the harness process),
    so the high-water mark of this process's own address space (``VmHWM``) is used instead."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            line = next(line for line in status if line.startswith('VmHWM:'))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(step):
    tic = time.perf_counter()
    step()
    mx.nd.waitall()
    return time.perf_counter() - tic


def paired_times(steps, rounds, warmup):
    """Time several steps round-robin: ``rounds`` lists of one time per step (in ``steps``
    order). Every other round runs them in reverse order: a step timed right after another
    runs a few percent faster on this machine (the baseline timed against itself read 1.037x
    with a fixed order); :func:`balanced_ratio` pairs the rounds to cancel that."""
    for step in steps:
        for _ in range(warmup):
            step()
    mx.nd.waitall()
    times = []
    for index in range(rounds):
        order = list(range(len(steps)))[::-1 if index % 2 else 1]
        measured = {position: _timed(steps[position]) for position in order}
        times.append([measured[position] for position in range(len(steps))])
    return times


def balanced_ratio(rounds):
    """Median, over consecutive pairs of rounds (one in each order, see :func:`paired_times`),
    of the first step's total time over the second's: the order bias cancels within a pair,
    the machine's drift between pairs."""
    pairs = [rounds[index:index + 2] for index in range(0, len(rounds) - 1, 2)]
    return statistics.median(sum(r[0] for r in pair) / sum(r[1] for r in pair)
                             for pair in pairs)


def median_time(step, repeats, warmup):
    """Median seconds of one call of ``step`` (after ``warmup`` untimed calls)."""
    return statistics.median(times[0] for times in paired_times([step], repeats, warmup))


def inference_step(net, batch):
    return lambda: net(batch).wait_to_read()


def training_step(net, batch, classes):
    trainer = mx.gluon.Trainer(net.collect_params(), 'nag',
                               {'learning_rate': 1e-4, 'momentum': 0.9,
                                'multi_precision': batch.dtype == np.float16})
    labels = mx.nd.array(np.arange(batch.shape[0]) % classes, ctx=batch.context)
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()

    def step():
        with mx.autograd.record():
            loss = loss_fn(net(batch).astype('float32'), labels)
        loss.backward()
        trainer.step(batch.shape[0])
    return step


class Candidate:
    """One row's networks and steps, built with its fusion implementation (graphs are built
    on the first call, inside the ``implementation`` context)."""

    def __init__(self, entry, settings):
        self.entry = entry
        ctx = settings.ctx
        name, impl = split_impl(entry, settings.fusion_impl)
        classes, size = settings.classes, settings.size
        batch = mx.nd.random.uniform(shape=(settings.batch_size, 3, size, size), ctx=ctx)
        batch = batch.astype(settings.dtype)
        with implementation(impl):
            net = build(name, classes, ctx, settings.dtype)
            self.params_m, self.gflops = _count(net, size, ctx, settings.dtype)
            net.hybridize(static_alloc=True, static_shape=True)
            if settings.optimize_for:
                net.optimize_for(batch, backend=settings.optimize_for, static_alloc=True,
                                 static_shape=True)
            self.infer = inference_step(net, batch)
            self.single = inference_step(net, batch[:1])
            self.infer(), self.single()
            self.train = None
            if settings.train and not settings.optimize_for:
                train_net = build(name, classes, ctx, settings.dtype)
                train_net.hybridize(static_alloc=True, static_shape=True)
                self.train = training_step(train_net, batch, classes)
                self.train()
        mx.nd.waitall()
        self.batch_size = settings.batch_size


def timed(base, other, settings, metrics=('infer', 'latency', 'train')):
    """``{metric: (other's median seconds, base time / other's time)}``, each metric timed in
    rounds interleaved with ``base`` (see :func:`paired_times`)."""
    steps = {'infer': 'infer', 'latency': 'single', 'train': 'train'}
    out = {}
    for metric in metrics:
        if metric == 'train' and not (other.train and base.train):
            continue
        rounds = max(3, settings.repeats // 2) if metric == 'train' else settings.repeats
        pair = [getattr(base, steps[metric]), getattr(other, steps[metric])]
        times = paired_times(pair, rounds + rounds % 2, settings.warmup)
        out[metric] = (statistics.median(r[1] for r in times), balanced_ratio(times))
    return out


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


def plain_addition_twin(entry):
    """``NAME/DirectAdd`` for a zoo network with a fusion other than plain addition (the
    backbone AFF is fairly compared with), else None."""
    name, _, impl = entry.partition('@')
    name, _, fusion = name.partition('/')
    if gluoncv_name(name):
        return None
    from ..zoo import model_info
    if (fusion or model_info(name).args.get('askc_type', 'DirectAdd')) in ('DirectAdd',
                                                                          'DirectAddFuse'):
        return None
    return f'{name}/DirectAdd'


def measure_all(models, baseline, settings):
    """Rows in ``models`` order; each model is timed against the baseline, then dropped."""
    base = Candidate(baseline, settings)
    results, twin = [], None
    for entry in models:
        other = base if entry == baseline else Candidate(entry, settings)
        results.append(compare(base, other, settings))
        twin_name = plain_addition_twin(entry)
        if twin_name:
            if twin is None or twin.entry != twin_name:
                twin = None  # free the previous one first
                twin = Candidate(twin_name, settings)
            for metric, (_, ratio) in timed(twin, other, settings, ('infer', 'train')).items():
                setattr(results[-1], f'add_{metric}_ratio', ratio)
        if settings.memory:
            results[-1].memory_mb = peak_memory_mb(entry, settings)
        print(f'measured {entry}: {results[-1].infer_ips:.1f} img/s, '
              f'{results[-1].infer_ratio:.3f}x the baseline', file=sys.stderr)
    return results


def table(results, baseline):
    base = next((r for r in results if r.model == baseline), results[0])
    header = (f'{"model":<30} {"infer x":>7} {"train x":>7} {"b1 x":>6} {"infer x add":>11} '
              f'{"train x add":>11} {"img/s":>7} '
              f'{"train img/s":>11} {"b1 ms":>7} {"GFLOPs":>6} {"params M":>8} {"FLOPs x":>7} '
              f'{"peak MB":>7}')
    lines = [header, '-' * len(header)]
    for r in results:
        lines.append(f'{r.model:<30} {r.infer_ratio:>7.3f} {r.train_ratio:>7.3f} '
                     f'{r.latency_ratio:>6.3f} {r.add_infer_ratio:>11.3f} '
                     f'{r.add_train_ratio:>11.3f} {r.infer_ips:>7.1f} {r.train_ips:>11.1f} '
                     f'{r.latency_ms:>7.1f} {r.gflops:>6.2f} {r.params_m:>8.2f} '
                     f'{r.gflops / base.gflops:>7.3f} {r.memory_mb:>7.0f}')
    return '\n'.join(lines)


def plot(results, path):
    from ..plotting import pyplot
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
    return {'platform': platform.platform(),
            'processor': platform.processor() or platform.machine(),
            'cpus': os.cpu_count(), 'mxnet_cpu_threads': mxnet_threads(), 'mxnet': mx.__version__,
            'gpus': mx.context.num_gpus()}


def check_entry(entry, default_impl):
    """``ValueError`` for a row that cannot be built: an unknown ``@IMPL``, zoo name or
    ``/FUSION``, or a fusion asked of a GluonCV network (checked before any timing)."""
    name, _ = split_impl(entry, default_impl)
    name, _, fusion = name.partition('/')
    if gluoncv_name(name):
        if fusion:
            raise ValueError(f'{entry!r}: /FUSION replaces the fusion of an openaff network; '
                             f'GluonCV networks have none')
        return
    from ..fusion import resolve_fusion_name
    from ..zoo import model_info
    if fusion and 'askc_type' not in model_info(name).args:
        raise ValueError(f'{entry!r}: {name} takes no askc_type')
    if fusion and fusion != 'concat':  # concat: the Inception networks' merge
        resolve_fusion_name(fusion)


def split_impl(entry, default):
    """``'aff_resnet50@reference'`` -> ``('aff_resnet50', 'reference')``."""
    name, _, impl = entry.partition('@')
    impl = impl or default
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f'unknown fusion implementation {impl!r} in {entry!r}; '
                         f'valid: {", ".join(IMPLEMENTATIONS)}')
    return name, impl


def run(models, baseline, settings, out):
    """Measure every row, print the table, write JSON and a PNG under ``out``; returns the
    path stem of the files."""
    results = measure_all(models, baseline, settings)
    print(table(results, baseline))
    print(f'{settings.device}, {settings.dtype}, batch {settings.batch_size}; MXNet CPU threads: '
          f'{mxnet_threads()} of {os.cpu_count()} processors')
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f'benchmark-{settings.set}-{settings.device}-{settings.dtype}-'
                             f'{settings.fusion_impl}')
    with open(stem + '.json', 'w') as handle:
        json.dump({'settings': asdict(settings), 'machine': machine(), 'baseline': baseline,
                   'results': [asdict(r) for r in results]}, handle, indent=1)
    plot(results, stem + '.png')
    return stem

