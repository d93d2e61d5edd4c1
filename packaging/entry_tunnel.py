import sys

from hatchway.tunnel.cli import main

sys.exit(main())
