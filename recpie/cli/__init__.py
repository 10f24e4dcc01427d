"""Command line: ``python -m recpie {run,data,evaluate,explain} ...`` (each has ``--help``).

The commands sit above the library (recpie/cli/<command>.py): they read configs, files and run folders
and call down into data, models and recipes; nothing in the library imports them.

The one error boundary: a ``RecPIEError`` (a bad config, input file or run folder; recpie/errors.py), or
another library's exception that means a bad setting (Lightning's MisconfigurationException, omegaconf's
interpolation errors: recpie.errors.FOREIGN_USER_ERRORS), prints ``error: <message>`` on one line and exits
2; ``--debug`` or RECPIE_DEBUG=1 shows its traceback instead. Any other exception is a bug and keeps its
traceback.
"""
from __future__ import annotations

import os
import sys

from recpie.errors import user_error_message

USAGE = """usage: python -m recpie COMMAND ...

commands:
  run NAME [key=value ...] [--print-config]   run a named experiment (experiments/configs/NAME.yaml)
  data stats NAME [key=value ...]             users, POIs, check-ins, samples and time ranges of its data;
                                              the machine and the dtype its explainer would load in
  evaluate ...                                score an external file of per-sample scores or top-K lists
  explain ...                                 a user's top-K places, each with an explanation

--debug (or RECPIE_DEBUG=1) anywhere: show the traceback of an error instead of its message
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RECPIE_DEBUG", "") not in ("", "0")
    try:
        return _dispatch([a for a in argv if a != "--debug"])
    except Exception as exc:
        message = user_error_message(exc)
        if debug or message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        from recpie.cli.run import run_main

        return run_main(rest)
    if command == "data":
        from recpie.cli.data import data_main

        return data_main(rest)
    if command == "evaluate":
        from recpie.cli.evaluate import evaluate_main

        return evaluate_main(rest)
    if command == "explain":
        from recpie.cli.explain import explain_main

        return explain_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
