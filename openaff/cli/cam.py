"""``openaff-cam`` (``python -m openaff.cli.cam``): Grad-CAM of an AFF network (and a GluonCV
baseline beside it) and the MS-CAM attention of its fusions, over one photo, in one figure.

    openaff-cam aff_resnet50.imagenet --image cat.jpg --compare gluoncv:resnet50_v1d
    openaff-cam cifar_aff_resnet32 --image photo.png --pretrained run-best.params
"""
from __future__ import annotations

import argparse
import os
import sys

from ..models.external import display_name
from .args import add_devices_arg, fail, positive_int
from .runtime import contexts_of


def build_parser():
    p = argparse.ArgumentParser(prog='openaff-cam',
                                description='Grad-CAM and MS-CAM attention maps of a zoo '
                                            'network over one photo, in one figure.')
    p.add_argument('name', help='zoo name (e.g. aff_resnet50.imagenet), or a training '
                               'checkpoint with its *-checkpoint.json beside it')
    p.add_argument('--image', required=True, help='a photo (any format Pillow reads)')
    p.add_argument('--pretrained', nargs='?', const=True, default=False, metavar='PATH',
                   help='the released weights (no PATH) or a .params file; without it, '
                        'random weights')
    p.add_argument('--compare', default=None, metavar='gluoncv:NAME',
                   help='a GluonCV model drawn beside (its pretrained weights with '
                        '--pretrained, else random)')
    p.add_argument('--stage', type=int, default=-1,
                   help='residual stage of the Grad-CAM, counted from 1 (default: the last)')
    p.add_argument('--class', dest='class_index', type=int, default=None,
                   help='class to explain (default: the predicted one)')
    p.add_argument('--input-size', type=positive_int, default=None)
    p.add_argument('-o', '--output', default='cam.png',
                   help='the figure (default cam.png; a folder: cam.png inside it; no '
                        'extension: .png appended); the path written is printed')
    add_devices_arg(p, 'computes the maps')
    return p


def _load_image(path):
    """The photo as uint8 RGB; 16-bit and float images scaled to 8 bits (Pillow's
    ``convert('RGB')`` clips a 16-bit greyscale PNG to black and white)."""
    from PIL import Image, UnidentifiedImageError

    from ..apps.cam import as_rgb8
    try:
        with Image.open(path) as image:
            return as_rgb8(image)
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f'--image {path}: not an image Pillow can read ({err})') from None
    except ValueError as err:
        raise ValueError(f'--image {path}: {err}') from None


def _normalisation(dataset):
    """(mean, std) of a training checkpoint's dataset."""
    from ..data import dataset_spec
    spec = dataset_spec(dataset)
    return spec.mean, spec.std

def _main_network(opt):
    """(net, dataset, mean, std, input size) of a zoo name or a training checkpoint."""
    import mxnet as mx
    if os.path.exists(opt.name):  # a run's checkpoint, with its record beside it
        from ..apps.evaluate import build, resolve
        target = resolve(opt.name)
        return (build(target, mx.cpu()), target.dataset, *_normalisation(target.dataset),
                target.input_size)
    from ..zoo import get_model, model_info
    info = model_info(opt.name)
    net = get_model(opt.name, pretrained=opt.pretrained)
    if not opt.pretrained:
        net.initialize(mx.init.Xavier())
    return net, info.dataset, info.mean, info.std, info.input_size


def _baseline(opt, classes):
    import mxnet as mx

    from ..models import resolve_network
    from ..models.external import check_gluoncv_name, gluoncv_name
    name = gluoncv_name(opt.compare)
    if not name:
        raise ValueError(f'--compare takes gluoncv:NAME, got {opt.compare!r}')
    try:
        check_gluoncv_name(name)
    except ValueError:
        raise ValueError(f'--compare {opt.compare}: not a GluonCV model-zoo name') from None
    builder, kwargs = resolve_network(opt.compare, classes, pretrained=bool(opt.pretrained))
    baseline = builder(**kwargs)
    if not opt.pretrained:
        baseline.initialize(mx.init.Xavier())
    return baseline

def main(argv=None):
    import mxnet as mx

    from ..apps.cam import (
        attention_maps,
        display_crop,
        figure,
        grad_cam,
        preprocess,
        stages_of,
        top_classes,
    )
    from ..store import CheckpointError
    from .output import figure_extensions, output_path
    opt = build_parser().parse_args(argv)
    try:
        output = output_path('-o', opt.output, 'cam.png', figure_extensions())
        photo = _load_image(opt.image)
        net, dataset, mean, std, own_size = _main_network(opt)
        nets = [(opt.name, net)]
        if opt.compare:
            nets.append((opt.compare, _baseline(opt, net(mx.nd.zeros((1, 3, own_size,
                                                                       own_size))).shape[1])))
        size = opt.input_size or own_size
        ctx = _one_device(opt)
        for _, model in nets:
            model.collect_params().reset_ctx(ctx)
        batch = preprocess(photo, mean, std, size).as_in_context(ctx)
        stage = opt.stage - 1 if opt.stage > 0 else opt.stage
        panels, lines = [], []
        for label, model in nets:
            count = len(stages_of(model)[1])
            if not -count <= stage < count:
                raise ValueError(f'--stage {opt.stage}: {label} has {count} stages')
            heat, logits = grad_cam(model, batch, opt.class_index, stage)
            top = top_classes(logits, _class_names(dataset))
            short = 'checkpoint' if os.path.exists(label) else display_name(label)
            panels.append((f'Grad-CAM {short}\n{top[0][0]}', heat))
            lines.append(f'{label}: ' + ', '.join(f'{n} {p:.3f}' for n, p in top))
        panels += attention_maps(net, batch)
    except (ValueError, OSError, CheckpointError) as err:
        return fail(str(err).replace('\n', ' '))
    print('\n'.join(lines))
    print(figure(display_crop(photo, size), panels, output,
                 title=f'{os.path.basename(opt.name)}: Grad-CAM and MS-CAM attention'))
    return 0


def _one_device(opt):
    """The device of ``--devices`` (one image needs one), the CPU without it."""
    import mxnet as mx
    if not opt.devices:
        return mx.cpu()
    contexts = contexts_of(opt)
    if len(contexts) != 1:
        raise ValueError(f'--devices {opt.devices}: the maps of one image are computed on one '
                         f'device; name one')
    return contexts[0]


def _class_names(dataset):
    if dataset == 'imagenet':
        from gluoncv.data import ImageNet1kAttr
        return ImageNet1kAttr().classes
    return None


if __name__ == '__main__':
    sys.exit(main())
