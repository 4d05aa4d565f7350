"""``python -m fakemx`` is the ``fakemx`` command."""

import sys

from fakemx.cli import main

sys.exit(main())
