"""``python -m harness.bench OP [options]``: see :mod:`harness.bench.cli`."""

import sys

from harness.bench.cli import main

sys.exit(main())
