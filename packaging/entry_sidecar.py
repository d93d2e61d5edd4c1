import sys

from hatchway.sidecar.cli import main

sys.exit(main())
