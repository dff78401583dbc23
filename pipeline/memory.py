"""A process's peak resident memory, which a stage can restart so that the next read is its own.

Light on purpose: the bench reads it before it imports what it measures.
"""

from __future__ import annotations

import resource
import sys
from contextlib import suppress
from pathlib import Path


def restart_peak_rss() -> None:
    """Reset the process's resident-memory high-water mark (Linux ``clear_refs``)."""
    with suppress(OSError):  # elsewhere the mark only grows: a read then gives the process's peak so far
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started or since the last ``restart_peak_rss``, in MB."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024
