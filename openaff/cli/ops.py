"""``openaff-ops`` (``python -m openaff.cli.ops``): build (or rebuild with ``--force``) the fused
fusion operator's library and print where it is."""
from __future__ import annotations

import argparse
import sys

from .args import fail


def build_parser():
    p = argparse.ArgumentParser(prog='openaff-ops',
                                description="Build the fusion blocks' native operator library "
                                            '(again with --force) and print its path.')
    p.add_argument('--force', action='store_true', help='rebuild even if cached')
    return p


def main(argv=None):
    from ..ops import build, intact, library_path
    opt = build_parser().parse_args(argv)
    path = library_path()
    if opt.force or not intact(path):
        try:
            build(path)
        except RuntimeError as error:
            return fail(str(error), status=1)
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
