#!/usr/bin/env python
"""Train ImageNet AFF/iAFF networks (Dai et al., WACV 2021); see ``--help``."""
import sys

from openaff.scripts.imagenet import main

if __name__ == '__main__':
    sys.exit(main())
