"""Progress lines of the stages (per-epoch training, per-log OPE): the `components.*` loggers print one line each
to stdout, whatever the task process configured for the root logger. kfp's executor configures the root logger
before a component's code runs, so a component's own logging.basicConfig would do nothing."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(name)s: %(message)s"


def configure(level: int = logging.INFO) -> None:
    """Idempotent: one stdout handler on the `components` logger, which no longer propagates to the root."""
    logger = logging.getLogger("components")
    if not any(getattr(handler, "recsys_progress", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        setattr(handler, "recsys_progress", True)  # noqa: B010 (a marker attribute StreamHandler does not declare)
        handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def time_left(elapsed_s: float, done: int, total: int) -> str:
    """'about 40 s left' at the pace so far."""
    if done <= 0 or done >= total:
        return "0 s left" if done >= total else "time left unknown"
    return f"about {elapsed_s / done * (total - done):.0f} s left"
