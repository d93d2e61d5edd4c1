"""``python3 -m hatchway.hostproxy``: the hatchway-hostproxy command."""

import sys

from .cli import main

sys.exit(main())
