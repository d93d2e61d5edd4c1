import sys

from hatchway.linksocks.cli import main

sys.exit(main())
