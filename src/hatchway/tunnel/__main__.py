"""``python3 -m hatchway.tunnel``: the hatchway-tunnel command."""

import sys

from .cli import main

sys.exit(main())
