#!/usr/bin/env python
"""Train ImageNet AFF/iAFF networks (Dai et al., WACV 2021); see ``--help``."""
import os
import sys

# the original instructions: fp16 reductions accumulate in float32
os.environ.setdefault("MXNET_SAFE_ACCUMULATION", "1")

from openaff.cli.train_imagenet import main

if __name__ == '__main__':
    sys.exit(main())
