"""``python3 -m hatchway.agent``: the hatchway-agent command."""

import sys

from .cli import main

sys.exit(main())
