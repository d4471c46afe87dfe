"""Where a network looks: Grad-CAM (Selvaraju et al., ICCV 2017) of a class, and the MS-CAM
attention weights of its fusion blocks, as the paper's Figures 11-12 show them for AFF
(Dai et al., "Attentional Feature Fusion", WACV 2021).

    from openaff.cam import preprocess, grad_cam, attention_maps
    batch = preprocess(photo, mean, std, 224)          # (1, 3, 224, 224)
    heat, logits = grad_cam(net, batch)                # (224, 224) in [0, 1], (classes,)
    maps = attention_maps(net, batch)                  # [(stage label, (224, 224)), ...]

Works on the zoo's CIFAR and ImageNet networks and on GluonCV's ResNets (their ``features``
stages or ``layer1``-``layer4``).
"""
from __future__ import annotations

import numpy as np
import mxnet as mx
from mxnet import autograd
from mxnet.gluon import nn

__all__ = ['preprocess', 'stages_of', 'grad_cam', 'attention_maps', 'top_classes',
           'display_crop', 'figure']

_RESNET_STEM = ('conv1', 'bn1', 'relu', 'maxpool')
_RESNET_HEAD = ('avgpool', 'flat', 'drop', 'fc')


def preprocess(image, mean, std, size):
    """A (1, 3, size, size) float32 batch from an RGB uint8 array (H, W, 3): the short side
    resized to ``size / 0.875`` and a centre crop for ImageNet sizes, a plain resize for small
    (CIFAR) inputs, then normalised by ``mean``/``std`` (0..1 scale)."""
    from PIL import Image
    photo = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if size >= 64:
        short = int(round(size / 0.875))
        scale = short / min(photo.size)
        photo = photo.resize((max(size, round(photo.width * scale)),
                              max(size, round(photo.height * scale))), Image.BILINEAR)
        left, top = (photo.width - size) // 2, (photo.height - size) // 2
        photo = photo.crop((left, top, left + size, top + size))
    else:
        photo = photo.resize((size, size), Image.BILINEAR)
    array = (np.asarray(photo, dtype=np.float32) / 255 - np.asarray(mean)) / np.asarray(std)
    return mx.nd.array(array.transpose(2, 0, 1)[None].astype(np.float32))


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
    (an index into :func:`stages_of`, default the last) for a (1, 3, H, W) ``batch``.
    Returns the map (H, W) in [0, 1] and the logits (classes,)."""
    if batch.ndim != 4 or batch.shape[0] != 1:
        raise ValueError(f'grad_cam takes one image as a (1, 3, H, W) batch, got {batch.shape}')
    blocks, stages = stages_of(net)
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
    from .fusion import AttentionalFusion
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
    crop = batch[0].asnumpy().transpose(1, 2, 0).clip(0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(crop).resize((side, side), Image.BILINEAR))


def figure(photo, panels, path, title=''):
    """One row: ``photo`` (H, W, 3), then each ``(label, map)`` of ``panels`` over it."""
    from .plotting import pyplot
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


if __name__ == '__main__':
    import sys
    from .cli.cam import main
    sys.exit(main())
