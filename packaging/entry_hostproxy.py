import sys

from hatchway.hostproxy.cli import main

sys.exit(main())
