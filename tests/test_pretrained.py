"""get_model(pretrained=...) end to end: a release served over loopback HTTP, local files,
mismatches, a classifier for another class count, float16 checkpoints."""
import dataclasses
import functools
import http.server
import threading

import mxnet as mx
import numpy as np
import pytest
from conftest import COMPAT, compat_index, needs_compat, random_input

from openaff import get_model, zoo
from openaff.store import CheckpointMismatchError, ChecksumError, git_blob_sha1

TINY = dict(layers=[1, 1, 1], channels=[8, 8, 16, 32])


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A loopback HTTP server over tmp_path/'srv', with OPENAFF_BASE_URL pointing at it."""
    root = tmp_path / 'srv'
    (root / 'params').mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv('OPENAFF_BASE_URL', f'http://127.0.0.1:{server.server_address[1]}/')
    yield root
    server.shutdown()
    server.server_close()


def publish_tiny_release(root, monkeypatch, name='cifar_aff_resnet32', corrupt=False):
    """Train-free stand-in for a released file: a tiny net's weights under params/."""
    net = get_model(name, **TINY)
    net.initialize(mx.init.Xavier())
    x = random_input(2, 3, 32, 32)
    expected = net(x).asnumpy()
    path = root / 'params' / 'tiny.params'
    net.save_parameters(str(path))
    blob = git_blob_sha1(str(path))
    if corrupt:
        path.write_bytes(path.read_bytes()[:-8] + b'garbage!')
    info = zoo.model_info(name)
    patched = dataclasses.replace(info, args={**info.args, **TINY},
                                  release=dataclasses.replace(info.release,
                                                              path='params/tiny.params',
                                                              blob_sha1=blob))
    monkeypatch.setitem(zoo.MODELS, info.name, patched)
    return x, expected


def test_pretrained_true_downloads_verifies_caches_and_loads(served, tmp_path, monkeypatch):
    x, expected = publish_tiny_release(served, monkeypatch)
    cache = tmp_path / 'cache'
    net = get_model('cifar_aff_resnet32', pretrained=True, root=str(cache))
    np.testing.assert_array_equal(net(x).asnumpy(), expected)
    assert (cache / 'tiny.params').exists()
    (served / 'params' / 'tiny.params').unlink()  # a second call must use the cache
    net = get_model('cifar_aff_resnet32', pretrained=True, root=str(cache))
    np.testing.assert_array_equal(net(x).asnumpy(), expected)


def test_corrupt_release_is_refused(served, tmp_path, monkeypatch):
    publish_tiny_release(served, monkeypatch, corrupt=True)
    with pytest.raises(ChecksumError):
        get_model('cifar_aff_resnet32', pretrained=True, root=str(tmp_path / 'cache'))
    assert not (tmp_path / 'cache' / 'tiny.params').exists()


def saved_tiny_net(path, name='cifar_aff_resnet32'):
    """A tiny initialised net, saved to ``path``; returns it and an input."""
    net = get_model(name, **TINY)
    net.initialize()
    x = random_input(1, 3, 32, 32)
    net(x)
    net.save_parameters(str(path))
    return net, x


def test_pretrained_path_loads_a_local_file(tmp_path):
    net, x = saved_tiny_net(tmp_path / 'mine.params')
    again = get_model('cifar_aff_resnet32', pretrained=str(tmp_path / 'mine.params'), **TINY)
    np.testing.assert_array_equal(again(x).asnumpy(), net(x).asnumpy())


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    saved_tiny_net(tmp_path / 'aff.params')
    with pytest.raises(CheckpointMismatchError) as err:
        get_model('cifar_iaff_resnet32', pretrained=str(tmp_path / 'aff.params'), **TINY)
    assert 'local_att2' in str(err.value)
    with pytest.raises(FileNotFoundError):
        get_model('cifar_aff_resnet32', pretrained=str(tmp_path / 'nope.params'))


def test_checkpoint_for_another_class_count(tmp_path):
    net, x = saved_tiny_net(tmp_path / 'c100.params')
    with pytest.raises(CheckpointMismatchError, match='output.weight'):
        get_model('cifar_aff_resnet32', pretrained=str(tmp_path / 'c100.params'), classes=10,
                  **TINY)
    ten = get_model('cifar_aff_resnet32', pretrained=str(tmp_path / 'c100.params'), classes=10,
                    skip_classifier=True, **TINY)
    assert ten(x).shape == (1, 10)
    np.testing.assert_array_equal(ten.features[1].weight.data().asnumpy(),
                                  net.features[1].weight.data().asnumpy())


FP16 = [name for name, entry in compat_index().items() if entry.get('saved_dtypes')]


@pytest.mark.parametrize('fixture', needs_compat(FP16))
def test_float16_checkpoint_loads_into_float32_zoo_network(fixture):
    """The released ImageNet files are float16 conv/dense + float32 BN (train_imagenet casts)."""
    entry = compat_index()[fixture]
    name = {'AFFResNet': 'iaff_resnet50', 'AFFResNeXt': 'aff_resnext50_32x4d'}[entry['class']]
    overrides = {k: v for k, v in entry['kwargs'].items() if k != 'askc_type'}
    net = get_model(name, pretrained=str(COMPAT / 'numeric' / entry['params']), **overrides)
    assert {np.dtype(p.dtype) for p in net.collect_params().values()} == {np.dtype('float32')}
    arrays = np.load(COMPAT / 'numeric' / entry['arrays'])
    np.testing.assert_allclose(net(mx.nd.array(arrays['input0'])).asnumpy(),
                               arrays['output_inference'], rtol=1e-4, atol=1e-5)
