"""``openaff-export`` (``python -m openaff.cli.export``): write a zoo network as ONNX, checked
against MXNet with onnxruntime (see :mod:`openaff.apps.export`).

    openaff-export cifar_aff_resnet32 --pretrained -o aff32.onnx
    openaff-export aff_resnet50 --pretrained weights.params -o aff50.onnx --batch 8
"""
from __future__ import annotations

import argparse
import sys

from .args import fail, positive_int


def batch_size(text):
    """``dynamic`` or a positive int (an argparse ``type``)."""
    return text if text == 'dynamic' else positive_int(text)


def build_parser():
    p = argparse.ArgumentParser(prog='openaff-export',
                                description='Export a zoo network to ONNX and check it with '
                                            'onnxruntime against MXNet.')
    p.add_argument('name', help='zoo name, e.g. cifar_aff_resnet32 or aff_resnet50.imagenet')
    p.add_argument('--pretrained', nargs='?', const=True, default=False, metavar='PATH',
                   help='the released weights (no PATH) or a .params file; without it, '
                        'random weights (for the graph only)')
    p.add_argument('-o', '--output', required=True, metavar='FILE.onnx')
    p.add_argument('--batch', type=batch_size, default='dynamic',
                   help="'dynamic' (default) or a fixed batch size")
    p.add_argument('--input-size', type=positive_int, default=None,
                   help="square input side (default: the model's own)")
    p.add_argument('--classes', type=positive_int, default=None)
    return p


def main(argv=None):
    opt = build_parser().parse_args(argv)
    import importlib.util
    missing = [m for m in ('onnx', 'onnxruntime') if importlib.util.find_spec(m) is None]
    if missing:  # the extra, checked before the network is built
        return fail(f'{" and ".join(missing)} missing: pip install -e ".[onnx]"')
    import mxnet as mx

    from ..apps.export import ExportMismatchError, export_onnx
    from ..store import CheckpointError
    from ..zoo import get_model, model_info
    kwargs = {} if opt.classes is None else {'classes': opt.classes}
    try:
        size = opt.input_size or model_info(opt.name).input_size
        net = get_model(opt.name, pretrained=opt.pretrained, **kwargs)
        if not opt.pretrained:
            net.initialize(mx.init.Xavier())
        batch = 1 if opt.batch == 'dynamic' else opt.batch
        report = export_onnx(net, opt.output, (batch, 3, size, size),
                             dynamic_batch=opt.batch == 'dynamic')
    except ExportMismatchError as err:
        return fail(str(err), status=1)
    except (ValueError, OSError, CheckpointError) as err:
        return fail(str(err).replace('\n', ' '))
    print(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
