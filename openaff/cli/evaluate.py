"""``openaff-evaluate`` (``python -m openaff.cli.evaluate``): a checkpoint's top-1/top-5 accuracy
and loss on its validation data, beside the published or logged value.

    openaff-evaluate cifar_aff_resnet32 --data-dir ~/data/cifar
    openaff-evaluate runs/0.9622-digits-ASKCFuse-resnet-8-c-1-s-1-best.params
"""
from __future__ import annotations

import argparse
import json
import sys

from .args import add_rec_options, fail, non_negative_int, positive_int, rec_files_of
from .output import output_path
from .training import add_devices_arg, contexts_of


def build_parser():
    p = argparse.ArgumentParser(prog='openaff-evaluate',
                                description=__doc__.split('\n')[0].split(': ', 1)[1])
    p.add_argument('target', help='zoo name, released .params file, or training checkpoint')
    p.add_argument('--dataset', choices=('cifar10', 'cifar100', 'digits', 'imagenet'))
    p.add_argument('--labels', choices=('fine', 'coarse'))
    p.add_argument('--data-dir', default=None)
    p.add_argument('--use-rec', action='store_true')
    add_rec_options(p)
    p.add_argument('--synthetic', action='store_true')
    p.add_argument('--input-size', type=positive_int, default=None)
    p.add_argument('--batch-size', type=positive_int, default=100)
    p.add_argument('--precise-bn', type=non_negative_int, default=0, metavar='N',
                   help='re-estimate BatchNorm statistics over N training batches first')
    p.add_argument('--gpu', action='store_true', help='the same as --devices gpu:0')
    add_devices_arg(p, 'evaluates')
    p.add_argument('--dtype', default='float32', choices=('float32', 'float16'),
                   help='precision of the network and its batches (float16: GPUs only)')
    p.add_argument('--json', default=None, help='also write the results to this file (a '
                                                'folder: evaluation.json inside it)')
    return p


def eval_data_of(opt):
    """The :class:`~openaff.apps.evaluate.EvalData` the options describe."""
    from ..apps.evaluate import EvalData
    return EvalData(opt.dataset, opt.labels, opt.data_dir, opt.batch_size, opt.input_size,
                    opt.synthetic, rec_files_of(opt) if opt.use_rec else None, opt.dtype)


def main(argv=None):
    import mxnet as mx

    from ..apps.evaluate import check_dtype, evaluate_checkpoint, report
    from ..data.errors import DatasetNotFoundError
    from ..store import CheckpointError
    opt = build_parser().parse_args(argv)
    try:
        if opt.gpu and not opt.devices:
            opt.devices = 'gpu:0'
        contexts = contexts_of(opt) if opt.devices else [mx.cpu()]
        try:
            check_dtype(opt.dtype, contexts)
        except ValueError as err:
            raise ValueError(f'--dtype {opt.dtype}: {err}') from None
        # settled before the evaluation, which can take an hour on ImageNet
        json_path = output_path('--json', opt.json, 'evaluation.json') if opt.json else None
        result = evaluate_checkpoint(opt.target, eval_data_of(opt), opt.precise_bn, contexts)
    except (ValueError, FileNotFoundError, DatasetNotFoundError, CheckpointError, OSError) as err:
        return fail(str(err).replace('\n', ' '))
    print(report(result))
    if json_path:
        with open(json_path, 'w') as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
