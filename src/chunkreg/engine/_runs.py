"""What every workflow run does around its stages.

A run names its output as its tasks will see it (:func:`output_location`), holds the output's
lease scope and its client while it runs (:func:`workflow_scope`), and says in its report
where the result is (:func:`output_note`). Workflows call these instead of writing the same
few lines again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ..execution import open_client
from ..io import output_scope

__all__ = ["output_location", "output_note", "workflow_scope"]


def output_location(output, *, absolute: bool = False):
    """``output`` as a run passes it on: a path-like as a string, anything else (a URL, a
    store) unchanged; with ``absolute``, a local path made absolute, for tasks that get the
    output's arrays and may run in another folder.

    Examples
    --------
    >>> from pathlib import Path
    >>> output_location(Path("out.zarr"))
    'out.zarr'
    >>> output_location("s3://bucket/out.zarr", absolute=True)
    's3://bucket/out.zarr'
    """
    if isinstance(output, os.PathLike):
        output = os.fspath(output)
    if absolute and isinstance(output, str) and "://" not in output:
        output = os.path.abspath(output)
    return output


def output_note(output, array: str) -> str:
    """Where a run's result lies, for its report: ``<output>/<array>``, or just the array's
    name when the output is a store object rather than a path or URL.

    Examples
    --------
    >>> output_note("out.zarr", "0")
    'out.zarr/0'
    """
    return f"{output}/{array}" if isinstance(output, str) else array


@contextlib.contextmanager
def workflow_scope(client=None, *, scheduler: str | None = None,
                   n_workers: int | None = None) -> Iterator:  # fmt: skip
    """The scope of one run: its outputs' leases (:func:`~chunkreg.io.output_scope`, held
    until everything is written) and its client (:func:`~chunkreg.execution.open_client`;
    one it started is closed at the end). Yields the client."""
    with output_scope(), open_client(client, scheduler=scheduler, n_workers=n_workers) as c:
        yield c
