"""Where INT8 AFF/iAFF (Dai et al., "Attentional Feature Fusion", WACV 2021) spends its time on
the CPU: MXNet's profiler, per operator, against the plain-addition twin (docs/int8.md).

    python benchmarks/int8_profile.py                                  # ResNet-20, batch 64
    python benchmarks/int8_profile.py --models aff_resnet50 gluoncv:resnet50_v1d \\
        --size 224 --batch 8 --iterations 3

Every network is quantized (:func:`openaff.apps.quantize.quantize`; ``NAME#fused`` for the fused
graph) and run ``--iterations`` times under the profiler with operator bulking off
(``MXNET_EXEC_BULK_EXEC_INFERENCE=0``), so that each operator is timed on its own; the table
gives calls and milliseconds per batch by operator, one column per network.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ['MXNET_EXEC_BULK_EXEC_INFERENCE'] = '0'
THREADS = os.environ.setdefault('MXNET_OMP_MAX_THREADS', '2')

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from openaff.apps.benchmark import build  # noqa: E402
from openaff.apps.quantize import quantize  # noqa: E402

SKIP = ('WaitForVar', 'DeleteVariable')


def operator_times(net, batch, iterations):
    """``{operator: (calls, ms)}`` per batch."""
    for _ in range(3):
        net(batch).wait_to_read()
    mx.profiler.set_config(profile_all=True, aggregate_stats=True,
                           filename=os.devnull)
    mx.profiler.set_state('run')
    for _ in range(iterations):
        net(batch).wait_to_read()
    mx.profiler.set_state('stop')
    table, section = {}, None
    for line in mx.profiler.dumps(reset=True).splitlines():
        if line.strip() in ('operator', 'MXNET_C_API', 'Device Storage'):
            section = line.strip()
            continue
        parts = line.split()
        if section == 'operator' and len(parts) >= 6 and parts[1].isdigit():
            table[parts[0]] = (int(parts[1]) // iterations, float(parts[2]) / iterations)
    return {op: value for op, value in table.items() if op not in SKIP}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', default=[
        'cifar_aff_resnet20/DirectAdd', 'cifar_aff_resnet20', 'cifar_aff_resnet20#fused',
        'cifar_iaff_resnet20#fused'])
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--iterations', type=int, default=10)
    args = p.parse_args(argv)
    rng = np.random.RandomState(0)
    batch = mx.nd.array(rng.normal(size=(args.batch, 3, args.size, args.size)))
    calib = rng.normal(size=(32, 3, args.size, args.size)).astype('float32')
    columns = {}
    for entry in args.models:
        name, _, graph = entry.partition('#')
        net = build(name, 10, mx.cpu(), 'float32')
        int8 = quantize(net, calib, graph=graph or 'standard')
        int8.hybridize(static_alloc=True, static_shape=True)
        columns[entry] = operator_times(int8, batch, args.iterations)
        print(f'profiled {entry}', file=sys.stderr)
    ops = sorted(set().union(*columns.values()),
                 key=lambda op: -max(c.get(op, (0, 0))[1] for c in columns.values()))
    print(f'INT8, batch {args.batch} at {args.size}x{args.size}, {THREADS} MXNet threads, '
          f'ms per batch (calls)\n')
    print('| operator | ' + ' | '.join(f'`{m}`' for m in columns) + ' |')
    print('|---|' + '---|' * len(columns))
    for op in ops:
        cells = [f'{c[op][1]:.1f} ({c[op][0]})' if op in c else '' for c in columns.values()]
        print(f'| `{op}` | ' + ' | '.join(cells) + ' |')
    print('| **total** | ' + ' | '.join(f'**{sum(v[1] for v in c.values()):.1f}**'
                                        for c in columns.values()) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
