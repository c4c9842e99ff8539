"""``python -m stablestudio_widgets``: the ``stablestudio`` command."""

import sys

from .cli import main

sys.exit(main())
