#!/usr/bin/env python
"""Train an AFF-FPN segmentation network on digits pasted on canvases; see ``--help``."""
import sys

from openaff.cli.train_segmentation import main

if __name__ == '__main__':
    sys.exit(main())
