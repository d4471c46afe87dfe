"""``openaff-plotlog`` (``python -m openaff.cli.plotlog``): draw the validation curves of training
logs in the original format over each other (see :mod:`openaff.apps.plotlog`)."""
from __future__ import annotations

import argparse
import sys

from .args import fail


def build_parser():
    p = argparse.ArgumentParser(prog='openaff-plotlog',
                                description='Validation accuracy per epoch of training logs, '
                                            'one line each, in one PNG.')
    p.add_argument('logs', nargs='+', help='training logs in the original format')
    p.add_argument('-o', '--output', default='validation_curves.png',
                   help='the figure (a folder: validation_curves.png inside it; no extension: '
                        '.png appended); the path written is printed')
    p.add_argument('--labels', nargs='+', default=None)
    return p


def main(argv=None):
    from ..apps.plotlog import plot_logs
    from .output import figure_extensions, output_path
    opt = build_parser().parse_args(argv)
    if opt.labels and len(opt.labels) != len(opt.logs):
        return fail(f'--labels: {len(opt.labels)} labels for {len(opt.logs)} logs')
    try:
        output = output_path('-o', opt.output, 'validation_curves.png', figure_extensions())
        print(plot_logs(opt.logs, output, opt.labels))
    except (OSError, ValueError) as err:
        return fail(str(err))
    return 0


if __name__ == '__main__':
    sys.exit(main())
