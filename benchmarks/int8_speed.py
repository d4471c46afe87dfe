"""INT8 inference speed of AFF/iAFF (Dai et al., "Attentional Feature Fusion", WACV 2021) on the
CPU, beside float32, the plain-addition twin and GluonCV baselines (docs/int8.md).

    python benchmarks/int8_speed.py                         # CIFAR and ImageNet groups
    python benchmarks/int8_speed.py --groups cifar --rounds 20
    python benchmarks/int8_speed.py --onnxruntime           # + onnxruntime float32 and QDQ INT8

Each group (CIFAR: batch 64 at 32x32; ImageNet: batch 8 at 224x224) builds every network in
float32 (openaff's default graphs: the fused native operators) and in INT8
(:func:`openaff.apps.quantize.quantize`, both its ``standard`` and ``fused`` graphs), and times all
of them round-robin: every round runs each step once, every other round in reverse order, so
that drift and order cancel (:func:`openaff.apps.benchmark.paired_times`); a ratio is the
median over pairs of rounds of one step's total time over the other's. MXNet gets 2 threads
(``MXNET_OMP_MAX_THREADS``, unless set), onnxruntime as many. Weights are random
(Xavier) and the calibration images random: speed does not depend on them. The CPU and its
INT8 instructions are printed first; ratios only compare rows of the same run.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

# MXNet reads its thread count once, at import; on this 2-core VM it would take 1
THREADS = os.environ.setdefault('MXNET_OMP_MAX_THREADS', '2')

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from openaff.apps.benchmark import balanced_ratio, build, paired_times  # noqa: E402
from openaff.apps.quantize import OnnxRuntimeNet, quantize  # noqa: E402

GROUPS = {
    'cifar': dict(batch=64, size=32, rounds=12, classes=10,
                  models=['cifar_aff_resnet20', 'cifar_iaff_resnet20',
                          'cifar_aff_resnet20/DirectAdd', 'gluoncv:cifar_resnet20_v1'],
                  twin='cifar_aff_resnet20/DirectAdd', baseline='gluoncv:cifar_resnet20_v1'),
    'imagenet': dict(batch=8, size=224, rounds=6, classes=1000,
                     models=['aff_resnet50', 'iaff_resnet50', 'gluoncv:resnet50_v1d'],
                     twin=None, baseline='gluoncv:resnet50_v1d'),
}
FUSED = ('cifar_aff_resnet20', 'cifar_iaff_resnet20', 'aff_resnet50', 'iaff_resnet50')


def cpu_description():
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name') and model in ('', platform.machine()):
                    model = line.split(':', 1)[1].strip()
                if line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    int8 = sorted(f for f in flags if f.startswith(('avx512', 'amx')) or 'vnni' in f)
    isa = 'AVX-512 ' + ('with VNNI' if any('vnni' in f for f in int8) else 'without VNNI') \
        if any(f.startswith('avx512') for f in int8) else \
        ('AVX2 only (no AVX-512, no VNNI, no AMX)' if 'avx2' in flags else 'no AVX2')
    return f'{model}, {os.cpu_count()} CPUs, {isa}'


def measure(group, settings, args):
    rng = np.random.RandomState(0)
    shape = (settings['batch'], 3, settings['size'], settings['size'])
    batch = mx.nd.array(rng.normal(size=shape).astype('float32'))
    calib = rng.normal(size=(args.calib,) + shape[1:]).astype('float32')
    steps, labels = [], []
    for name in settings['models']:
        tic = time.perf_counter()
        net = build(name, settings['classes'], mx.cpu(), 'float32')
        net.hybridize(static_alloc=True, static_shape=True)
        variants = {'float32': net}
        for graph in ('standard', 'fused') if name in FUSED else ('standard',):
            variants[f'int8 {graph}'] = quantize(net, calib, graph=graph)
        for kind, block in variants.items():
            if kind != 'float32':
                block.hybridize(static_alloc=True, static_shape=True)
            block(batch).wait_to_read()
            steps.append(lambda b=block: b(batch).wait_to_read())
            labels.append((name, kind))
        if args.onnxruntime:
            for kind, int8 in (('ort float32', False), ('ort int8', True)):
                session = OnnxRuntimeNet(net, shape, int8, calib, int(THREADS))
                steps.append(lambda s=session: s(batch).wait_to_read())
                labels.append((name, kind))
        print(f'built {name} in {time.perf_counter() - tic:.0f} s', file=sys.stderr)
    rounds = args.rounds or settings['rounds']
    times = paired_times(steps, rounds + rounds % 2, args.warmup)
    column = {label: [t[i] for t in times] for i, label in enumerate(labels)}

    def ratio(fast, slow):  # how many times faster `fast` is than `slow`
        return balanced_ratio([[a, b] for a, b in zip(column[slow], column[fast])])

    print(f'\n## {group}: batch {shape[0]}, {shape[2]}x{shape[3]}, {rounds + rounds % 2} '
          f'order-balanced rounds\n')
    print('| model | variant | img/s | x own float32 | x twin INT8 | x baseline INT8 |')
    print('|---|---|---|---|---|---|')
    for name, kind in labels:
        ips = shape[0] / statistics.median(column[(name, kind)])
        own = '' if kind == 'float32' else f'{ratio((name, kind), (name, "float32")):.2f}'
        twin = base = ''
        if kind.startswith('int8') and name in FUSED:
            if settings['twin']:
                twin = f'{ratio((name, kind), (settings["twin"], "int8 standard")):.2f}'
            base = f'{ratio((name, kind), (settings["baseline"], "int8 standard")):.2f}'
        if kind == 'ort int8':
            own = f'{ratio((name, kind), (name, "ort float32")):.2f} (ort)'
        print(f'| `{name}` | {kind} | {ips:.1f} | {own} | {twin} | {base} |')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--groups', nargs='+', choices=sorted(GROUPS), default=['cifar', 'imagenet'])
    p.add_argument('--rounds', type=int, default=None,
                   help='timed rounds (default: 12 CIFAR, 6 ImageNet; rounded up to even)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--calib', type=int, default=32, help='random calibration images')
    p.add_argument('--onnxruntime', action='store_true',
                   help='also onnxruntime float32 and static QDQ INT8 of the ONNX exports, '
                        'with as many threads as MXNet')
    args = p.parse_args(argv)
    from openaff._threads import mxnet_threads
    print(f'CPU: {cpu_description()}; MXNet {mx.__version__} (oneDNN), '
          f'{mxnet_threads()} threads')
    for group in args.groups:
        measure(group, GROUPS[group], args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
