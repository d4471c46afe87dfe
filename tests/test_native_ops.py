"""The native fused soft selection (openaff.ops): same numbers and gradients as the original
algebra, really used where it applies, and a clean fallback where it cannot be built."""
import json
import os
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from conftest import REPO, random_input

from openaff import fusion, ops
from openaff.fusion import get_fusion, list_fusions

CHANNELS = 16

if shutil.which(os.environ.get('CXX', 'g++')) is None:
    pytest.skip('no C++ compiler: the native operators cannot be built here',
                allow_module_level=True)


def fused_fusions():
    """Catalog entries with at least one stage the native operator computes."""
    return [name for name in list_fusions()
            if any(getattr(get_fusion(name, CHANNELS), "_fused_pairs", ()))]


def test_the_library_builds_and_loads():
    assert ops.available(), 'a compiler is present, so the native operators must load'


def test_aff_and_iaff_are_fused():
    assert {'ASKCFuse', 'ResGlobLocaforGlobLocaChaFuse', 'LCNASKCFuse'} <= set(fused_fusions())


def _run(name, impl, hybridize, x, y):
    """Output, input gradients and parameter gradients of a freshly seeded block."""
    mx.random.seed(7)
    with fusion.implementation(impl):
        block = get_fusion(name, channels=CHANNELS)
        block.initialize(mx.init.Normal(0.5))
        if hybridize:
            block.hybridize()
        x, y = x.copy(), y.copy()
        x.attach_grad()
        y.attach_grad()
        with mx.autograd.record():
            out = block(x, y)
        out.backward(mx.nd.array(np.linspace(-1, 1, out.size).reshape(out.shape)))
    grads = {name: p.grad().asnumpy() for name, p in block._collect_params_with_prefix().items()
             if p.grad_req != 'null'}
    return block, dict(out=out.asnumpy(), dx=x.grad.asnumpy(), dy=y.grad.asnumpy(), **grads)


@pytest.mark.parametrize('hybridize', [False, True], ids=['imperative', 'hybridized'])
@pytest.mark.parametrize('name', fused_fusions())
def test_native_matches_the_reference_algebra(name, hybridize):
    x, y = random_input(2, CHANNELS, 5, 6), random_input(2, CHANNELS, 5, 6)
    block, native = _run(name, 'native', hybridize, x, y)
    _, reference = _run(name, 'reference', hybridize, x, y)
    if hybridize:
        graph = block._device_graph[1].tojson()
        assert 'openaff_soft_select' in graph, 'the native operator was not used'
    scale = max(np.abs(g).max() for g in reference.values())
    for name, expected in reference.items():
        if name.endswith('bias'):
            # every branch convolution feeds a BatchNorm, which cancels its bias: the exact
            # gradient is 0 and both algebras give rounding noise, not comparable values
            assert max(np.abs(native[name]).max(), np.abs(expected).max()) < 1e-4 * scale
        else:
            np.testing.assert_allclose(native[name], expected, rtol=1e-4, atol=1e-5,
                                       err_msg=name)


def test_unfused_stages_keep_the_python_algebra():
    block = get_fusion('MSCAM', channels=CHANNELS)
    block.initialize()
    block.hybridize()
    block(random_input(1, CHANNELS, 3, 3), random_input(1, CHANNELS, 3, 3))
    assert 'openaff_soft_select' not in block._device_graph[1].tojson()


def test_float64_networks_use_the_python_algebra():
    block = get_fusion('AFF', channels=CHANNELS)
    block.initialize()
    block.cast('float64')
    block.hybridize()
    x = random_input(1, CHANNELS, 3, 3).astype('float64')
    out = block(x, x)
    assert out.dtype == np.float64
    assert 'openaff_soft_select' not in block._device_graph[1].tojson()


