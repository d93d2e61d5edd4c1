"""``python3 -m hatchway.sidecar``: the hatchway-sidecar command."""

import sys

from .cli import main

sys.exit(main())
