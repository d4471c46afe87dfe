"""Every zoo network and every block: shapes, hybridization, gradients, persistence, export."""
import mxnet as mx
import numpy as np
import pytest
from conftest import (
    assert_every_param_gets_gradient,
    assert_hybrid_matches_imperative,
    ones_for_gammas,
    random_input,
)

import openaff
from openaff import blocks, get_model, list_models, model_info
from openaff.fusion import list_fusions

# ImageNet nets are fully convolutional up to global pooling: 64x64 keeps the CPU tests fast
SMALL_SIZE = {'cifar100': 32, 'imagenet': 64}


def small_input(name, batch=2):
    size = SMALL_SIZE[model_info(name).dataset]
    return random_input(batch, 3, size, size)


def initialized(name, **kwargs):
    """Initialised, with every deferred shape resolved by one forward pass."""
    net = get_model(name, **kwargs)
    net.initialize(mx.init.Xavier())
    net(small_input(name, batch=1))
    return net


@pytest.mark.parametrize('name', list_models())
def test_output_shape(name):
    net = initialized(name)
    assert net(small_input(name)).shape == (2, model_info(name).classes)


@pytest.mark.parametrize('name', list_models())
def test_hybridized_equals_imperative(name):
    net = initialized(name)
    ones_for_gammas(net)
    # training mode normalises the global branches' 1x1 maps over the batch: with two samples
    # their variance can be near zero and round-off decides the sign; eight varied samples
    # keep the comparison well-conditioned
    x = small_input(name, batch=8) + 3 * random_input(8, 3, 1, 1)
    assert_hybrid_matches_imperative(net, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', list_models())
def test_every_parameter_gets_a_gradient(name):
    net = initialized(name)
    ones_for_gammas(net)
    # per-sample offsets: with near-identical pooled maps the ReLU of a small global branch
    # (8 units in AFF-ResNet-20's stage 2) can be off for the whole batch at initialisation
    x = small_input(name, batch=3) + 3 * random_input(3, 3, 1, 1)
    assert_every_param_gets_gradient(net, x)


@pytest.mark.parametrize('name', list_models())
def test_save_load_round_trip(name, tmp_path):
    net, x = initialized(name), small_input(name)
    expected = net(x).asnumpy()
    net.save_parameters(str(tmp_path / 'net.params'))
    loaded = get_model(name, pretrained=str(tmp_path / 'net.params'))
    np.testing.assert_array_equal(loaded(x).asnumpy(), expected)


@pytest.mark.parametrize('name', list_models())
def test_export_to_symbol_json_and_reload(name, tmp_path):
    net, x = initialized(name), small_input(name)
    net.hybridize()
    expected = net(x).asnumpy()
    net.export(str(tmp_path / 'net'))
    loaded = mx.gluon.SymbolBlock.imports(str(tmp_path / 'net-symbol.json'), ['data'],
                                          str(tmp_path / 'net-0000.params'))
    np.testing.assert_allclose(loaded(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', list_models(pretrained=True))
def test_released_weights_are_named_architecture_dot_tag(name):
    """timm's ``architecture.tag``: the architecture builds the network, the tag picks the
    released weights and their label set."""
    arch, tag = name.split('.')
    info = model_info(name)
    assert info.release is not None and info.labels == tag
    assert arch in list_models() and model_info(arch).builder is info.builder


@pytest.mark.parametrize('old, new', [('cifar_aff_resnet32', 'cifar_aff_resnet32.fine'),
                                      ('cifar_aff_resnet32_coarse', 'cifar_aff_resnet32.coarse'),
                                      ('cifar_aff_resnext47_32x4d_coarse',
                                       'cifar_aff_resnext47_32x4d.coarse'),
                                      ('aff_resnet50', 'aff_resnet50.imagenet')])
def test_earlier_names_still_resolve(old, new):
    assert model_info(old) is model_info(new)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match='aff_resnet50'):
        get_model('resnet_aff_50')


def test_kwargs_override_the_named_configuration():
    net = initialized('cifar_aff_resnet32', classes=10, layers=[1, 1, 1])
    assert net(random_input(1, 3, 32, 32)).shape == (1, 10)
    assert net.model_info.args['classes'] == 10


def test_model_without_release_refuses_pretrained():
    with pytest.raises(ValueError, match='no released checkpoint'):
        get_model('cifar_iaff_resnet32', pretrained=True)


def _zero_gamma_count(net):
    return sum(1 for key, p in net._collect_params_with_prefix().items()
               if key.endswith('gamma') and not p.data().asnumpy().any())


@pytest.mark.parametrize('builder, block_key', [
    ('imagenet_resnext', 'features.10.0.body.7.gamma'),
    ('imagenet_resnet', 'layer1.0.bn3.gamma'),
    ('cifar_resnext', 'features.3.0.body.7.gamma'),
])
def test_last_gamma_means_what_it_says(builder, block_key):
    small = {
        'imagenet_resnext': lambda lg: openaff.models.AFFResNeXt(
            'ASKCFuse', 3, [1, 1, 1, 1], 4, 4, classes=10, last_gamma=lg),
        'imagenet_resnet': lambda lg: openaff.models.AFFResNet(
            'ASKCFuse', 3, [1, 1, 1, 1], classes=10, last_gamma=lg),
        'cifar_resnext': lambda lg: openaff.models.CIFARAFFResNeXt(
            'ASKCFuse', 1, [1, 1, 1], [16], 4, 4, classes=10, last_gamma=lg),
    }[builder]
    for last_gamma in (True, False):
        net = small(last_gamma)
        net.initialize()
        net(random_input(1, 3, 32, 32))
        gamma = net._collect_params_with_prefix()[block_key].data().asnumpy()
        assert (not gamma.any()) == last_gamma


@pytest.mark.parametrize('name', ['aff_resnext50_32x4d', 'cifar_aff_resnext47_32x4d'])
def test_released_resnext_networks_zero_init_like_the_released_runs(name):
    """The released ResNeXt runs trained with zero-initialised last BN gammas (their block
    inverted the flag): the zoo networks start the same way."""
    net = initialized(name, layers=[1] * len(model_info(name).args['layers']))
    last = [key for key in net._collect_params_with_prefix() if key.endswith('body.7.gamma')]
    assert last and _zero_gamma_count(net) >= len(last)


@pytest.mark.parametrize('fusion_name', list_fusions())
@pytest.mark.parametrize('block', ['resv2', 'bottleneck', 'resnext'])
def test_any_fusion_in_any_block(block, fusion_name):
    net, out_channels = {
        'resv2': lambda: (blocks.AFFResBlockV2(fusion_name, 16, 2, downsample=True,
                                               in_channels=8), 16),
        'bottleneck': lambda: (blocks.AFFBottleneck(
            fusion_name, 4, downsample=mx.gluon.nn.Conv2D(16, 1, use_bias=False)), 16),
        'resnext': lambda: (blocks.AFFResNeXtBlock(fusion_name, 16, 2, 8, 2, downsample=True),
                            64),
    }[block]()
    net.initialize()
    # per-sample channel offsets make the pooled (1x1) maps differ between samples, so a ReLU
    # in a global branch is not dead for the whole batch by chance
    x = random_input(8, 8, 8, 8) + 3 * random_input(8, 8, 1, 1)
    out = net(x)
    assert out.shape[:2] == (8, out_channels)
    ones_for_gammas(net)
    assert_every_param_gets_gradient(net, x)


def test_block_accepts_a_fusion_factory():
    made = []

    def my_fusion(channels):
        made.append(channels)
        return openaff.fusion.ASKCFuse(channels, r=2)

    block = blocks.AFFResBlockV2(my_fusion, 16, 1, in_channels=16)
    block.initialize()
    assert block(random_input(1, 16, 4, 4)).shape == (1, 16, 4, 4) and made == [16]


def test_start_layer_keeps_early_stages_plain():
    net = openaff.models.CIFARAFFResNet('ASKCFuse', 3, [1, 1, 1], [8, 8, 16, 32], 10, False)
    kinds = [type(stage[0].attention).__name__ for stage in list(net.features)[2:5]]
    assert kinds == ['DirectAddFuse', 'DirectAddFuse', 'ASKCFuse']


def test_sync_batchnorm_can_be_used():
    from mxnet.gluon.contrib.nn import SyncBatchNorm
    net = get_model('cifar_aff_resnet32', layers=[1, 1, 1], norm_layer=SyncBatchNorm,
                    norm_kwargs={'num_devices': 1})
    net.initialize()
    assert net(random_input(2, 3, 32, 32)).shape == (2, 100)
    assert any(isinstance(b, SyncBatchNorm) for b in net.features)


@pytest.mark.parametrize('name', list_models())
def test_a_misspelt_argument_is_refused_not_ignored(name):
    """``get_model('aff_resnet50', clases=10)`` once built a 1000-class network."""
    with pytest.raises(ValueError, match=r"unknown argument\(s\) clases; valid: .*classes"):
        get_model(name, clases=10)


@pytest.mark.parametrize('builder', ['AFFResNet', 'AFFResNeXt', 'CIFARAFFResNet',
                                     'CIFARAFFResNeXt'])
def test_network_constructors_refuse_unknown_arguments(builder):
    from openaff import models
    args = {'AFFResNet': ('ASKCFuse', 3, [1, 1, 1, 1]),
            'AFFResNeXt': ('ASKCFuse', 3, [1, 1, 1, 1], 32, 4),
            'CIFARAFFResNet': ('ASKCFuse', 1, [1, 1, 1], [8, 8, 16, 32], 10, False),
            'CIFARAFFResNeXt': ('ASKCFuse', 1, [1, 1, 1], [16, 16, 32, 64], 4, 4)}[builder]
    with pytest.raises(TypeError, match='clases'):
        getattr(models, builder)(*args, clases=10)


def test_builders_are_looked_up_by_the_name_checkpoints_record():
    from openaff.models import BUILDERS, build_network, builder_name
    for name, builder in BUILDERS.items():
        assert builder_name(builder) == name
    net = build_network('CIFARAFFResNet', dict(askc_type='AFF', start_layer=1, layers=[1, 1, 1],
                                               channels=[8, 8, 16, 32], classes=10,
                                               deep_stem=False))
    assert isinstance(net, openaff.models.CIFARAFFResNet)
    with pytest.raises(ValueError, match='registered: CIFARAFFResNet'):
        build_network('ResNetOfMyOwn', {})
    with pytest.raises(ValueError, match='not a registered network builder'):
        builder_name(mx.gluon.nn.Dense)


def test_both_global_poolings_give_the_same_network(tmp_path):
    """Adaptive pooling (CIFAR's default, for its fast backward) and the pooling operator
    (ImageNet's): the same outputs and gradients for the same weights, in a network."""
    from openaff.fusion.core import global_pooling
    x, y = random_input(4, 3, 32, 32), mx.nd.array([0, 1, 2, 3])
    results = []
    for kind in ('adaptive', 'operator'):
        with global_pooling(kind):
            net = get_model('cifar_aff_resnet20', classes=10)
        net.initialize(mx.init.Xavier())
        net(x)
        if kind == 'adaptive':
            net.save_parameters(str(tmp_path / 'w.params'))
            assert net.features[2][0].attention.global_att[0]._adaptive
        else:
            net.load_parameters(str(tmp_path / 'w.params'))
        with mx.autograd.record():
            out = net(x)
            loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(out, y)
        loss.backward()
        results.append((out.asnumpy(), {k: p.grad().asnumpy() for k, p in
                                        net._collect_params_with_prefix().items()
                                        if p.grad_req != 'null'}))
    (out_a, grads_a), (out_o, grads_o) = results
    np.testing.assert_allclose(out_a, out_o, rtol=1e-5, atol=1e-6)
    for name in grads_a:
        np.testing.assert_allclose(grads_a[name], grads_o[name], rtol=1e-4, atol=1e-6)
    assert not get_model('aff_resnet50').layer3[0].attention.global_att[0]._adaptive
