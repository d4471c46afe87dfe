"""Graphs for where they run: the fused C++ operators (CPU float32 only, openaff processes
only) appear only in graphs traced for a CPU float32 target. A graph traced for a GPU, after
``reset_ctx`` to another device, after ``cast('float16')``, written by ``export()``, or
converted by AMP holds standard MXNet operators only: every zoo network and every fusion block
of the catalog, and a fusion inside a network of one's own."""
import functools
import json
import os
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest
from conftest import REPO, random_input
from mxnet import autograd, gluon
from mxnet.contrib import amp

from openaff import get_model, list_models, model_info, ops
from openaff.fusion import get_fusion, graph_mode, graph_target, list_fusions
from openaff.models._common import FusionNetwork

# ResNet-20/ResNeXt-38 stand for their deeper twins, iAFF-ResNet-50 for the ImageNet networks
FAST_MODELS = ['cifar_aff_resnet20', 'cifar_iaff_resnet20', 'cifar_aff_inception',
               'cifar_concat_inception', 'cifar_aff_resnext38_32x4d', 'iaff_resnet50']
MODELS = [name if name in FAST_MODELS else pytest.param(name, marks=pytest.mark.slow)
          for name in list_models()]
FUSIONS = list_fusions()
CHANNELS = 16
# a device type other than 'cpu' that a CPU-only MXNet computes on: the GPU's stand-in
ELSEWHERE = mx.cpu_pinned(0)


def _python(code, *args):
    """Run ``code`` in a fresh interpreter that never imports openaff."""
    done = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env={**os.environ, 'PYTHONPATH': ''})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope='module')
def standard_operators():
    """The operators of a process that never imported openaff."""
    code = 'import json, mxnet; print(json.dumps(mxnet.operator.get_all_registered_operators()))'
    names = set(json.loads(_python(code).splitlines()[-1]))
    assert 'Convolution' in names and not any(name.startswith('openaff_') for name in names)
    return names


def foreign(symbol, standard):
    """The operators of ``symbol`` that a process without openaff does not have."""
    nodes = json.loads(symbol.tojson())['nodes']
    return sorted({node['op'] for node in nodes} - standard - {'null'})


def running(block):
    """The graph a hybridized block's CachedOp runs (blocks that never use the fused
    operators keep only Gluon's graph)."""
    return getattr(block, '_device_graph', None) or block._cached_graph


def fused(symbol):
    return sorted({node['op'] for node in json.loads(symbol.tojson())['nodes']
                   if node['op'].startswith('openaff_')})


def size_of(name):
    # fully convolutional up to global pooling: the smallest maps their strides allow
    return 16 if model_info(name).dataset == 'cifar100' else 32


def randomise(net):
    """Running statistics, gammas and betas away from their initial values, as a trained
    network has them (what folding and export must carry over)."""
    rng = np.random.RandomState(3)
    for name, param in net.collect_params().items():
        positive = name.endswith(('running_var', 'gamma'))
        value = rng.uniform(0.5, 1.5, param.shape) if positive else \
            rng.normal(0, 0.3, param.shape) if name.endswith(('beta', 'running_mean')) else \
            param.data().asnumpy()
        param.set_data(mx.nd.array(value))


def ran_on_cpu(name):
    """A zoo network hybridized and run once on CPU float32 (inference: the graph with the
    most fused operators), with trained-looking BatchNorm states; and its input."""
    net = get_model(name, classes=10)
    net.initialize(mx.init.Xavier())
    x = random_input(2, 3, size_of(name), size_of(name))
    net(x)
    randomise(net)
    net.hybridize(static_alloc=True)
    net(x)
    return net, x


def fusion_ran_on_cpu(name):
    block = get_fusion(name, channels=CHANNELS)
    block.initialize(mx.init.Xavier())
    x, y = random_input(2, CHANNELS, 8, 8), random_input(2, CHANNELS, 8, 8)
    block(x, y)
    randomise(block)
    block.hybridize()
    block(x, y)
    return block, [x, y]


