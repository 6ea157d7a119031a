"""``python -m streamenc`` is the ``streamenc`` command."""

import sys

from .cli import main

sys.exit(main())