@pytest.mark.parametrize('shapes, message', [
    (((2, 4, 3, 3), (2, 4, 1, 1), (2, 4, 3, 3), (2, 4, 3, 2)), 'one shape'),
    (((2, 4, 3, 3), (2, 4, 3, 3), (2, 4, 3, 3), (2, 4, 3, 3)), '(N, C, 1'),
])
def test_operator_rejects_mismatched_shapes(shapes, message):
    assert ops.available()
    arrays = [mx.nd.ones(shape) for shape in shapes]
    with pytest.raises(mx.base.MXNetError, match=message.replace('(', r'\(')):
        mx.nd.openaff_soft_select(*arrays, scale=2).wait_to_read()


def _python(code, **env):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **env}, timeout=300)


PROBE = '''
import json, warnings
import mxnet as mx
from openaff import ops
from openaff.fusion import get_fusion
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    block = get_fusion('AFF', channels=8)
    block.initialize()
    block.hybridize()
    out = block(mx.nd.ones((1, 8, 2, 2)), mx.nd.ones((1, 8, 2, 2)))
print(json.dumps({'available': ops.available(), 'shape': out.shape,
                  'native': 'openaff_soft_select' in block._device_graph[1].tojson(),
                  'warnings': [str(w.message) for w in caught]}))
'''


@pytest.mark.multiprocess
def test_switched_off_by_the_environment(tmp_path):
    done = _python(PROBE, OPENAFF_NATIVE_OPS='0', OPENAFF_CACHE=str(tmp_path))
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {'available': False, 'shape': [1, 8, 2, 2], 'native': False,
                      'warnings': []}


@pytest.mark.multiprocess
def test_a_failed_build_warns_once_and_falls_back(tmp_path):
    done = _python(PROBE, CXX='false', OPENAFF_CACHE=str(tmp_path))
    report = json.loads(done.stdout.splitlines()[-1])
    assert not report['available'] and not report['native']
    assert report['shape'] == [1, 8, 2, 2]
    assert len(report['warnings']) == 1 and 'Python algebra' in report['warnings'][0]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_ahead_of_time_build_command(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'openaff.cli.ops'], capture_output=True,
                          text=True, cwd=REPO, timeout=300,
                          env={**os.environ, 'OPENAFF_CACHE': str(tmp_path)})
    assert done.returncode == 0, done.stderr
    built = tmp_path / 'ops'
    library = os.path.basename(done.stdout.strip())
    assert sorted(p.name for p in built.iterdir()) == [library, library + '.sha256']
    assert os.path.getsize(done.stdout.strip()) > 10_000