def has_fused_stages(name):
    """Whether a zoo network's fusions are ones the native operators compute."""
    return model_info(name).args.get('askc_type') in ('ASKCFuse', 'ResGlobLocaforGlobLocaCha')


def _run_float16(net, *inputs):
    """Call ``net`` on float16 copies of ``inputs``: traces its graphs; MXNet's CPU kernels
    then refuse float16 convolutions, which is all this machine can show."""
    try:
        net(*[x.astype('float16') for x in inputs]).wait_to_read()
    except mx.base.MXNetError as error:
        assert 'FP16' in str(error) or 'float16' in str(error), error


# ------------------------------------------------------------------ zoo networks
@pytest.mark.parametrize('name', MODELS)
def test_network_graphs_for_a_gpu_hold_standard_operators(name, standard_operators):
    net, _ = ran_on_cpu(name)
    data = mx.sym.var('data')
    for mode in ('any', 'inference'):
        with graph_target(mx.gpu(0)), graph_mode(mode):
            assert foreign(net(data), standard_operators) == [], mode
    if has_fused_stages(name) and ops.available():
        # the same trace for the CPU keeps the fused operators: the target decides
        with graph_target(mx.cpu()), graph_mode('inference'):
            assert fused(net(data))
        assert fused(running(net)[1])


@pytest.mark.parametrize('name', MODELS)
def test_network_moved_to_another_device_traces_again(name, standard_operators):
    net, x = ran_on_cpu(name)
    expected = net(x).asnumpy()
    net.collect_params().reset_ctx(ELSEWHERE)
    moved = net(x.as_in_context(ELSEWHERE)).asnumpy()
    assert foreign(running(net)[1], standard_operators) == []
    np.testing.assert_allclose(moved, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    net.collect_params().reset_ctx(mx.cpu())
    np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    if has_fused_stages(name) and ops.available():
        assert fused(running(net)[1]), 'back on the CPU: the fused operators again'


@pytest.mark.parametrize('name', MODELS)
def test_network_cast_to_float16_traces_again(name, standard_operators):
    net, x = ran_on_cpu(name)
    net.cast('float16')
    _run_float16(net, x)
    assert running(net), 'the float16 graph was traced'
    assert foreign(running(net)[1], standard_operators) == []


LOAD = textwrap.dedent('''
    import json, sys, warnings
    import mxnet as mx
    warnings.simplefilter('ignore')
    for prefix, names in json.loads(sys.argv[1]):
        net = mx.gluon.SymbolBlock.imports(prefix + '-symbol.json', names,
                                           prefix + '-0000.params')
        inputs = mx.nd.load(prefix + '-inputs.nd')
        out = net(*[inputs[name] for name in names])
        mx.nd.save(prefix + '-outputs.nd', out if isinstance(out, list) else [out])
    assert 'openaff' not in sys.modules
''')


def assert_exports_load_without_openaff(builds, folder, standard_operators):
    """For each ``name: build()`` giving ``(block, inputs)``: ``block.export()`` holds standard
    operators only, and a process that never imports openaff (one for all) loads it with
    ``SymbolBlock.imports`` and computes the block's outputs to float32 round-off."""
    jobs, expected = [], {}
    for name, build in builds.items():
        block, inputs = build()
        inputs = [inputs] if isinstance(inputs, mx.nd.NDArray) else inputs
        outputs = block(*inputs)
        expected[name] = [o.asnumpy() for o in (outputs if isinstance(outputs, list | tuple)
                                                else [outputs])]
        prefix = str(folder / name)
        block.export(prefix)
        assert foreign(mx.sym.load(prefix + '-symbol.json'), standard_operators) == [], name
        if isinstance(block, FusionNetwork) and has_fused_stages(name) and ops.available():
            assert fused(running(block)[1]), f'{name} no longer runs its own graph'
        names = ['data'] if len(inputs) == 1 else [f'data{i}' for i in range(len(inputs))]
        mx.nd.save(prefix + '-inputs.nd', dict(zip(names, inputs)))
        jobs.append((prefix, names))
    _python(LOAD, json.dumps(jobs))
    for (prefix, _), (name, wanted) in zip(jobs, expected.items()):
        for got, want in zip(mx.nd.load(prefix + '-outputs.nd'), wanted):
            np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5,
                                       atol=1e-5 * max(1.0, np.abs(want).max()), err_msg=name)


