"""``openaff-summary`` (``python -m openaff.cli.summary``): parameter and FLOP counts of a zoo
model, with the original's FLOP convention (see :mod:`openaff.apps.summary`).

    openaff-summary NAME [--input-size N] [--classes K] [--json FILE] [--per-layer]
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from .args import fail, positive_int


def build_parser():
    p = argparse.ArgumentParser(prog='openaff-summary',
                                description='Print parameter and FLOP counts of an openaff model.')
    p.add_argument('name', help='model name, as for openaff.get_model')
    p.add_argument('--input-size', type=positive_int, default=None,
                   help="square input side (default: the model's own)")
    p.add_argument('--classes', type=positive_int, default=None, help='number of output classes')
    p.add_argument('--json', metavar='FILE', default=None,
                   help='also write the summary as JSON to FILE (a folder: summary.json inside)')
    p.add_argument('--per-layer', action='store_true', help='print the per-layer table')
    return p


def main(argv=None):
    from ..apps.summary import summarize
    from ..zoo import get_model, model_info
    from .output import output_path
    opt = build_parser().parse_args(argv)
    kwargs = {} if opt.classes is None else {'classes': opt.classes}
    try:
        json_path = output_path('--json', opt.json, 'summary.json') if opt.json else None
        net = get_model(opt.name, pretrained=False, **kwargs)
        size = opt.input_size or model_info(opt.name).input_size
    except ValueError as err:
        return fail(str(err).replace('\n', ' '))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the values are irrelevant for counting
        net.initialize()
    try:
        result = summarize(net, input_shape=(1, 3, size, size))
    except ValueError as err:  # an input the network's strides cannot take
        return fail(f'--input-size {size}: {err}')
    if opt.per_layer:
        print(result.table())
    print(result.totals())
    if json_path:
        with open(json_path, 'w') as handle:
            json.dump(result.to_dict(), handle, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
