"""AFF-FPN: the top-down pyramid with attentional merges, as GluonCV's FPNFeatureExpander
inside its Faster R-CNN, and as a segmentation network on a CIFAR AFF-ResNet."""
import mxnet as mx
import numpy as np
import pytest
from conftest import (
    assert_every_param_gets_gradient,
    assert_hybrid_matches_imperative,
    random_input,
)
from mxnet import autograd

from openaff.data.canvases import CANVAS_CLASSES, digit_canvases
from openaff.fpn import MERGES, AFFFPNFeatureExpander, TopDownPyramid
from openaff.segmentation import confusion, mean_iou, segmentation_network


def trainable(block):
    return [(n, p) for n, p in block.collect_params().items() if p.grad_req != 'null']


@pytest.mark.parametrize('merge', MERGES)
def test_pyramid_levels_hybridize_and_train(merge):
    pyramid = TopDownPyramid([16, 16, 16], merge=merge, norm_layer=mx.gluon.nn.BatchNorm)
    pyramid.initialize(mx.init.Xavier())
    maps = [random_input(4, c, s, s) for c, s in ((8, 16), (12, 8), (20, 4))]
    imperative = [o.asnumpy() for o in pyramid(*maps)]
    assert [o.shape for o in imperative] == [(4, 16, 16, 16), (4, 16, 8, 8), (4, 16, 4, 4)]
    pyramid.hybridize()
    for got, want in zip(pyramid(*maps), imperative):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5, atol=1e-5)
    with autograd.record(train_mode=False):  # see conftest.assert_every_param_gets_gradient
        total = sum(o.square().sum() for o in pyramid(*maps))
    total.backward()
    for name, param in trainable(pyramid):
        assert np.abs(param.grad().asnumpy()).sum() > 0, name


def test_levels_of_other_widths_are_refused():
    with pytest.raises(ValueError, match='one width'):
        TopDownPyramid([16, 32])


@pytest.mark.slow
@pytest.mark.parametrize('merge', ['add', 'AFF'])
def test_the_expander_serves_gluoncv_faster_rcnn(merge):
    from gluoncv.model_zoo import get_model
    from gluoncv.model_zoo.rcnn.faster_rcnn import FasterRCNN
    base = get_model('resnet18_v1b', pretrained=False)
    base.initialize()
    features = AFFFPNFeatureExpander(
        base, ['layers1_relu3_fwd', 'layers2_relu3_fwd', 'layers3_relu3_fwd',
               'layers4_relu3_fwd'], [64] * 4, merge=merge, use_1x1=True, use_upsample=True,
        use_elewadd=True, use_p6=True, no_bias=False)
    box = mx.gluon.nn.HybridSequential()
    box.add(mx.gluon.nn.Dense(64), mx.gluon.nn.Activation('relu'))
    net = FasterRCNN(features, None, classes=['a', 'b'], box_features=box, short=128,
                     max_size=128, min_stage=2, max_stage=6, roi_mode='align',
                     roi_size=(7, 7), strides=(4, 8, 16, 32, 64), clip=4.14,
                     rpn_channel=64, base_size=16, scales=(2, 4, 8, 16, 32),
                     ratios=(0.5, 1, 2), alloc_size=(64, 64), rpn_test_pre_nms=200,
                     rpn_test_post_nms=50, rpn_train_pre_nms=200, rpn_train_post_nms=50,
                     num_sample=32, max_num_gt=10)
    net.initialize()
    ids, scores, boxes = net(mx.nd.random.uniform(shape=(1, 3, 128, 128)))
    assert ids.shape[0] == 1 and boxes.shape[-1] == 4 and np.isfinite(scores.asnumpy()).all()
    names = list(features.collect_params().keys())
    assert any('askcfuse' in n for n in names) == (merge == 'AFF')


@pytest.mark.parametrize('merge', MERGES)
def test_segmentation_network_scores_every_pixel_and_trains(merge):
    net = segmentation_network(merge)
    net.initialize(mx.init.Xavier())
    images = mx.nd.array(digit_canvases(2, size=32, seed=3)[0])
    assert net(images).shape == (2, CANVAS_CLASSES, 32, 32)
    assert_every_param_gets_gradient(net, images)
    assert_hybrid_matches_imperative(net, images, rtol=1e-4, atol=1e-4)


