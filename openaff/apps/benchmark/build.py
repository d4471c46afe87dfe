"""The benchmark's rows as networks and timed steps. A row is ``NAME[/FUSION][@IMPL][#RUNTIME]``:
a zoo name or ``gluoncv:NAME``; ``/FUSION`` another ``askc_type`` of the zoo network;
``@IMPL`` a fusion algebra (:data:`openaff.fusion.IMPLEMENTATIONS`); ``#RUNTIME`` how it runs
(:data:`RUNTIMES`: MXNet in the benchmark's float precision when absent)."""
from __future__ import annotations

import math
import os

import mxnet as mx

from ...fusion import IMPLEMENTATIONS, implementation
from ...models.external import gluoncv_name
from .timing import inference_step, training_step

#: how a row runs besides MXNet in float32/float16: INT8 with oneDNN (openaff.quantize, its
#: standard or fused graph), onnxruntime's CPU provider in float32 or INT8 (static QDQ)
RUNTIMES = {
    'int8': 'MXNet INT8 (oneDNN), standard operators',
    'int8-fused': "MXNet INT8 (oneDNN), each selection openaff's fused float32 operator",
    'onnxruntime': 'onnxruntime float32 (CPU provider)',
    'onnxruntime-int8': 'onnxruntime INT8 (static QDQ, CPU provider)',
}


def parse_entry(entry, default_impl):
    """``'aff_resnet50/iAFF@reference#int8'`` -> ``('aff_resnet50', 'iAFF', 'reference',
    'int8')``; ``ValueError`` for an unknown ``@IMPL`` or ``#RUNTIME``."""
    rest, _, runtime = entry.partition('#')
    if runtime and runtime not in RUNTIMES:
        raise ValueError(f'unknown runtime {runtime!r} in {entry!r}; valid: '
                         f'{", ".join(RUNTIMES)}')
    rest, _, impl = rest.partition('@')
    impl = impl or default_impl
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f'unknown fusion implementation {impl!r} in {entry!r}; '
                         f'valid: {", ".join(IMPLEMENTATIONS)}')
    name, _, fusion = rest.partition('/')
    return name, fusion, impl, runtime


def with_runtime(entry, runtime):
    """``entry`` run by ``runtime`` ('' for MXNet in float)."""
    return entry.partition('#')[0] + (f'#{runtime}' if runtime else '')


def runtime_of(entry):
    return entry.partition('#')[2]


def is_int8_release(name):
    """GluonCV's INT8 networks (``gluoncv:resnet50_v1_int8``): graphs already quantized."""
    return bool(gluoncv_name(name)) and gluoncv_name(name).endswith('_int8')


def build(name, classes, ctx, dtype):
    """An initialised network: ``gluoncv:NAME``, an openaff zoo name, or ``NAME/FUSION`` (the
    zoo network with another ``askc_type``). GluonCV's INT8 networks load their released
    weights when they are on disk, else random ones (their speed does not depend on them)."""
    name, _, fusion = name.partition('/')
    if is_int8_release(name):
        return _gluoncv_int8(gluoncv_name(name))
    if gluoncv_name(name):
        from ...models import resolve_network
        builder, kwargs = resolve_network(name, classes)
        net = builder(**kwargs)
    else:
        from ...zoo import get_model
        net = get_model(name, classes=classes, **({'askc_type': fusion} if fusion else {}))
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net.cast(dtype)
    return net


def _gluoncv_int8(name):
    from gluoncv.model_zoo import get_model
    from gluoncv.model_zoo.model_store import short_hash

    from ...store import default_root
    base = name[:-len('_int8')]
    root = default_root()
    try:
        released = os.path.isfile(os.path.join(root, f'{base}-{short_hash(base)}.params'))
    except ValueError:
        released = False
    net = get_model(name, pretrained=released, root=root)
    if not released:
        net.initialize(mx.init.Uniform(0.05))
    return net


def _count(net, size, ctx, dtype, int8_graph=False):
    """(parameters in millions, GFLOPs); no FLOPs for an INT8 graph, whose operators the
    counter does not know."""
    from ..summary import summarize
    result = summarize(net, (1, 3, size, size), ctx=ctx, dtype=dtype)
    return result.weight_params / 1e6, math.nan if int8_graph else result.flops / 1e9