@pytest.mark.multiprocess
@pytest.mark.slow
def test_a_damaged_cached_library_is_rebuilt_not_loaded(tmp_path):
    """A library cut short (a build killed mid-copy, a full disk) killed every later process
    that loaded it with SIGBUS; its size and hash are now checked before loading."""
    assert _python(PROBE, OPENAFF_CACHE=str(tmp_path)).returncode == 0
    library = next((tmp_path / 'ops').glob('*.so'))
    library.write_bytes(library.read_bytes()[:4096])
    done = _python(PROBE, OPENAFF_CACHE=str(tmp_path))
    assert done.returncode == 0, done.stderr[-1000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report['available'] and report['native'] and report['warnings'] == []
    assert library.stat().st_size > 10_000


@pytest.mark.multiprocess
@pytest.mark.slow
def test_loads_and_runs_beside_horovod(tmp_path):
    """Regression: before the library kept its C++ symbols private, loading it after
    horovod.mxnet died with SIGFPE, and running it next to horovod with "free(): invalid
    pointer"."""
    pytest.importorskip('horovod.mxnet')
    done = _python('import horovod.mxnet\n' + PROBE, OPENAFF_CACHE=str(tmp_path))
    assert done.returncode == 0, done.stderr[-1000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {'available': True, 'shape': [1, 8, 2, 2], 'native': True,
                      'warnings': []}


def _python_select(local, glob, x, fourth, scale, y_is_sum):
    """The operator's definition in plain MXNet algebra (autograd gives its gradients)."""
    y = fourth - x if y_is_sum else fourth
    w = mx.nd.sigmoid(mx.nd.broadcast_add(local, glob))
    return scale * (y + w * (x - y))


def _select_with_gradients(native, inputs, head, **attrs):
    arrays = [mx.nd.array(value, dtype='float32') for value in inputs]
    for array in arrays:
        array.attach_grad()
    with mx.autograd.record():
        out = mx.nd.openaff_soft_select(*arrays, **attrs) if native else \
            _python_select(*arrays, attrs.get('scale', 1), attrs.get('y_is_sum', False))
    out.backward(mx.nd.array(head))
    return [out.asnumpy()] + [a.grad.asnumpy() for a in arrays]


@pytest.mark.parametrize('y_is_sum', [False, True], ids=['y', 'sum'])
def test_operator_options_match_their_definition(y_is_sum):
    """``y_is_sum`` (the fourth input is x + y): outputs and the gradients of all four inputs,
    against the MXNet algebra."""
    assert ops.available()
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal(s) for s in [(2, 5, 3, 4), (2, 5, 1, 1), (2, 5, 3, 4),
                                                (2, 5, 3, 4)]]
    head = np.linspace(-1, 1, 120).reshape(2, 5, 3, 4)
    native = _select_with_gradients(True, inputs, head, scale=2, y_is_sum=y_is_sum)
    python = _select_with_gradients(False, inputs, head, scale=2, y_is_sum=y_is_sum)
    for got, expected in zip(native, python):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _exact_select(local, glob, x, y, scale, head):
    """Outputs and input gradients in float64 numpy, with a sigmoid that cannot overflow."""
    z = local + glob
    e = np.exp(-np.abs(z))
    w = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    grad = scale * head
    d_logit = grad * (x - y) * w * (1 - w)
    return [scale * (y + w * (x - y)), d_logit, d_logit.sum(axis=(2, 3), keepdims=True),
            grad * w, grad * (1 - w)]


FLOAT32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize('logit', [100.0, -100.0, 1000.0, -1000.0, 88.8, -88.8, 87.5, -87.5,
                                   FLOAT32_MAX, -FLOAT32_MAX, 0.0, 1e-30])
def test_extreme_logits_give_finite_exact_outputs_and_gradients(logit):
    """Logits far outside sigmoid's working range (where a fast-math exp gave NaN below
    -88.7): outputs and every gradient stay finite and equal to float64 within float32
    round-off, the local/global split of the logit included."""
    assert ops.available()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    local = np.full((2, 3, 4, 4), logit / 2) + rng.standard_normal((2, 3, 4, 4)) * 0.5
    glob = np.full((2, 3, 1, 1), logit / 2)
    inputs = [v.astype(np.float32).astype(np.float64) for v in (local, glob, x, y)]
    head = rng.standard_normal(x.shape)
    got = _select_with_gradients(True, inputs, head, scale=2)
    expected = _exact_select(*inputs, 2, head)
    for name, value, exact in zip(('out', 'd_local', 'd_global', 'd_x', 'd_y'), got, expected):
        assert np.all(np.isfinite(value)), name
        np.testing.assert_allclose(value, exact, rtol=1e-5, atol=1e-6, err_msg=name)


def test_float32_extremes_in_the_maps_stay_finite():
    """x and y near the float32 limits with logits that saturate the sigmoid either way."""
    big = np.float32(1e38)
    x = np.full((1, 2, 2, 2), big, np.float32)
    y = np.full((1, 2, 2, 2), -big, np.float32)
    local = np.array([1000.0, -1000.0], np.float32).reshape(1, 2, 1, 1) * np.ones((1, 2, 2, 2))
    glob = np.zeros((1, 2, 1, 1), np.float32)
    out, *grads = _select_with_gradients(True, [local, glob, x, y], np.ones(x.shape), scale=1)
    np.testing.assert_array_equal(out[0, 0], big)
    np.testing.assert_array_equal(out[0, 1], -big)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_nan_logits_propagate():
    """A diverged network must not be hidden: NaN in, NaN out."""
    local = np.full((1, 1, 2, 2), np.nan, np.float32)
    out = _select_with_gradients(True, [local, np.zeros((1, 1, 1, 1)), np.ones((1, 1, 2, 2)),
                                        np.zeros((1, 1, 2, 2))], np.ones((1, 1, 2, 2)))[0]
    assert np.all(np.isnan(out))
