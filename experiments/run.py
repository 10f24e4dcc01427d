"""Run a named experiment of experiments/configs: ``python experiments/run.py NAME [key=value ...]``,
the same as ``python -m recpie run`` (recpie/cli/run.py) and ``make experiment NAME=...``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from recpie.cli.run import run_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_main(sys.argv[1:]))
