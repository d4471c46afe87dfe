"""AFF-Inception (the same-layer scenario): the MultiAFF merge inside a network, its
concatenation twin's budget, and training it with the CIFAR script. The zoo-wide tests
(shapes, hybridization, gradients, persistence, export) cover both zoo entries."""
import mxnet as mx
import numpy as np
import pytest
from conftest import random_input

from openaff import get_model
from openaff.models import CIFARInception
from openaff.models.inception import inception_merge


def _fuse_weights(net):
    """Kernel weights (4-D) of the merges of every module: MultiAFF's or the projection's."""
    return sum(int(np.prod(p.shape)) for name, p in net._collect_params_with_prefix().items()
               if '.fuse.' in name and name.endswith('weight') and len(p.shape) == 4)


def _built(askc_type, **kwargs):
    net = CIFARInception(askc_type, layers=[1, 1], channels=[8, 8, 16], classes=5, **kwargs)
    net.initialize(mx.init.Xavier())
    net(random_input(2, 3, 16, 16))
    return net


def test_the_concatenation_twin_has_the_fusions_weight_budget():
    aff, concat, add = (_built(m) for m in ('AFF', 'concat', 'DirectAdd'))
    assert _fuse_weights(aff) == _fuse_weights(concat) > 0
    assert _fuse_weights(add) == 0
    branch = lambda net: sorted(  # noqa: E731
        p.shape for n, p in net._collect_params_with_prefix().items() if '.fuse.' not in n)
    assert branch(aff) == branch(concat) == branch(add)  # everything else is the same network


def test_the_branches_are_fused_by_multiaff_with_the_networks_gradients():
    """The attention really weighs the branches: a training step moves MultiAFF's weights,
    and zeroing its logits' last BatchNorm makes it the sum of the branches (a = 1/N each)."""
    net = _built('AFF')
    x, y = random_input(4, 3, 16, 16), mx.nd.array([0, 1, 2, 3])
    module = net.features[1][0]
    with mx.autograd.record():
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(net(x), y)
    loss.backward()
    fuse_grads = [p.grad().abs().sum().asscalar()
                  for n, p in module._collect_params_with_prefix().items()
                  if n.startswith('fuse.') and p.grad_req != 'null']
    assert len(fuse_grads) >= 8 and all(g > 0 for g in fuse_grads)
    for branch in (module.fuse.local_att, module.fuse.global_att):
        branch[-1].gamma.set_data(mx.nd.zeros_like(branch[-1].gamma.data()))
        branch[-1].beta.set_data(mx.nd.zeros_like(branch[-1].beta.data()))
    inputs = mx.nd.random.uniform(shape=(2, 8, 16, 16))
    outs = [b(inputs) for b in module.branches]
    np.testing.assert_allclose(module.fuse(*outs).asnumpy(), sum(outs).asnumpy(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('askc_type, merge', [('AFF', 'AFF'), ('ASKCFuse', 'AFF'),
                                               ('multiaff', 'AFF'), ('concat', 'concat'),
                                               ('DirectAdd', 'DirectAdd')])
def test_fusion_names_select_the_merge(askc_type, merge):
    assert inception_merge(askc_type) == merge


@pytest.mark.parametrize('kwargs, message', [
    (dict(askc_type='iAFF'), 'merges its branches by AFF, concat or DirectAdd'),
    (dict(kernels=((3, 1),)), 'at least 2'),
    (dict(kernels=((2, 1), (3, 1))), 'odd kernel'),
    (dict(layers=[2, 2]), 'channels needs'),
])
def test_bad_configurations_are_refused_before_building(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_model('cifar_aff_inception', **kwargs)


def test_train_cifar_trains_aff_inception_and_its_twin(tmp_path, capsys):
    from openaff.cli import train_cifar
    common = ['--dataset', 'digits', '--model', 'inception', '--num-epochs', '1',
              '--channel-times', '1', '--batch-size', '32', '-j', '0']
    for merge in ('AFF', 'concat'):
        out = tmp_path / merge
        assert train_cifar.main(common + ['--askc-type', merge, '--save-dir', str(out),
                                          '--logging-dir', str(out), '--save-plot-dir',
                                          str(out)]) == 0
        assert list(out.glob('*-inception-3-*best.params'))
    assert train_cifar.main(common + ['--askc-type', 'iAFF']) == 2
    assert 'AFF, concat or DirectAdd' in capsys.readouterr().err