@pytest.mark.multiprocess
def test_network_exports_load_without_openaff(tmp_path, standard_operators):
    builds = {name: functools.partial(ran_on_cpu, name) for name in FAST_MODELS}
    assert_exports_load_without_openaff(builds, tmp_path, standard_operators)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_every_other_network_export_loads_without_openaff(tmp_path, standard_operators):
    builds = {name: functools.partial(ran_on_cpu, name) for name in list_models()
              if name not in FAST_MODELS}
    assert_exports_load_without_openaff(builds, tmp_path, standard_operators)


def _converted_types(block, target_dtype, inputs):
    """Convert ``block`` with AMP; the dtypes of the converted graph's outputs and of all its
    internal values, for float32 inputs."""
    converted = amp.convert_hybrid_block(block, target_dtype=target_dtype, ctx=mx.cpu())
    names = [f'data{i}' for i in range(len(inputs))] if len(inputs) > 1 else ['data']
    symbol = converted._cached_graph[1]
    internals = symbol.get_internals()
    _, internal_types, _ = internals.infer_type(**{n: 'float32' for n in names})
    _, out_types, _ = symbol.infer_type(**{n: 'float32' for n in names})
    return converted, [np.dtype(t) for t in out_types], {np.dtype(t) for t in internal_types}


@functools.cache
def bfloat16_runs_here():
    """Whether oneDNN runs bfloat16 convolutions on this CPU (it needs AVX-512)."""
    net = gluon.nn.Conv2D(1, 1, in_channels=1)
    net.initialize()
    net.hybridize()
    x = mx.nd.ones((1, 1, 1, 1))
    net(x)
    try:
        amp.convert_hybrid_block(net, target_dtype='bfloat16', ctx=mx.cpu())(x).wait_to_read()
    except mx.base.MXNetError:
        return False
    return True


def needs_bfloat16():
    if not bfloat16_runs_here():
        pytest.skip('running bfloat16 needs a CPU with AVX-512 (its conversion is checked '
                    'by the conversion tests)')


BFLOAT16 = amp.amp.bfloat16
# bfloat16 keeps 8 bits of mantissa: a deep network's outputs move by a few per cent of the
# largest; a wrong graph moves them by their own size
BFLOAT16_TOLERANCE = 0.05


def assert_amp_converts(block, inputs):
    """Both conversions give graphs that type-check, with operators in the lower precision."""
    for dtype, low in (('float16', np.dtype('float16')), ('bfloat16', BFLOAT16)):
        _, out_types, internal = _converted_types(block, dtype, inputs)
        assert low in internal, f'nothing converted to {dtype}'
        assert out_types and all(t == np.float32 for t in out_types), out_types


def assert_bfloat16_close(block, inputs):
    expected = block(*inputs).asnumpy()
    converted = amp.convert_hybrid_block(block, target_dtype='bfloat16', ctx=mx.cpu())
    got = converted(*inputs)
    got = mx.nd.amp_cast(got, dtype='float32') if got.dtype == BFLOAT16 else got
    scale = np.abs(expected).max()
    assert np.abs(got.asnumpy() - expected).max() <= BFLOAT16_TOLERANCE * scale


@pytest.mark.filterwarnings('ignore:Cannot decide type')
@pytest.mark.parametrize('name', MODELS)
def test_network_amp_conversion_type_checks(name):
    net, x = ran_on_cpu(name)
    assert_amp_converts(net, [x])


