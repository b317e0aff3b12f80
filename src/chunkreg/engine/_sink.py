"""Small per-task results gathered in the client, stored durably, then marked complete.

Workflows whose tasks return a few numbers per block or tile (shifts, scores) keep them in
memory in the client, write them to small zarr arrays about once a second, and only then mark
the tasks complete. The client is the only writer of these arrays, so there are no races, and a
task is never recorded complete before its numbers are stored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import zarr

from ..errors import IncompatibleOutputError
from ..io import CompletionRecord

__all__ = ["ResultSink"]

_PREFIX = "_results"
_FLUSH_EVERY = 1.0  # seconds


class ResultSink:
    """Per-item result arrays of one stage, with resume.

    Parameters
    ----------
    group : zarr.Group
        Output group (writable).
    name : str
        Stage name; arrays live under ``_results/<name>/`` and the completion record is named
        ``name``.
    n_tasks : int
        Tasks in the stage.
    n_items : int
        Items (blocks, tiles) the results are indexed by; a task may cover several.
    fields : dict
        ``{field: (item_shape, dtype)}``; every field is stored as ``(n_items, *item_shape)``,
        NaN-filled for float dtypes and 0 otherwise until written.
    """

    def __init__(
        self, group: zarr.Group, name: str, *, n_tasks: int, n_items: int, fields: dict
    ) -> None:
        self._arrays: dict[str, zarr.Array] = {}
        created = False
        self.values: dict[str, np.ndarray] = {}
        for field, (item_shape, dtype) in fields.items():
            dtype = np.dtype(dtype)
            shape = (n_items, *item_shape)
            fill = np.nan if dtype.kind == "f" else 0
            key = f"{_PREFIX}/{name}/{field}"
            if key in group and group[key].shape == shape and group[key].dtype == dtype:
                array = group[key]
            else:
                created = True
                array = group.create_array(
                    key,
                    shape=shape,
                    dtype=dtype,
                    chunks=tuple(max(1, n) for n in shape),
                    fill_value=fill,
                    overwrite=True,
                )
            self._arrays[field] = array
            self.values[field] = array[...] if n_items else np.empty(shape, dtype)
        self.record = CompletionRecord(group, name, n_tasks)
        if created and self.record.done_indices().size:
            raise IncompatibleOutputError(
                f"output {group.store} records finished {name} whose results are missing; "
                "pass overwrite=True (--overwrite) to start afresh."
            )
        self._pending: list[int] = []
        self._dirty = False
        self._last = time.perf_counter()

    def todo(self) -> list[int]:
        """Indices of the tasks not yet recorded complete."""
        done = self.record.done_mask()
        return [i for i in range(self.record.n_tasks) if not done[i]]

    def add(self, task_index: int, items: Sequence[int], result: dict) -> None:
        """Store ``result[field]`` (one row per item) for ``items``; mark the task later."""
        items = np.asarray(items, dtype=np.int64)
        for field, values in self.values.items():
            if field in result:
                values[items] = np.asarray(result[field]).reshape((len(items), *values.shape[1:]))
        self._pending.append(int(task_index))
        self._dirty = True
        if time.perf_counter() - self._last >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write the arrays, then record the tasks whose results they now hold."""
        if self._dirty:
            for field, array in self._arrays.items():
                if array.size:
                    array[...] = self.values[field]
            self._dirty = False
        if self._pending:
            self.record.mark_done_many(self._pending)
            self._pending = []
        self._last = time.perf_counter()
