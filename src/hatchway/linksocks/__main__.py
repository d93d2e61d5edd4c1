"""``python -m hatchway.linksocks``: same as ``hatchway-linksocks``."""

import sys

from .cli import main

sys.exit(main())
