"""MultiAFF: AFF of N inputs. For two it is AFF, parameter for parameter and number for number
(the original's ASKCFuse fixtures); for more, a softmax over the inputs."""
import mxnet as mx
import numpy as np
import pytest
from conftest import COMPAT, compat_index, needs_compat
from mxnet import autograd

from openaff.fusion import MultiAFF
from openaff.store import load_checkpoint

ASKC = needs_compat([name for name, entry in compat_index().items()
                     if entry.get('class') == 'ASKCFuse' and entry['kind'] == 'fusion'])


@pytest.mark.parametrize('hybridize', [False, True])
@pytest.mark.parametrize('fixture', ASKC)
def test_two_inputs_reproduce_the_original_aff(fixture, hybridize):
    entry = compat_index()[fixture]
    arrays = np.load(COMPAT / 'numeric' / entry['arrays'])
    block = MultiAFF(num_inputs=2, **entry['kwargs'])
    load_checkpoint(block, str(COMPAT / 'numeric' / entry['params']))  # strict: same names
    if hybridize:
        block.hybridize()
    inputs = [mx.nd.array(arrays['input0']), mx.nd.array(arrays['input1'])]
    np.testing.assert_allclose(block(*inputs).asnumpy(), arrays['output_inference'],
                               rtol=1e-5, atol=2e-6)
    with autograd.record():
        trained = block(*inputs)
    np.testing.assert_allclose(trained.asnumpy(), arrays['output_train'], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize('num_inputs', [3, 4])
def test_n_inputs_hybridize_train_and_weigh_to_one(num_inputs):
    block = MultiAFF(16, num_inputs, r=4)
    block.initialize(mx.init.Xavier())
    maps = [mx.nd.random.uniform(-1, 1, shape=(2, 16, 6, 6)) for _ in range(num_inputs)]
    imperative = block(*maps).asnumpy()
    block.hybridize()
    np.testing.assert_allclose(block(*maps).asnumpy(), imperative, rtol=1e-5, atol=1e-6)
    for x in maps:
        x.attach_grad()
    with autograd.record():
        out = block(*maps)
    out.backward()
    for name, param in block.collect_params().items():
        if param.grad_req != 'null':
            assert np.abs(param.grad().asnumpy()).sum() > 0, name
    assert all(np.abs(x.grad.asnumpy()).sum() > 0 for x in maps)
    # the weights over the inputs sum to one: N equal inputs give N times the input
    same = block(*[maps[0]] * num_inputs).asnumpy()
    np.testing.assert_allclose(same, num_inputs * maps[0].asnumpy(), rtol=1e-5, atol=1e-5)


def test_wrong_numbers_are_refused():
    with pytest.raises(ValueError, match='num_inputs'):
        MultiAFF(16, 1)
    block = MultiAFF(16, 3)
    block.initialize()
    with pytest.raises(ValueError, match='called with 2'):
        block(mx.nd.ones((1, 16, 4, 4)), mx.nd.ones((1, 16, 4, 4)))


def test_three_inputs_export_to_onnx(tmp_path):
    pytest.importorskip('onnxruntime')
    from openaff.apps.export import export_onnx
    block = MultiAFF(16, 3)
    block.initialize(mx.init.Xavier())
    report = export_onnx(block, str(tmp_path / 'multi.onnx'), (2, 16, 8, 8), num_inputs=3)
    assert report.onnx_error <= report.allowed
