"""Parity with the original open-aff code: fixtures in ../shared/compat made by running it."""
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon.nn import BatchNorm

from openaff import blocks, fusion, get_model, models
from openaff.store import load_checkpoint
from openaff.summary import summarize
from conftest import COMPAT, compat_index, needs_compat, released_manifest

INDEX = compat_index()
MANIFEST = released_manifest()


def build_counterpart(entry):
    kwargs = dict(entry['kwargs'])
    if entry['kind'] == 'fusion':
        return getattr(fusion, entry['class'])(**kwargs)
    if entry['kind'] == 'block':
        if entry['class'] == 'AFFBottleneck':
            kwargs['norm_layer'] = BatchNorm  # what the fixture script passed
        return getattr(blocks, entry['class'])(entry['askc_type'], **kwargs)
    return getattr(models, entry['class'])(**kwargs)


def close(actual, expected, scale_tol):
    """float32 round-off: 1e-4 relative, and 1e-4 of the output's scale absolute when
    ``scale_tol`` (train-mode BatchNorm on a batch of two is ill-conditioned: in float64 the
    ResNeXt fixtures' own train outputs are 7e-4 off, and mxnet's thread count alone moves
    ours by 1e-5), else the README's 1e-5."""
    atol = 1e-4 * max(1.0, float(np.abs(expected).max())) if scale_tol else 1e-5
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=atol)


@pytest.mark.parametrize('name', needs_compat(sorted(INDEX)))
@pytest.mark.parametrize('hybridize', [False, True], ids=['imperative', 'hybrid'])
def test_fixture_loads_strictly_and_reproduces_outputs(name, hybridize):
    entry = INDEX[name]
    net = build_counterpart(entry)
    report = load_checkpoint(net, str(COMPAT / 'numeric' / entry['params']))
    assert not (report.missing or report.unexpected or report.skipped)
    if entry.get('saved_dtypes'):
        assert report.cast, 'a float16 checkpoint should have been cast to float32'
    assert all(np.dtype(p.dtype) == np.float32 for p in net.collect_params().values())
    arrays = np.load(COMPAT / 'numeric' / entry['arrays'])
    inputs = [mx.nd.array(arrays[key]) for key in ('input0', 'input1') if key in arrays]
    if hybridize:
        net.hybridize()
    close(net(*inputs).asnumpy(), arrays['output_inference'], scale_tol=False)
    if 'output_train' in arrays:
        with mx.autograd.record(train_mode=True):
            train_out = net(*inputs).asnumpy()
        close(train_out, arrays['output_train'], scale_tol=True)


@pytest.mark.parametrize('name', needs_compat(sorted(INDEX)))
def test_fixture_parameter_count(name):
    entry = INDEX[name]
    net = build_counterpart(entry)
    load_checkpoint(net, str(COMPAT / 'numeric' / entry['params']))
    assert sum(p.data().size for p in net.collect_params().values()) == entry['num_params']


@pytest.mark.parametrize('name', needs_compat(sorted(MANIFEST)))
def test_zoo_matches_released_keys_shapes_order_and_count(name):
    expected = MANIFEST[name]
    net = get_model(name)
    net.initialize()
    net(mx.nd.zeros(expected['input_shape']))
    got = [[key, list(param.shape)] for key, param in net._collect_params_with_prefix().items()]
    assert got == [[key, shape] for key, shape, _ in expected['params']]
    result = summarize(net, input_shape=expected['input_shape'])
    assert result.total_params == expected['num_params']
    assert result.weight_params == expected['num_trainable_params']
    if expected['readme_params_M'] is not None:
        # the original README's figures are within 0.1M (e.g. 9.7 for 9.61M)
        assert abs(result.weight_params / 1e6 - expected['readme_params_M']) <= 0.1
