"""Where a network looks: Grad-CAM (Selvaraju et al., ICCV 2017) of a class, and the MS-CAM
attention weights of its fusion blocks, as the paper's Figures 11-12 show them for AFF
(Dai et al., "Attentional Feature Fusion", WACV 2021).

    from openaff.apps.cam import preprocess, grad_cam, attention_maps
    batch = preprocess(photo, mean, std, 224)          # (1, 3, 224, 224)
    heat, logits = grad_cam(net, batch)                # (224, 224) in [0, 1], (classes,)
    maps = attention_maps(net, batch)                  # [(stage label, (224, 224)), ...]

Works on the zoo's CIFAR and ImageNet networks and on GluonCV's ResNets (their ``features``
stages or ``layer1``-``layer4``).
"""
from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import nn

__all__ = ['as_rgb8', 'preprocess', 'stages_of', 'grad_cam', 'attention_maps', 'top_classes',
           'display_crop', 'figure']

_RESNET_STEM = ('conv1', 'bn1', 'relu', 'maxpool')
_RESNET_HEAD = ('avgpool', 'flat', 'drop', 'fc')


def as_rgb8(image):
    """``image`` as a uint8 (H, W, 3) RGB array, its values scaled rather than clipped.

    Takes a numpy array or NDArray (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped)
    or a PIL image. uint8 is kept; uint16 (and PIL's 16-bit modes) is a 16-bit image, divided
    by 257; other integers are kept when they fit 0..255, else read as 16-bit when they fit
    0..65535; floats all within [0, 1] are that scale (matplotlib's and scikit-image's) and are
    multiplied by 255, floats within [0, 255] are rounded. Anything else is a ``ValueError``:
    casting it would clip it to black and white.
    """
    if hasattr(image, 'mode') and hasattr(image, 'convert'):  # a PIL image
        if not (image.mode.startswith('I') or image.mode == 'F'):
            image = image.convert('RGB')  # Pillow scales its own 8-bit modes (P, CMYK, LA, ...)
        image = np.asarray(image)
    elif isinstance(image, mx.nd.NDArray):
        image = image.asnumpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f'expected an image (H, W), (H, W, 3) or (H, W, 4), got shape '
                         f'{array.shape}')
    array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[..., :3]
    return _scaled_to_uint8(array)


def _scaled_to_uint8(array):
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        return array
    if kind == 'u' and array.dtype.itemsize == 2:  # any byte order (PIL's I;16B)
        return np.rint(array / 257.0).astype(np.uint8)
    if kind not in 'uif' or not array.size:
        raise ValueError(f'cannot read a {array.dtype} array as an image')
    if kind == 'f' and not np.isfinite(array).all():
        raise ValueError('the image holds NaN or infinite values')
    low, high = float(array.min()), float(array.max())
    if low < 0:
        raise ValueError(f'image values run from {low:g} to {high:g}: give uint8, uint16, '
                         f'floats in [0, 1] or floats in [0, 255]')
    if kind == 'f' and high <= 1:
        return np.rint(array * 255.0).astype(np.uint8)
    if high <= 255:
        return np.rint(array).astype(np.uint8)
    if kind in 'ui' and high <= 65535:
        return np.rint(array / 257.0).astype(np.uint8)
    raise ValueError(f'image values run from {low:g} to {high:g}: give uint8, uint16, '
                     f'floats in [0, 1] or floats in [0, 255]')


def preprocess(image, mean, std, size):
    """A (1, 3, size, size) float32 batch from an RGB image (see :func:`as_rgb8` for the
    types taken). For ImageNet sizes (64 and up) it is exactly what evaluation feeds the
    network (:func:`openaff.data.imagenet.validation_transform`: OpenCV resize of the short
    side to ``ceil(size / 0.875)``, centre crop, normalised by ``mean``/``std`` on the 0..1
    scale); small (CIFAR) inputs are the whole photo resized to ``size`` x ``size``."""
    from mxnet.gluon.data.vision import transforms

    from ..data.imagenet import validation_transform
    photo = mx.nd.array(as_rgb8(image), dtype='uint8')
    if size >= 64:
        transform = validation_transform(size, 0.875, mean, std)
    else:
        transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                        transforms.Normalize(mean, std)])
    return transform(photo).expand_dims(0)


def stages_of(net):
    """``(blocks, stage_indices)``: the network as a list of blocks run in order (its
    classifier last) and the positions of its residual stages in that list."""
    if hasattr(net, 'features') and hasattr(net, 'output'):
        blocks = list(net.features._children.values()) + [net.output]
        stages = [i for i, b in enumerate(blocks) if type(b) is nn.HybridSequential]
    elif all(hasattr(net, name) for name in ('layer1', 'layer4', 'fc')):
        names = [*_RESNET_STEM, 'layer1', 'layer2', 'layer3', 'layer4', *_RESNET_HEAD]
        blocks = [getattr(net, n) for n in names if getattr(net, n, None) is not None]
        stages = [i for i, b in enumerate(blocks) if b in [getattr(net, f'layer{k}')
                                                            for k in range(1, 5)]]
    else:
        raise ValueError(f'{type(net).__name__}: cannot find its stages (expected features + '
                         f'output, or layer1-layer4 + fc)')
    if not stages:
        raise ValueError(f'{type(net).__name__}: no residual stage found')
    return blocks, stages


def _run(blocks, x):
    for block in blocks:
        x = block(x)
    return x


def _upsample(heat, size):
    from PIL import Image
    image = Image.fromarray(heat.astype(np.float32), mode='F')
    return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR))


def _normalise(heat):
    heat = heat - heat.min()
    return heat / heat.max() if heat.max() > 0 else heat


