"""Every fusion of the catalog: shapes, hybridization, gradients, lookup, persistence."""
import mxnet as mx
import numpy as np
import pytest
from conftest import (
    assert_every_param_gets_gradient,
    assert_hybrid_matches_imperative,
    random_input,
)

from openaff import fusion
from openaff.fusion import FUSIONS, get_fusion, list_fusions, resolve_fusion_name

CHANNELS = 16


def build(name):
    block = get_fusion(name, channels=CHANNELS)
    block.initialize()
    return block


@pytest.mark.parametrize('name', list_fusions())
def test_output_has_the_shape_of_x(name):
    x, y = random_input(2, CHANNELS, 5, 7), random_input(2, CHANNELS, 5, 7)
    assert build(name)(x, y).shape == x.shape


@pytest.mark.parametrize('name', list_fusions())
def test_hybridized_equals_imperative(name):
    assert_hybrid_matches_imperative(build(name), random_input(2, CHANNELS, 6, 6),
                                     random_input(2, CHANNELS, 6, 6))


LEARNABLE = [name for name in list_fusions() if name != 'DirectAddFuse']


def test_direct_add_has_no_parameters():
    assert not list(build('DirectAdd').collect_params().keys())


@pytest.mark.parametrize('name', LEARNABLE)
def test_every_parameter_gets_a_gradient(name):
    assert_every_param_gets_gradient(build(name), random_input(4, CHANNELS, 6, 6),
                                     random_input(4, CHANNELS, 6, 6))


@pytest.mark.parametrize('name', list_fusions())
def test_save_load_round_trip(name, tmp_path):
    x, y = random_input(2, CHANNELS, 4, 4), random_input(2, CHANNELS, 4, 4)
    block = build(name)
    expected = block(x, y).asnumpy()
    block.save_parameters(str(tmp_path / 'f.params'))
    fresh = get_fusion(name, channels=CHANNELS)
    fresh.load_parameters(str(tmp_path / 'f.params'))
    np.testing.assert_array_equal(fresh(x, y).asnumpy(), expected)


