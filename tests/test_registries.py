"""A new architecture is one decorated builder and a new dataset one spec, each in its own file:
the resolver, evaluation and training find them by name with no other edit."""
import importlib
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest

from openaff.data import HEAD_CLASSES, SplitOptions, dataset_spec
from openaff.models import NETWORKS, build_network, resolve_network

PLUGIN = textwrap.dedent('''
    import numpy as np
    from mxnet import gluon
    from mxnet.gluon import nn

    from openaff.data import DatasetSpec, register_dataset
    from openaff.models import register_network


    @register_network
    class TinyNet(nn.HybridBlock):
        def __init__(self, classes=10, width=4, **kwargs):
            super().__init__(**kwargs)
            self.body = nn.HybridSequential()
            self.body.add(nn.Conv2D(width, 3, padding=1), nn.GlobalAvgPool2D(),
                          nn.Dense(classes))

        def hybrid_forward(self, F, x):
            return self.body(x)


    def _splits(options):
        rng = np.random.RandomState(0)
        def split(n):
            images = rng.rand(n, 3, 8, 8).astype('float32')
            return gluon.data.ArrayDataset(images, rng.randint(0, 3, n).astype('float32'))
        return (split(6) if options.with_train else None), split(4)


    register_dataset(DatasetSpec('blobs', 3, (0.5,) * 3, (0.25,) * 3, 8, _splits))
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / 'my_plugin.py').write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    from openaff.data.registry import DATASETS
    yield importlib.import_module('my_plugin')
    sys.modules.pop('my_plugin', None)
    NETWORKS.pop('TinyNet', None)
    DATASETS.pop('blobs', None)


def test_a_new_architecture_is_built_through_the_resolver(plugin):
    builder, kwargs = resolve_network({'class': 'TinyNet', 'kwargs': {'classes': 3}})
    assert builder is plugin.TinyNet and kwargs == {'classes': 3}
    net = build_network('TinyNet', {'classes': 3, 'width': 2})
    net.initialize()
    assert net(mx.nd.zeros((2, 3, 8, 8))).shape == (2, 3)


def test_a_new_dataset_is_found_by_name(plugin):
    spec = dataset_spec('blobs')
    assert (spec.classes, spec.input_size) == (3, 8) and HEAD_CLASSES['blobs'] == 3
    train, val = spec.splits(SplitOptions())
    assert (len(train), len(val)) == (6, 4)
    assert spec.splits(SplitOptions(with_train=False))[0] is None


def test_a_new_architecture_and_dataset_evaluate_through_the_command_path(plugin, tmp_path):
    from openaff.apps.evaluate import EvalData, Target, build, val_loader
    net = build_network('TinyNet', {'classes': 3})
    net.initialize()
    net(mx.nd.zeros((1, 3, 8, 8)))
    net.save_parameters(str(tmp_path / 'tiny.params'))
    target = Target('TinyNet', {'classes': 3}, str(tmp_path / 'tiny.params'), 'blobs',
                    input_size=8)
    rebuilt = build(target, mx.cpu())
    train, val = val_loader(EvalData(batch_size=2), target, with_train=False)
    assert train is None
    images, _ = next(iter(val))
    np.testing.assert_allclose(rebuilt(images).asnumpy(), net(images).asnumpy(), rtol=1e-5)


def test_segmentation_records_resolve_through_the_same_registry():
    from openaff.models.registry import network_task
    from openaff.segmentation import segmentation_network
    builder, kwargs = resolve_network({'function': 'segmentation_network',
                                       'kwargs': {'merge': 'AFF'}})
    assert builder is segmentation_network and kwargs == {'merge': 'AFF'}
    assert network_task('segmentation_network') == 'segmentation'
    assert network_task('CIFARAFFResNet') == 'classification'


def test_gluoncv_names_and_unknown_names():
    from openaff.models import gluoncv_net
    builder, kwargs = resolve_network('gluoncv:cifar_resnet20_v1', 10)
    assert builder is gluoncv_net and kwargs == {'name': 'cifar_resnet20_v1', 'classes': 10}
    with pytest.raises(ValueError, match='unknown network builder'):
        resolve_network({'class': 'NoSuchNet', 'kwargs': {}})
    with pytest.raises(ValueError, match='unknown dataset'):
        dataset_spec('no_such_data')


def test_a_taken_name_is_refused():
    from openaff.models import register_network

    def CIFARAFFResNet():  # noqa: N802 - the clash is the point
        pass
    with pytest.raises(ValueError, match='already registered'):
        register_network(CIFARAFFResNet)


def test_head_classes_view_the_registry():
    assert {name: HEAD_CLASSES[name] for name in ('cifar10', 'cifar100', 'digits')} == \
        {'cifar10': 10, 'cifar100': 100, 'digits': 10}
    assert dataset_spec('cifar100').labels == ('fine', 'coarse')