def test_canvases_label_their_glyphs_and_keep_splits_apart():
    images, labels = digit_canvases(20, size=40, seed=1)
    assert images.shape == (20, 3, 40, 40) and labels.shape == (20, 40, 40)
    assert 0 < (labels > 0).mean() < 0.5 and labels.max() <= 10
    again, _ = digit_canvases(20, size=40, seed=1)
    assert (again == images).all()
    held_out, _ = digit_canvases(20, size=40, seed=1, train=False)
    assert not (held_out == images).all()


def test_mean_iou_of_known_predictions():
    truth = mx.nd.array([[[0, 0], [1, 2]]])
    perfect = mx.nd.one_hot(truth, 3).transpose((0, 3, 1, 2))
    assert mean_iou(confusion(perfect, truth, 3)) == 1.0
    wrong = mx.nd.one_hot(mx.nd.zeros_like(truth), 3).transpose((0, 3, 1, 2))
    assert mean_iou(confusion(wrong, truth, 3)) == pytest.approx(0.5 / 3)


def test_the_pixel_loss_is_gluons_cross_entropy_with_object_pixels_weighted():
    from openaff.engine.tasks import Segmentation
    task = Segmentation(4, foreground_weight=3.0)
    scores = mx.nd.random.normal(shape=(2, 4, 5, 6))
    labels = mx.nd.array(np.random.RandomState(0).randint(0, 4, size=(2, 5, 6)))
    _, targets = task.targets(scores, labels, 1.0, 0.0)
    got = task.loss(scores, targets).asnumpy()
    weights = 1 + 2.0 * (labels > 0)
    expected = mx.gluon.loss.SoftmaxCrossEntropyLoss(axis=1)(
        scores, labels, weights.expand_dims(1)).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match='mixup'):
        task.targets(scores, labels, 0.5, 0.0)


def test_train_segmentation_runs_on_the_engine_and_resumes(tmp_path, capsys):
    """Checkpoints, history with the held-out mean IoU, best file named by it, resume."""
    import json

    from openaff.cli import train_segmentation
    out = str(tmp_path / 'run')
    args = ['--merge', 'AFF', '--canvases', '32', '--val-canvases', '16', '--size', '24',
            '--channel-times', '1', '--width', '8', '--batch-size', '16', '--seed', '0',
            '--save-dir', out, '--logging-dir', out, '--save-plot-dir', out]
    assert train_segmentation.main(args + ['--num-epochs', '2']) == 0
    record = json.loads(next((tmp_path / 'run').glob('*-checkpoint.json')).read_text())
    assert [r['epoch'] for r in record['history']] == [0, 1]
    # the record names its score, and segmentation scores by mean IoU only
    assert all(0 <= r['val_miou'] <= 1 and 'val_acc' not in r for r in record['history'])
    best = max(r['val_miou'] for r in record['history'])
    assert record['score'] == 'val_miou' and record['best'] == best
    best_file = next((tmp_path / 'run').glob(f'{best:.4f}-canvases-AFF-FPN-*-best.params'))
    from openaff.cli import evaluate
    assert evaluate.main([str(best_file)]) == 2
    assert 'segmentation run' in capsys.readouterr().err
    assert train_segmentation.main(args + ['--num-epochs', '2']) == 2  # an earlier run is kept
    assert 'holds a run' in capsys.readouterr().err
    assert train_segmentation.main(args + ['--num-epochs', '2', '--size', '12']) == 2
    assert capsys.readouterr().err.count('\n') == 1
    first = next((tmp_path / 'run').glob('*-epoch0000.params'))
    assert train_segmentation.main(args + ['--num-epochs', '2', '--resume-from', str(first)]) == 0
    resumed = json.loads(next((tmp_path / 'run').glob('*-checkpoint.json')).read_text())
    assert [r['epoch'] for r in resumed['history']] == [0, 1]
    assert resumed['history'][0] == record['history'][0]
    assert resumed['best'] == max(r['val_miou'] for r in resumed['history'])