@pytest.mark.filterwarnings('ignore:Cannot decide type')
@pytest.mark.parametrize('name', MODELS)
def test_network_in_bfloat16_is_close_to_float32(name):
    needs_bfloat16()
    net, x = ran_on_cpu(name)
    assert_bfloat16_close(net, [x])


# ------------------------------------------------------------------ the fusion catalog
@pytest.mark.parametrize('name', FUSIONS)
def test_fusion_block_graphs_hold_standard_operators_off_the_cpu(name, standard_operators):
    block, (x, y) = fusion_ran_on_cpu(name)
    expected = block(x, y).asnumpy()
    with graph_target(mx.gpu(0)):
        assert foreign(block(mx.sym.var('x'), mx.sym.var('y')), standard_operators) == []
    block.collect_params().reset_ctx(ELSEWHERE)
    moved = block(x.as_in_context(ELSEWHERE), y.as_in_context(ELSEWHERE)).asnumpy()
    assert foreign(running(block)[1], standard_operators) == []
    np.testing.assert_allclose(moved, expected, rtol=1e-5, atol=1e-5)
    block.collect_params().reset_ctx(mx.cpu())
    block.cast('float16')
    _run_float16(block, x, y)
    assert foreign(running(block)[1], standard_operators) == []


WEIGHTED_FUSIONS = [name for name in FUSIONS if name != 'DirectAddFuse']  # nothing to convert


@pytest.mark.filterwarnings('ignore:Cannot decide type')
@pytest.mark.parametrize('name', WEIGHTED_FUSIONS)
def test_fusion_block_amp_conversion_type_checks(name):
    block, inputs = fusion_ran_on_cpu(name)
    assert_amp_converts(block, inputs)


@pytest.mark.filterwarnings('ignore:Cannot decide type')
@pytest.mark.parametrize('name', WEIGHTED_FUSIONS)
def test_fusion_block_in_bfloat16_is_close_to_float32(name):
    needs_bfloat16()
    block, inputs = fusion_ran_on_cpu(name)
    assert_bfloat16_close(block, inputs)


@pytest.mark.multiprocess
def test_fusion_block_exports_load_without_openaff(tmp_path, standard_operators):
    builds = {name: functools.partial(fusion_ran_on_cpu, name) for name in FUSIONS}
    assert_exports_load_without_openaff(builds, tmp_path, standard_operators)


# ------------------------------------------------------------------ a network of your own
class OwnNetwork(gluon.HybridBlock):
    def __init__(self, fusion, channels=CHANNELS):
        super().__init__()
        with self.name_scope():
            self.body = gluon.nn.Conv2D(channels, 3, padding=1)
            self.fuse = get_fusion(fusion, channels)

    def hybrid_forward(self, F, x):
        return self.fuse(self.body(x), x)


@pytest.mark.parametrize('fusion', ['AFF', 'iAFF'])
def test_a_fusion_in_your_own_network_is_standard_unless_declared(fusion, standard_operators):
    """Its CachedOp is not openaff's: standard operators, unless a CPU float32 target is
    declared around the trace (then hybridize again before it moves)."""
    net = OwnNetwork(fusion)
    net.initialize(mx.init.Xavier())
    x = random_input(2, CHANNELS, 8, 8)
    expected = net(x).asnumpy()  # imperative, CPU float32: the fused operator
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    assert foreign(net._cached_graph[1], standard_operators) == []
    net.collect_params().reset_ctx(ELSEWHERE)
    net(x.as_in_context(ELSEWHERE)).wait_to_read()  # the same graph runs anywhere
    net.collect_params().reset_ctx(mx.cpu())
    if ops.available():
        net.hybridize()
        with graph_target(mx.cpu()):
            net(x).wait_to_read()
        assert fused(net._cached_graph[1])
    with autograd.record():
        net(x).backward()