@pytest.mark.parametrize('name', list_fusions())
def test_export_to_symbol_and_reload(name, tmp_path):
    x, y = random_input(2, CHANNELS, 4, 4), random_input(2, CHANNELS, 4, 4)
    block = build(name)
    block.hybridize()
    expected = block(x, y).asnumpy()
    block.export(str(tmp_path / 'fusion'))
    loaded = mx.gluon.SymbolBlock.imports(str(tmp_path / 'fusion-symbol.json'),
                                          ['data0', 'data1'], str(tmp_path / 'fusion-0000.params'))
    np.testing.assert_allclose(loaded(x, y).asnumpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('alias, cls', [
    ('DirectAdd', fusion.DirectAddFuse), ('ASKCFuse', fusion.ASKCFuse),
    ('AFF', fusion.ASKCFuse), ('iAFF', fusion.ResGlobLocaforGlobLocaChaFuse),
    ('ResGlobLocaforGlobLocaCha', fusion.ResGlobLocaforGlobLocaChaFuse),
    ('AXYforXY', fusion.AXYforXYAddFuse), ('AXYforXplusY', fusion.AXYforXplusYAddFuse),
    ('ResLocalLocaCha', fusion.ResLocaLocaChaFuse), ('MSCAM', fusion.MSCAM),
    ('ms-cam', fusion.MSCAM), ('askcfuse', fusion.ASKCFuse), ('Concat', fusion.ConcatFuse),
])
def test_get_fusion_accepts_askc_types_and_paper_names(alias, cls):
    assert type(get_fusion(alias, channels=8)) is cls


def test_unknown_fusion_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        get_fusion('NoSuchFuse', 8)
    assert 'ASKCFuse' in str(err.value) and 'iAFF' in str(err.value)
    with pytest.raises(ValueError):
        resolve_fusion_name(None)


def test_reduction_ratio_reaches_blocks_that_have_one():
    aff = get_fusion('AFF', 64, r=16)
    assert aff.local_att[0]._channels == 4
    # fixed-layout blocks ignore r instead of failing
    assert isinstance(get_fusion('ConcatASKC', 64, r=16), fusion.ConcatASKC)


def test_paper_aliases_are_the_original_classes():
    assert fusion.AFF is fusion.ASKCFuse
    assert fusion.iAFF is fusion.ResGlobLocaforGlobLocaChaFuse


def test_catalog_is_complete():
    original = {
        'DirectAddFuse', 'ASKCFuse', 'ResGlobLocaforGlobLocaChaFuse', 'ResGlobLocaChaFuse',
        'AXYforXplusYAddFuse', 'AXYforXYAddFuse', 'ResGlobChaFuse', 'ResLocaChaFuse',
        'ResLocaLocaChaFuse', 'ResGlobGlobChaFuse', 'ConcatFuse', 'ResGlobforGlobChaFuse',
        'ResLocaforLocaChaFuse', 'AYforXplusYAddFuse', 'XplusAYforYAddFuse', 'SEFuse',
        'GAUFuse', 'SKFuse', 'HalfASKCFuse', 'ConcatASKCFuse', 'DepthASKCFuse',
        'Depth4ASKCFuse', 'AddReLUASKCFuse', 'LCNASKCFuse', 'ConcatASKC', 'RASKCFuse',
        'TwoConcatASKC'}
    assert original <= set(FUSIONS)
    assert all(hasattr(fusion, name) for name in original)


def test_iaff_uses_its_second_global_branch():
    """The PyTorch copies' bug: global_att2 dead. Here changing it must change the output."""
    block = build('iAFF')
    x, y = random_input(2, CHANNELS, 4, 4), random_input(2, CHANNELS, 4, 4)
    before = block(x, y).asnumpy()
    bias = block.global_att2[4].bias
    bias.set_data(bias.data() + 1)
    assert not np.allclose(block(x, y).asnumpy(), before)


def test_aff_is_the_papers_soft_selection():
    """Z = 2 * (M * X + (1 - M) * Y) with M = sigmoid(L(X+Y) + G(X+Y))."""
    block = build('AFF')
    x, y = random_input(2, CHANNELS, 4, 4), random_input(2, CHANNELS, 4, 4)
    s = x + y
    m = mx.nd.sigmoid(mx.nd.broadcast_add(block.local_att(s), block.global_att(s)))
    expected = 2 * (m * x + (1 - m) * y)
    np.testing.assert_allclose(block(x, y).asnumpy(), expected.asnumpy(), rtol=1e-5, atol=1e-6)


def test_as_backbone_returns_the_weights():
    block = fusion.ResGlobChaFuse(CHANNELS, asBackbone=True)
    block.initialize()
    out = block(random_input(2, CHANNELS, 4, 4), random_input(2, CHANNELS, 4, 4)).asnumpy()
    assert out.shape == (2, CHANNELS, 1, 1) and out.min() > 0 and out.max() < 1


def test_two_concat_askc_runs_where_the_original_failed():
    block = build('TwoConcatASKC')
    out = block(random_input(2, CHANNELS, 8, 8), random_input(2, CHANNELS, 8, 8))
    assert out.shape == (2, CHANNELS, 8, 8)
    keys = list(block._collect_params_with_prefix())
    assert keys[0] == 'pre_att.0.weight' and keys[-1] == 'post_att.1.running_var'


@pytest.mark.parametrize('name', LEARNABLE)
def test_fast_algebra_matches_the_reference(name):
    x, y = random_input(2, CHANNELS, 5, 5), random_input(2, CHANNELS, 5, 5)
    block = build(name)
    with fusion.implementation('fast'):
        fast = block(x, y).asnumpy()
    with fusion.implementation('reference'):
        reference = block(x, y).asnumpy()
        block.hybridize()
        reference_hybrid = block(x, y).asnumpy()
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reference_hybrid, reference, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        with fusion.implementation('slow'):
            pass


def test_a_registered_fusion_is_found_by_name_and_alias(monkeypatch):
    """Third-party blocks plug into get_fusion, the blocks and the networks by registering."""
    from openaff.fusion import registry
    monkeypatch.setattr(registry, 'FUSIONS', dict(registry.FUSIONS))
    monkeypatch.setattr(registry, 'ALIASES', dict(registry.ALIASES))

    @fusion.register('Gated')
    class GatedAddFuse(fusion.AttentionalFusion):
        def __init__(self, channels=64):
            super().__init__([('gate', dict(widths=(channels,), pooled=True))],
                             [fusion.Stage(('gate',), rule='w(x+y)')])

    assert type(get_fusion('gated', 8)) is GatedAddFuse
    from openaff.blocks import AFFResBlockV2
    block = AFFResBlockV2('Gated', channels=8, stride=1, in_channels=8)
    block.initialize()
    assert block(random_input(1, 8, 4, 4)).shape == (1, 8, 4, 4)
    with pytest.raises(ValueError, match='already registered'):
        fusion.register('AFF')(type('Other', (fusion.AttentionalFusion,), {}))


def test_the_algebra_switch_is_per_context():
    """Threads building graphs do not see each other's implementation switch."""
    import threading
    seen = []
    with fusion.implementation('reference'):
        worker = threading.Thread(target=lambda: seen.append(fusion.current_implementation()))
        worker.start()
        worker.join()
        assert fusion.current_implementation() == 'reference'
    assert seen == ['native'] and fusion.current_implementation() == 'native'
