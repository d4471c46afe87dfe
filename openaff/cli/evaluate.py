"""``openaff-evaluate`` (``python -m openaff.cli.evaluate``): a checkpoint's top-1/top-5 accuracy
and loss on its validation data, beside the published or logged value.

    openaff-evaluate cifar_aff_resnet32 --data-dir ~/data/cifar
    openaff-evaluate runs/0.9622-digits-ASKCFuse-resnet-8-c-1-s-1-best.params
    openaff-evaluate runs/...-best.params --int8 --calib-batches 10   # float32 and INT8
"""
from __future__ import annotations

import argparse
import json
import sys

from .args import (
    add_devices_arg,
    add_rec_options,
    fail,
    non_negative_int,
    positive_int,
    rec_files_of,
)
from .output import output_path
from .runtime import contexts_of


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
    p.add_argument('--int8', action='store_true',
                   help='also quantize the network to INT8 (oneDNN, CPU) and report both '
                        'accuracies (openaff.quantize)')
    p.add_argument('--calib-batches', type=positive_int, default=10, metavar='N',
                   help='with --int8: calibrate on the first N training batches (default 10)')
    p.add_argument('--calib-mode', choices=('naive', 'entropy'), default='naive',
                   help='with --int8: activation ranges from min/max or by entropy')
    p.add_argument('--int8-graph', choices=('standard', 'fused'), default='standard',
                   help="with --int8: 'fused' computes each AFF selection with openaff's "
                        'fused float32 operator (faster; runs only where openaff is imported)')
    p.add_argument('--json', default=None, help='also write the results to this file (a '
                                                'folder: evaluation.json inside it)')
    return p


def eval_data_of(opt):
    """The :class:`~openaff.apps.evaluate.EvalData` the options describe."""
    from ..apps.evaluate import EvalData
    return EvalData(opt.dataset, opt.labels, opt.data_dir, opt.batch_size, opt.input_size,
                    opt.synthetic, rec_files_of(opt) if opt.use_rec else None, opt.dtype)


def _evaluate_int8(opt, contexts):
    from ..apps.quantize import evaluate_int8
    if any(c.device_type != 'cpu' for c in contexts):
        raise ValueError('--int8 runs on the CPU (MXNet 1.9.1 quantizes for oneDNN only): '
                         'drop --gpu/--devices')
    return evaluate_int8(opt.target, eval_data_of(opt), opt.calib_batches, opt.calib_mode,
                         opt.int8_graph, opt.precise_bn)


def main(argv=None):
    import mxnet as mx

    from ..apps.evaluate import check_dtype, evaluate_checkpoint, report
    from ..apps.quantize import report_int8
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
        if opt.int8:
            result = _evaluate_int8(opt, contexts)
        else:
            result = evaluate_checkpoint(opt.target, eval_data_of(opt), opt.precise_bn,
                                         contexts)
    except (ValueError, FileNotFoundError, DatasetNotFoundError, CheckpointError, OSError) as err:
        return fail(str(err).replace('\n', ' '))
    print((report_int8 if opt.int8 else report)(result))
    if json_path:
        with open(json_path, 'w') as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
