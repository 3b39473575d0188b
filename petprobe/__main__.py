"""``python -m petprobe``: the same as the ``petprobe`` command."""

import sys

from petprobe.cli import main

sys.exit(main())
