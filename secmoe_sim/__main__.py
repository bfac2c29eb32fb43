"""``python -m secmoe_sim``: the same command line as the ``secmoe-sim`` script."""

import sys

from secmoe_sim.cli import main

sys.exit(main())
