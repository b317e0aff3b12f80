"""Task lists made on demand: a run may have millions of tiles, so tasks are built by index."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["IndexedTasks"]


class IndexedTasks(Sequence):
    """``n`` tasks, task ``i`` being ``make(i)``; nothing is built until it is asked for.

    Parameters
    ----------
    n : int
        Number of tasks.
    make : callable
        ``make(i) -> task``; picklable tasks for a cluster (a dataclass, or a
        :func:`functools.partial` of one with its shared part bound).

    Examples
    --------
    >>> tasks = IndexedTasks(3, lambda i: ("tile", i))
    >>> len(tasks), tasks[2], tasks[-1], tasks[:2]
    (3, ('tile', 2), ('tile', 2), [('tile', 0), ('tile', 1)])
    """

    def __init__(self, n: int, make: Callable[[int], Any]) -> None:
        self.n, self.make = int(n), make

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.make(i) for i in range(*index.indices(self.n))]
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.make(index)
