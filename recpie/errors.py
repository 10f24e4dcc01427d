"""The project's error classes: what the command line reports as ``error: <message>`` (exit 2).

A ``RecPIEError`` is a problem with what the user gave us (a config, a file, a run folder), never a bug:
its message names the key, file or line and the fix, so the CLI prints it without a traceback.
"""
from __future__ import annotations


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
