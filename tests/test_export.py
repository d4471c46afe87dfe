"""ONNX export: every zoo network and every fusion block of the catalog, with BatchNorm states
that are not the initial ones, runs in onnxruntime as close to a float64 forward as MXNet's own
float32 is."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd
from mxnet.gluon import nn

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from openaff import export, get_model, list_models, model_info  # noqa: E402
from openaff.cli.export import main  # noqa: E402
from openaff.fusion import get_fusion, list_fusions  # noqa: E402

ARCHITECTURES = [name for name in list_models() if '.' not in name]


def unsettle_batchnorm(net, *inputs):
    """Running statistics from one training step, and stored gammas of fix_gamma layers that
    are not 1 (as a loaded or trained network has them)."""
    if not list(net.collect_params().keys()):
        return  # DirectAddFuse: nothing to train
    with autograd.record():
        outputs = net(*inputs)
    autograd.backward(outputs)
    for block in _batchnorms(net):
        if not block._kwargs.get('fix_gamma', False):
            continue
        block.gamma.set_data(mx.nd.random.uniform(0.5, 2.0, block.gamma.shape))


def vary_batchnorm(net, *inputs, seed=0):
    """A trained network's BatchNorm state: gammas and variances in [0.5, 2], means and betas
    in [-0.5, 0.5] (deep networks then drift from float64 by a few 1e-4 in float32)."""
    net(*inputs)  # parameter shapes
    rng = np.random.RandomState(seed)
    for name, param in net.collect_params().items():
        low, high = (0.5, 2.0) if name.endswith(('gamma', 'running_var')) else (-0.5, 0.5)
        if name.endswith(('gamma', 'running_var', 'beta', 'running_mean')):
            param.set_data(mx.nd.array(rng.uniform(low, high, param.shape)))


def _batchnorms(block):
    found = [block] if isinstance(block, nn.BatchNorm) else []
    for child in block._children.values():
        found += _batchnorms(child)
    return found


@pytest.mark.slow
@pytest.mark.parametrize('name', ARCHITECTURES)
def test_every_zoo_network_exports_and_matches_onnxruntime(name, tmp_path):
    size = 32 if model_info(name).input_size == 32 else 64
    net = get_model(name, classes=10)
    net.initialize(mx.init.Xavier())
    vary_batchnorm(net, mx.nd.random.uniform(shape=(2, 3, size, size)))
    report = export.export_onnx(net, str(tmp_path / 'net.onnx'), (2, 3, size, size))
    assert 0 < report.mxnet_error and report.onnx_error <= report.allowed
    assert 'MXNet float32' in str(report) and 'onnxruntime' in str(report)


@pytest.mark.parametrize('name', list_fusions())
def test_every_fusion_block_exports_and_matches_onnxruntime(name, tmp_path):
    block = get_fusion(name, channels=16)
    block.initialize(mx.init.Xavier())
    maps = [mx.nd.random.uniform(shape=(2, 16, 8, 8)) for _ in range(2)]
    unsettle_batchnorm(block, *maps)
    report = export.export_onnx(block, str(tmp_path / 'block.onnx'), (2, 16, 8, 8),
                                num_inputs=2)
    assert report.onnx_error <= report.allowed


@pytest.fixture
def cifar_net():
    net = get_model('cifar_aff_resnet32', classes=10)
    net.initialize(mx.init.Xavier())
    unsettle_batchnorm(net, mx.nd.random.uniform(shape=(2, 3, 32, 32)))
    return net


def test_stored_gammas_of_fix_gamma_layers_would_give_wrong_numbers(cifar_net, tmp_path,
                                                                     monkeypatch):
    """What MXNet's exporter alone does: the input BatchNorm's stored gamma is used."""
    monkeypatch.setattr(export, '_fixed_gamma_inputs', lambda symbol_json: set())
    with pytest.raises(export.ExportMismatchError, match='further from the float64 outputs'):
        export.export_onnx(cifar_net, str(tmp_path / 'wrong.onnx'), (2, 3, 32, 32))


def test_the_network_keeps_its_own_graph_after_export(cifar_net, tmp_path):
    cifar_net.hybridize(static_alloc=True)
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    before = cifar_net(x).asnumpy()
    export.export_onnx(cifar_net, str(tmp_path / 'net.onnx'), (2, 3, 32, 32))
    assert (cifar_net(x).asnumpy() == before).all()
    # an inference call: the network's inference graph, with the fused inference operator
    assert 'openaff_mscam_select' in cifar_net._device_graph[1].tojson() or \
        not __import__('openaff.ops', fromlist=['available']).available()


def test_command_writes_a_checked_file_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / 'aff.onnx'
    assert main(['cifar_aff_resnet32', '-o', str(out), '--batch', '2']) == 0
    printed = capsys.readouterr().out
    assert 'onnxruntime' in printed and 'MXNet float32' in printed and out.stat().st_size > 1e6
    assert main(['cifar_aff_resnet32', '-o', str(out), '--pretrained',
                 str(tmp_path / 'none.params')]) == 2
    assert capsys.readouterr().err.startswith('error: ')
    assert main(['no_such_net', '-o', str(out)]) == 2


def test_a_deep_export_is_judged_against_float64_not_a_fixed_tolerance(tmp_path):
    """With a trained BatchNorm state, MXNet's own float32 output of AFF-ResNet-32 is a few
    1e-4 of its scale from float64, above any fixed 1e-4 tolerance; onnxruntime is as close."""
    net = get_model('cifar_aff_resnet32', classes=10)
    net.initialize(mx.init.Xavier())
    vary_batchnorm(net, mx.nd.random.uniform(shape=(2, 3, 32, 32)))
    report = export.export_onnx(net, str(tmp_path / 'deep.onnx'), (2, 3, 32, 32))
    assert report.mxnet_error > 1e-4 and report.onnx_error <= report.allowed
