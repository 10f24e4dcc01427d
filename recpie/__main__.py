"""``python -m recpie``: the command line of recpie/cli."""
import sys

from recpie.cli import main

if __name__ == "__main__":
    sys.exit(main())
