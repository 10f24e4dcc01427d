"""The console shows each Lightning message once (through the root handler) and none of its product tips."""
from __future__ import annotations

import logging

from recpie.cli.console import LIGHTNING_LOGGERS, setup_console


def test_lightning_messages_reach_the_root_handler_once_and_tips_are_dropped():
    setup_console()
    for name in LIGHTNING_LOGGERS:
        assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        setup_console()  # again: filters the handler added since, and adds nothing twice
        assert handler.filters.count(handler.filters[0]) == 1
        rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
    finally:
        root.removeHandler(handler)
    assert seen == ["GPU available: False, used: False"]


def test_intended_library_warnings_are_not_shown():
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        setup_console()
        warnings.warn("Found 313 module(s) in eval mode at the start of training.", UserWarning, stacklevel=1)
        warnings.warn("something the user should see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something the user should see"]
