import sys

from hatchway.agent.cli import main

sys.exit(main())
