"""The project's error classes: what the command line reports as ``error: <message>`` (exit 2).

A ``RecPIEError`` is a problem with what the user gave us (a config, a file, a run folder), never a bug:
its message names the key, file or line and the fix, so the CLI prints it without a traceback.
"""
from __future__ import annotations

import sys


class RecPIEError(Exception):
    """A bad input the user can fix; the message says where and how."""


class ConfigError(RecPIEError, ValueError):
    """A config that cannot be used; the message names the file, override or key and the fix."""


class DataError(RecPIEError, ValueError):
    """Bad or missing input data; the message names the file (and line) and what to do."""


class CheckpointError(RecPIEError, ValueError):
    """A checkpoint or run folder that cannot be used (truncated, foreign, from another config)."""


class InputError(RecPIEError, ValueError):
    """A bad command-line argument or a bad file given to a command (evaluate, explain)."""


# Other libraries' exceptions that mean a bad setting of the user's, never a bug of ours: (module, class) ->
# what the one error line says first. Matched by name along the exception's class hierarchy, so that this
# bottom layer imports neither library (nothing raised them if they were never imported).
FOREIGN_USER_ERRORS = {
    ("lightning.fabric.utilities.exceptions", "MisconfigurationException"):
        "Lightning refused the trainer settings (trainer.accelerator, devices, strategy, precision, num_nodes)",
    ("omegaconf.errors", "InterpolationResolutionError"): "config key {key}: its interpolation ${{...}} fails",
}


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of ``exc`` when it is a user's mistake: a RecPIEError, or one of
    FOREIGN_USER_ERRORS (naming the config key where the library gives it); None for anything else (a bug)."""
    if isinstance(exc, RecPIEError):
        return str(exc)
    for cls in type(exc).__mro__:
        lead = FOREIGN_USER_ERRORS.get((cls.__module__, cls.__name__))
        if lead is not None and cls.__module__ in sys.modules:
            detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            key = getattr(exc, "full_key", None) or "?"
            return f"{lead.format(key=key)}: {detail}"
    return None
