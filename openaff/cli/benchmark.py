"""``openaff-benchmark`` (``python -m openaff.cli.benchmark``): side-by-side speed of AFF/iAFF
networks and GluonCV baselines, as ratios to a baseline timed in the same rounds.

    openaff-benchmark                         # ImageNet set, CPU, batch 8, 224x224
    openaff-benchmark --set cifar --batch-size 64
    openaff-benchmark --models gluoncv:resnet50_v1d aff_resnet50@reference aff_resnet50
                                                        # NAME@IMPL: one fusion algebra per row
    openaff-benchmark --set cifar --dtype int8 --runtime onnxruntime
                                                        # + INT8 and onnxruntime rows
"""
from __future__ import annotations

import argparse
import sys

from .args import add_devices_arg, fail, non_negative_int, positive_int
from .runtime import contexts_of


def build_parser():
    from ..apps.benchmark import DTYPES, RUNTIMES, SETS
    from ..fusion import IMPLEMENTATIONS
    p = argparse.ArgumentParser(prog='openaff-benchmark',
                                description=__doc__.split('\n')[0].split(': ', 1)[1])
    p.add_argument('--set', choices=sorted(SETS), default='imagenet')
    p.add_argument('--models', nargs='+', default=None,
                   help='zoo names or gluoncv:NAME, each NAME[/FUSION][@IMPL][#RUNTIME] '
                        f'(RUNTIME: {", ".join(RUNTIMES)})')
    p.add_argument('--baseline', default=None)
    p.add_argument('--ctx', dest='device', choices=('cpu', 'gpu'), default='cpu')
    p.add_argument('--dtype', default='float32', choices=DTYPES,
                   help='int8: each row in float32 and in INT8 (oneDNN, CPU; see '
                        'openaff.quantize), INT8 rows timed against the baseline in INT8')
    p.add_argument('--runtime', choices=('mxnet', 'onnxruntime'), default='mxnet',
                   help='onnxruntime: each row also exported to ONNX and run by onnxruntime '
                        '(float32, and static INT8 with --dtype int8)')
    p.add_argument('--batch-size', type=positive_int, default=None,
                   help='default: 8 for the imagenet set, 64 for cifar')
    p.add_argument('--input-size', type=positive_int, default=None)
    p.add_argument('--repeats', type=positive_int, default=10,
                   help='timed rounds per metric, each timing the baseline and the model back '
                        'to back, in alternating order (rounded up to even)')
    p.add_argument('--warmup', type=non_negative_int, default=3)
    p.add_argument('--no-train', dest='train', action='store_false')
    p.add_argument('--optimize-for', default=None, help="subgraph backend, e.g. 'MKLDNN'")
    p.add_argument('--fusion-impl', choices=IMPLEMENTATIONS, default='native',
                   help='fusion algebra of rows without @IMPL: the fused native operator, the '
                        'fewest MXNet operators, or the original straightforward algebra')
    p.add_argument('--no-memory', dest='memory', action='store_false',
                   help='skip the peak-memory probes (one fresh process per model)')
    p.add_argument('--out', default='runs/benchmark')
    add_devices_arg(p, 'times the rows')
    return p


def check_device(opt):
    """``ValueError`` for a device, precision or subgraph backend this machine does not
    have."""
    import mxnet as mx
    opt.device_id = 0
    if opt.devices:  # one device: the rows are timed where the user names
        contexts = contexts_of(opt)
        if len(contexts) != 1:
            raise ValueError(f'--devices {opt.devices}: the benchmark times one device; name '
                             f'one')
        opt.device, opt.device_id = contexts[0].device_type, contexts[0].device_id
    if opt.device != 'cpu' and (opt.dtype == 'int8' or opt.runtime != 'mxnet'):
        raise ValueError(f'--dtype int8 and --runtime onnxruntime run on the CPU (MXNet 1.9.1 '
                         f'quantizes for oneDNN only); got --ctx {opt.device}')
    if opt.device == 'gpu' and mx.context.num_gpus() == 0:
        raise ValueError('--ctx gpu: MXNet sees no GPU on this machine (a CUDA build of mxnet '
                         'and a visible device are needed)')
    if opt.device == 'cpu' and opt.dtype == 'float16' and not _cpu_runs_float16():
        raise ValueError("--dtype float16 needs --ctx gpu: MXNet's CPU kernels have no "
                         'float16 convolution')
    if opt.runtime == 'onnxruntime' and not _importable('onnx', 'onnxruntime'):
        raise ValueError('--runtime onnxruntime needs onnx and onnxruntime: pip install '
                         '"openaff[onnx]"')
    if opt.optimize_for and not _has_backend(opt.optimize_for):
        raise ValueError(f'--optimize-for {opt.optimize_for}: not a subgraph backend of this '
                         f'mxnet build (e.g. MKLDNN)')


def _importable(*modules):
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _cpu_runs_float16():
    """Whether a float16 convolution runs on the CPU (MXNet 1.9.1's does not: no float16
    GEMM), tried on one pixel rather than assumed, for builds that may have one."""
    import mxnet as mx
    one = mx.nd.ones((1, 1, 1, 1), dtype='float16')
    try:
        mx.nd.Convolution(one, one, kernel=(1, 1), num_filter=1, no_bias=True).wait_to_read()
    except mx.base.MXNetError:
        return False
    return True


def _has_backend(backend):
    """Whether MXNet knows the subgraph ``backend``: for an unknown one it only writes an
    error line to the process's stderr and carries on, so that line is looked for."""
    import mxnet as mx

    from .._stderr import captured_stderr
    probe = mx.sym.FullyConnected(mx.sym.var('x'), num_hidden=1)
    with captured_stderr([]) as lines:
        probe.optimize_for(backend, args={'x': mx.nd.zeros((1, 1))})
    return not any('cannot be found' in line for line in lines)


def main(argv=None):
    from ..apps.benchmark import BASELINES, BATCH_SIZES, SETS, Settings, check_entry, run
    opt = build_parser().parse_args(argv)
    try:
        check_device(opt)
    except ValueError as error:
        return fail(str(error))
    settings = Settings(opt.set, opt.device, opt.dtype, opt.batch_size or BATCH_SIZES[opt.set],
                        opt.input_size,
                        opt.fusion_impl, opt.optimize_for, opt.train, opt.memory, opt.repeats,
                        opt.warmup, opt.device_id, opt.runtime)
    models = opt.models or SETS[opt.set]
    baseline = opt.baseline or (BASELINES[opt.set] if BASELINES[opt.set] in models else models[0])
    if baseline not in models:
        models = [baseline] + models
    try:
        for entry in models:
            check_entry(entry, opt.fusion_impl)  # a bad row fails before any timing
        stem = run(models, baseline, settings, opt.out)
    except ValueError as error:  # unknown model or fusion implementation
        return fail(str(error))
    print(f'wrote {stem}.json and {stem}.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
