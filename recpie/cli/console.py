"""What the console shows: each event once, in one format, without Lightning's product tips.

Lightning gives its package loggers their own console handler *and* lets them propagate to the root logger,
so with the runner's handler on the root every Lightning message printed twice. Here the root handler is
the only one; Lightning's records reach it by propagation.
"""
from __future__ import annotations

import logging
import warnings

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
NOISE = (
    "💡 Tip:",  # Lightning advertising its cloud products on every Trainer
)


def _not_noise(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(NOISE)


def setup_console(level: int = logging.INFO) -> None:
    """One handler on the root logger for the project's and Lightning's records."""
    import lightning  # noqa: F401  (its import adds the handlers removed below)

    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        if _not_noise not in handler.filters:
            handler.addFilter(_not_noise)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    for message in (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's pytree helper on a newer torch
        r"Found \d+ module\(s\) in eval mode",  # the frozen base LLM is in eval mode on purpose
        r"`is_gradient_checkpointing` is deprecated",  # peft asks transformers the old way
    ):
        warnings.filterwarnings("ignore", message=message)