def plain_addition_twin(entry):
    """``NAME/DirectAdd`` (run the same way as ``entry``) for a zoo network with a fusion other
    than plain addition (the backbone AFF is fairly compared with), else None."""
    head, _, runtime = entry.partition('#')
    name, _, fusion = head.partition('@')[0].partition('/')
    if gluoncv_name(name):
        return None
    from ...zoo import model_info
    if (fusion or model_info(name).args.get('askc_type', 'DirectAdd')) in ('DirectAdd',
                                                                          'DirectAddFuse'):
        return None
    return with_runtime(f'{name}/DirectAdd', runtime)


def check_entry(entry, default_impl):
    """``ValueError`` for a row that cannot be built: an unknown ``@IMPL``, ``#RUNTIME``, zoo
    name or ``/FUSION``, a fusion asked of a GluonCV network, a runtime asked of GluonCV's
    INT8 networks (checked before any timing)."""
    name, fusion, _, runtime = parse_entry(entry, default_impl)
    if gluoncv_name(name):
        if fusion:
            raise ValueError(f'{entry!r}: /FUSION replaces the fusion of an openaff network; '
                             f'GluonCV networks have none')
        from ...models.external import check_gluoncv_name
        check_gluoncv_name(gluoncv_name(name))
        if runtime and is_int8_release(name):
            raise ValueError(f'{entry!r}: {gluoncv_name(name)} is already an INT8 MXNet graph')
        return
    from ...fusion import resolve_fusion_name
    from ...zoo import model_info
    if fusion and 'askc_type' not in model_info(name).args:
        raise ValueError(f'{entry!r}: {name} takes no askc_type')
    if fusion and fusion != 'concat':  # concat: the Inception networks' merge
        resolve_fusion_name(fusion)


def _mxnet_runner(net, batch, settings):
    net.hybridize(static_alloc=True, static_shape=True)
    if settings.optimize_for:
        net.optimize_for(batch, backend=settings.optimize_for, static_alloc=True,
                         static_shape=True)
    return net


def _int8_runner(graph):
    def make(net, batch, settings):
        from ..quantize import quantize
        # random images calibrate as well as any for timing: speed does not depend on ranges
        int8 = quantize(net, batch.asnumpy(), graph=graph)
        int8.hybridize(static_alloc=True, static_shape=True)
        return int8
    return make


def _onnxruntime_runner(int8):
    def make(net, batch, settings):
        from ..quantize import OnnxRuntimeNet
        return OnnxRuntimeNet(net, batch.shape, int8=int8,
                              calib=batch.asnumpy() if int8 else None)
    return make


RUNNERS = {'': _mxnet_runner, 'int8': _int8_runner('standard'),
           'int8-fused': _int8_runner('fused'), 'onnxruntime': _onnxruntime_runner(False),
           'onnxruntime-int8': _onnxruntime_runner(True)}


class Candidate:
    """One row's network and steps, built with its fusion implementation (graphs are built
    on the first call, inside the ``implementation`` context). Rows run by another runtime
    than MXNet in float have no training step."""

    def __init__(self, entry, settings):
        self.entry = entry
        ctx = settings.ctx
        name, fusion, impl, runtime = parse_entry(entry, settings.fusion_impl)
        name = name + (f'/{fusion}' if fusion else '')
        classes, size = settings.classes, settings.size
        dtype = settings.float_dtype
        batch = mx.nd.random.uniform(shape=(settings.batch_size, 3, size, size), ctx=ctx)
        batch = batch.astype(dtype)
        with implementation(impl):
            net = build(name, classes, ctx, dtype)
            self.params_m, self.gflops = _count(net, size, ctx, dtype, is_int8_release(name))
            runner = RUNNERS[runtime](net, batch, settings)
            self.infer = inference_step(runner, batch)
            self.single = inference_step(runner, batch[:1])
            self.infer(), self.single()
            self.train = None
            if settings.train and not settings.optimize_for and not runtime and \
                    not is_int8_release(name):
                train_net = build(name, classes, ctx, dtype)
                train_net.hybridize(static_alloc=True, static_shape=True)
                self.train = training_step(train_net, batch, classes)
                self.train()
        mx.nd.waitall()
        self.batch_size = settings.batch_size
