"""chunkreg's log messages: one ``chunkreg`` logger, configured by the command line and scripts.

Library code only logs (``logging.getLogger(__name__)`` in each module, children of
``chunkreg``); nothing is printed unless an application configures logging. The ``chunkreg``
command and the ``workflows/`` scripts call :func:`configure_logging` from their
``-v/-q/--log-level`` options.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LEVELS", "configure_logging", "verbosity_level"]

#: Names accepted by ``--log-level``.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_HANDLER_NAME = "chunkreg-cli"


def verbosity_level(verbose: int = 0, quiet: bool = False, log_level: str | None = None) -> int:
    """The logging level for ``-v`` (repeated), ``-q`` and ``--log-level`` options.

    Parameters
    ----------
    verbose : int
        How often ``-v`` was given: 1 is INFO (what runs where, plans, retries), 2 DEBUG.
    quiet : bool
        ``-q``: errors only.
    log_level : str, optional
        An explicit level name from :data:`LEVELS`; it wins over ``verbose`` and ``quiet``.

    Returns
    -------
    int
        A :mod:`logging` level; WARNING by default.
    """
    if log_level is not None:
        return getattr(logging, log_level.upper())
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def configure_logging(level: int, stream=None) -> None:
    """Send chunkreg's log records at ``level`` and above to ``stream`` (stderr).

    ``distributed``'s own loggers follow at DEBUG; otherwise they stay at WARNING or above, so
    ``-v`` shows chunkreg's messages without the cluster's chatter. Calling it again replaces
    the handler it installed before.

    Parameters
    ----------
    level : int
        A :mod:`logging` level, e.g. from :func:`verbosity_level`.
    stream : file, optional
        Where records go; default ``sys.stderr``.
    """
    logger = logging.getLogger("chunkreg")
    for handler in list(logger.handlers):
        if handler.get_name() == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        logging.Formatter("%(asctime)s chunkreg %(levelname)s: %(message)s", "%H:%M:%S")
    )
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    logging.getLogger("distributed").setLevel(
        max(level, logging.WARNING) if level > logging.DEBUG else level
    )
