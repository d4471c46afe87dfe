import sys

from ..cli.ops import main

sys.exit(main())
