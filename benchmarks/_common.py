"""Helpers shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import os
import resource

__all__ = ["peak_rss_mib", "pin_one_cpu"]


def pin_one_cpu() -> str:
    """Pin this process to one CPU (the second, if there is one); return which, for the log."""
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        cpu = 1 if 1 in cpus else cpus[0]
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "unpinned"


def peak_rss_mib() -> float:
    """Peak resident memory of this process (MiB).

    ``VmHWM`` of the process's own memory map: ``ru_maxrss`` would also count the memory of
    the process that started it (a spawned worker inherits its parent's peak at fork time).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
