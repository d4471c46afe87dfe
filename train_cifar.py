#!/usr/bin/env python
"""Train CIFAR AFF/iAFF networks (Dai et al., WACV 2021); see ``--help``."""
import sys

from openaff.cli.train_cifar import main

if __name__ == '__main__':
    sys.exit(main())
