"""Durable per-task completion records, the basis of resume.

A record is a ``uint8`` zarr array inside the output group, one element per task, set to 1 once
the task's output data has been written. Only the client process writes it (after each task
returns), so there is a single writer and no locking; worker processes only ever write output
data. A task whose mark was lost to a crash is simply recomputed, writing the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import zarr

from ..errors import IncompatibleOutputError
from ._batch import read_many, write_many

__all__ = ["CompletionRecord"]

_PREFIX = "_completion"
_CHUNK = 4096


class CompletionRecord:
    """Which of ``n_tasks`` tasks have finished, stored in ``group``.

    Parameters
    ----------
    group : zarr.Group
        The output group (opened writable).
    name : str
        Name of the task set (one record per stage, e.g. ``"tiles"`` or ``"pairs"``).
    n_tasks : int
        Number of tasks in the set.
    """

    def __init__(self, group: zarr.Group, name: str, n_tasks: int) -> None:
        self.name = name
        self.n_tasks = int(n_tasks)
        key = f"{_PREFIX}/{name}"
        if key in group:
            array = group[key]
            if array.shape != (self.n_tasks,):
                raise IncompatibleOutputError(
                    f"completion record {name!r} has {array.shape[0]} tasks but this run plans "
                    f"{self.n_tasks}; pass overwrite=True to start afresh."
                )
        else:
            array = group.create_array(
                key,
                shape=(self.n_tasks,),
                chunks=(max(1, min(self.n_tasks, _CHUNK)),),
                dtype="uint8",
                fill_value=0,
            )
        self._array: zarr.Array = array

    def done_mask(self) -> np.ndarray:
        """Boolean array, true where the task is recorded complete."""
        if self.n_tasks == 0:
            return np.zeros(0, dtype=bool)
        return read_many([(self._array, (slice(0, self.n_tasks),))], "completion record")[0] != 0

    def done_indices(self) -> np.ndarray:
        """Indices of completed tasks, ascending."""
        return np.flatnonzero(self.done_mask())

    def is_done(self, index: int) -> bool:
        """Whether task ``index`` is recorded complete."""
        return bool(self._array[int(index)])

    @property
    def complete(self) -> bool:
        """Whether every task is recorded complete."""
        return bool(self.done_mask().all())

    def mark_done(self, index: int) -> None:
        """Record task ``index`` as complete (call only after its data is written)."""
        self.mark_done_many([index])

    def mark_done_many(self, indices: Iterable[int]) -> None:
        """Record several tasks complete, touching each record chunk once."""
        idx = np.unique(np.fromiter((int(i) for i in indices), dtype=np.int64))
        if idx.size == 0:
            return
        if idx[0] < 0 or idx[-1] >= self.n_tasks:
            raise IndexError(f"task index out of range 0..{self.n_tasks - 1}")
        chunk = self._array.chunks[0]
        for c in np.unique(idx // chunk):
            lo, hi = int(c) * chunk, min(int(c + 1) * chunk, self.n_tasks)
            where = (slice(lo, hi),)
            block = read_many([(self._array, where)], "completion record")[0]
            block[idx[(idx >= lo) & (idx < hi)] - lo] = 1
            write_many([(self._array, where, block)])
