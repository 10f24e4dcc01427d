"""Command line: ``python -m recpie {run,data,evaluate,explain} ...`` (each has ``--help``)."""
from __future__ import annotations

import sys

USAGE = """usage: python -m recpie COMMAND ...

commands:
  run NAME [key=value ...] [--print-config]   run a named experiment (experiments/configs/NAME.yaml)
  data stats NAME [key=value ...]             users, POIs, check-ins, samples and time ranges of its data
  evaluate ...                                score an external file of per-sample scores or top-K lists
  explain ...                                 a user's top-K places, each with an explanation
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        from experiments.run import run_main

        return run_main(rest)
    if command == "data":
        from recpie.data.cli import data_main

        return data_main(rest)
    if command == "evaluate":
        from recpie.evaluation.cli import evaluate_main

        return evaluate_main(rest)
    if command == "explain":
        from recpie.explainer.cli import explain_main

        return explain_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
