"""Side-by-side speed of AFF/iAFF networks and GluonCV baselines, measured in one process run:
inference and training images/s, batch-1 latency, FLOPs and parameters, peak memory; ratios
to a baseline first. Writes a table, JSON and a PNG (throughput against FLOPs and parameters).

    python -m openaff.benchmark                         # ImageNet set, CPU, batch 8, 224x224
    python -m openaff.benchmark --set cifar --batch-size 64
    python -m openaff.benchmark --models gluoncv:resnet50_v1d aff_resnet50@reference aff_resnet50
                                                        # NAME@IMPL: one fusion algebra per row
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import mxnet as mx
import numpy as np

from .fusion import IMPLEMENTATIONS, implementation

SETS = {
    'imagenet': ['gluoncv:resnet50_v1d', 'aff_resnet50', 'iaff_resnet50', 'gluoncv:resnet101_v1d',
                 'gluoncv:resnext50_32x4d', 'aff_resnext50_32x4d', 'iaff_resnext50_32x4d',
                 'gluoncv:se_resnext50_32x4d'],
    'cifar': ['gluoncv:cifar_resnet56_v2', 'cifar_aff_resnet32', 'cifar_iaff_resnet32',
              'cifar_aff_resnext38_32x4d', 'cifar_aff_resnext47_32x4d'],
}
BASELINES = {'imagenet': 'gluoncv:resnet50_v1d', 'cifar': 'gluoncv:cifar_resnet56_v2'}


@dataclass
class Result:
    model: str
    params_m: float
    gflops: float
    infer_ips: float = 0.0
    train_ips: float = 0.0
    latency_ms: float = 0.0
    peak_rss_mb: float = 0.0


def build(name, classes, ctx, dtype):
    """An initialised, hybridized network: ``gluoncv:NAME`` or an openaff zoo name."""
    if name.startswith('gluoncv:'):
        from gluoncv.model_zoo import get_model
        net = get_model(name.split(':', 1)[1], classes=classes)
    else:
        from .zoo import get_model
        net = get_model(name, classes=classes)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net.cast(dtype)
    return net


def _count(net, size, ctx):
    from .summary import summarize
    result = summarize(net, (1, 3, size, size), ctx=ctx)
    return result.weight_params / 1e6, result.flops / 1e9


def _time_calls(step, repeats, warmup):
    for _ in range(warmup):
        step()
    mx.nd.waitall()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        step()
        mx.nd.waitall()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


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


def measure(name, opt, ctx):
    """One model: counts, then timings (inference, training, batch-1 latency)."""
    classes = 100 if opt.set == 'cifar' else 1000
    size = opt.input_size or (32 if opt.set == 'cifar' else 224)
    net = build(name, classes, ctx, opt.dtype)
    params_m, gflops = _count(net, size, ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    if opt.optimize_for:
        net.optimize_for(mx.nd.zeros((opt.batch_size, 3, size, size), ctx=ctx, dtype=opt.dtype),
                         backend=opt.optimize_for, static_alloc=True, static_shape=True)
    batch = mx.nd.random.uniform(shape=(opt.batch_size, 3, size, size), ctx=ctx).astype(opt.dtype)
    result = Result(name, params_m, gflops)
    result.infer_ips = opt.batch_size / _time_calls(inference_step(net, batch), opt.repeats,
                                                    opt.warmup)
    single = batch[:1]
    result.latency_ms = 1000 * _time_calls(inference_step(net, single), opt.repeats, opt.warmup)
    if opt.train and not opt.optimize_for:
        train_net = build(name, classes, ctx, opt.dtype)
        train_net.hybridize(static_alloc=True, static_shape=True)
        result.train_ips = opt.batch_size / _time_calls(
            training_step(train_net, batch, classes), max(3, opt.repeats // 2), opt.warmup)
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def table(results, baseline):
    base = next((r for r in results if r.model == baseline), results[0])
    header = (f'{"model":<28} {"infer x":>8} {"train x":>8} {"img/s":>8} {"train img/s":>11} '
              f'{"b1 ms":>7} {"GFLOPs":>7} {"params M":>8} {"FLOPs x":>7}')
    lines = [header, '-' * len(header)]
    for r in results:
        train_ratio = r.train_ips / base.train_ips if base.train_ips else float('nan')
        lines.append(f'{r.model:<28} {r.infer_ips / base.infer_ips:>8.3f} {train_ratio:>8.3f} '
                     f'{r.infer_ips:>8.1f} {r.train_ips:>11.1f} {r.latency_ms:>7.1f} '
                     f'{r.gflops:>7.2f} {r.params_m:>8.2f} {r.gflops / base.gflops:>7.3f}')
    return '\n'.join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], 'gflops', 'GFLOPs'), (axes[1], 'params_m', 'parameters (M)')):
        for r in results:
            ax.scatter(getattr(r, key), r.infer_ips)
            ax.annotate(r.model.replace('gluoncv:', ''), (getattr(r, key), r.infer_ips),
                        fontsize=7, xytext=(3, 3), textcoords='offset points')
        ax.set_xlabel(label)
        ax.set_ylabel('inference images/s')
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine():
    return {'platform': platform.platform(), 'processor': platform.processor() or platform.machine(),
            'cpus': os.cpu_count(), 'mxnet': mx.__version__,
            'gpus': mx.context.num_gpus()}


def build_parser():
    p = argparse.ArgumentParser(prog='python -m openaff.benchmark', description=__doc__.split('\n')[0])
    p.add_argument('--set', choices=sorted(SETS), default='imagenet')
    p.add_argument('--models', nargs='+', default=None, help='zoo names or gluoncv:NAME')
    p.add_argument('--baseline', default=None)
    p.add_argument('--ctx', choices=('cpu', 'gpu'), default='cpu')
    p.add_argument('--dtype', default='float32')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--input-size', type=int, default=None)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--no-train', dest='train', action='store_false')
    p.add_argument('--optimize-for', default=None, help="subgraph backend, e.g. 'MKLDNN'")
    p.add_argument('--fusion-impl', choices=IMPLEMENTATIONS, default='native',
                   help='fusion algebra of rows without @IMPL: the fused native operator, the '
                        'fewest MXNet operators, or the original straightforward algebra')
    p.add_argument('--out', default='runs/benchmark')
    return p


def split_impl(entry, default):
    """``'aff_resnet50@reference'`` -> ``('aff_resnet50', 'reference')``."""
    name, _, impl = entry.partition('@')
    impl = impl or default
    if impl not in IMPLEMENTATIONS:
        raise SystemExit(f'error: unknown fusion implementation {impl!r} in {entry!r}; '
                         f'valid: {", ".join(IMPLEMENTATIONS)}')
    return name, impl


def main(argv=None):
    opt = build_parser().parse_args(argv)
    ctx = mx.gpu(0) if opt.ctx == 'gpu' else mx.cpu()
    models = opt.models or SETS[opt.set]
    baseline = opt.baseline or (BASELINES[opt.set] if BASELINES[opt.set] in models else models[0])
    results = []
    for entry in models:
        name, impl = split_impl(entry, opt.fusion_impl)
        with implementation(impl):
            results.append(measure(name, opt, ctx))
        results[-1].model = entry
        print(f'measured {entry}: {results[-1].infer_ips:.1f} img/s', file=sys.stderr)
    print(table(results, baseline))
    os.makedirs(opt.out, exist_ok=True)
    stem = os.path.join(opt.out, f'benchmark-{opt.set}-{opt.ctx}-{opt.dtype}-{opt.fusion_impl}')
    with open(stem + '.json', 'w') as handle:
        json.dump({'settings': vars(opt), 'machine': machine(), 'baseline': baseline,
                   'results': [asdict(r) for r in results]}, handle, indent=1)
    plot(results, stem + '.png')
    print(f'wrote {stem}.json and {stem}.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