def grad_cam(net, batch, class_index=None, stage=-1):
    """Grad-CAM of ``class_index`` (default: the predicted class) at residual stage ``stage``
    (an index into the stages of :func:`stages_of`, counted from 0; default -1, the last) for
    a (1, 3, H, W) ``batch``. Returns the map (H, W) in [0, 1] and the logits (classes,).
    ``TypeError`` for a batch that is not an NDArray or a non-integer stage or class,
    ``ValueError`` for a stage or class the network does not have."""
    if not isinstance(batch, mx.nd.NDArray):
        raise TypeError(f'grad_cam takes an NDArray batch (see preprocess), got '
                        f'{type(batch).__name__}')
    if batch.ndim != 4 or batch.shape[0] != 1:
        raise ValueError(f'grad_cam takes one image as a (1, 3, H, W) batch, got {batch.shape}')
    if isinstance(stage, bool) or not isinstance(stage, (int, np.integer)):
        raise TypeError(f'stage must be an int, got {type(stage).__name__}')
    if class_index is not None and (isinstance(class_index, bool) or
                                    not isinstance(class_index, (int, np.integer))):
        raise TypeError(f'class_index must be an int or None, got {type(class_index).__name__}')
    blocks, stages = stages_of(net)
    if not -len(stages) <= stage < len(stages):
        raise ValueError(f'stage {stage}: {type(net).__name__} has {len(stages)} residual '
                         f'stages (0..{len(stages) - 1}, or negative from the last)')
    cut = stages[stage] + 1
    if cut == stages[-1] + 1:
        # the last stage as the classifier sees it: after a pre-activation net's final
        # BN + ReLU (its raw stage output is mostly negative, which Grad-CAM's ReLU zeroes)
        cut = next((i for i in range(cut, len(blocks))
                    if isinstance(blocks[i], (nn.GlobalAvgPool2D, nn.AvgPool2D))), cut)
    with autograd.predict_mode():
        activations = _run(blocks[:cut], batch)
    activations.attach_grad()
    with autograd.record(train_mode=False):
        logits = _run(blocks[cut:], activations)
        chosen = int(logits[0].argmax().asscalar()) if class_index is None else class_index
        if not 0 <= chosen < logits.shape[1]:
            raise ValueError(f'class_index must be in 0..{logits.shape[1] - 1}, got {chosen}')
        score = logits[0, chosen]
    score.backward()
    weights = activations.grad.mean(axis=(2, 3), keepdims=True)
    heat = mx.nd.relu((weights * activations).sum(axis=1))[0].asnumpy()
    return _normalise(_upsample(heat, batch.shape[2:])), logits[0].asnumpy()


def _fusions_by_stage(blocks, stages):
    from ..fusion import AttentionalFusion
    found = {}
    for number, index in enumerate(stages, 1):
        for block in _descendants(blocks[index]):
            if isinstance(block, AttentionalFusion):
                found[number] = block  # the last one of the stage wins
    return found


def _descendants(block):
    for child in block._children.values():
        yield child
        yield from _descendants(child)


def attention_maps(net, batch):
    """The attention weights of the last fusion block of every stage that has one, averaged
    over channels and resized to the image: ``[(label, (H, W) array in [0, 1]), ...]``
    (iAFF: its final weights). Empty for networks without attentional fusion."""
    blocks, stages = stages_of(net)
    last = _fusions_by_stage(blocks, stages)
    captured, handles = {}, []
    for number, block in last.items():
        def keep(block, inputs, _output, number=number):
            captured[number] = block.attention_weights(*inputs)[-1]
        handles.append(block.register_forward_hook(keep))
    was_active, flags = getattr(net, '_active', False), dict(getattr(net, '_flags', []))
    net.hybridize(active=False)  # hooks see the blocks' calls only when imperative
    try:
        with autograd.predict_mode():
            _run(blocks, batch)
    finally:
        for handle in handles:
            handle.detach()
        net.hybridize(was_active, **flags)
    return [(f'stage {n} fusion', _normalise(_upsample(w[0].mean(axis=0).asnumpy(),
                                                         batch.shape[2:])))
            for n, w in sorted(captured.items())]


def top_classes(logits, names=None, k=5):
    """``[(name, probability), ...]`` of the ``k`` most probable classes."""
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities)[:k]
    return [(names[i] if names else f'class {i}', float(probabilities[i])) for i in order]


def display_crop(image, size, side=224):
    """The part of ``image`` the network sees (as :func:`preprocess` crops it), ``side``
    pixels square, for drawing maps over."""
    from PIL import Image
    batch = preprocess(image, (0, 0, 0), (1 / 255, 1 / 255, 1 / 255), max(size, 64))
    crop = np.rint(batch[0].asnumpy().transpose(1, 2, 0)).clip(0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(crop).resize((side, side), Image.BILINEAR))


def figure(photo, panels, path, title=''):
    """One row: ``photo`` (H, W, 3), then each ``(label, map)`` of ``panels`` over it, written
    to ``path`` (``.png`` appended when it has no extension); returns the path written."""
    import os
    if not os.path.splitext(os.fspath(path))[1]:
        path = os.fspath(path) + '.png'  # what savefig writes; the caller is told this name
    from ..plotting import pyplot
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.6 * (len(panels) + 1), 3.0))
    axes[0].imshow(photo)
    axes[0].set_title('image', fontsize=9)
    for ax, (label, heat) in zip(axes[1:], panels):
        ax.imshow(photo)
        ax.imshow(_upsample(heat, photo.shape[:2]), cmap='jet', alpha=0.5, vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
    for ax in axes:
        ax.axis('off')
    fig.tight_layout()
    fig.suptitle(title, fontsize=9, y=1.04)
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
    return path

