"""The servers the tests start: a free loopback port, waiting until one answers, stopping its whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from contextlib import suppress


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, processes: dict[str, subprocess.Popen], log_tail: Callable[[str], str],
                       timeout_s: float = 120) -> None:
    """Until ``url`` answers 200; at once, with its log, when one of the named ``processes`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_tail(name)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s:\n" + "\n".join(map(log_tail, processes)))


def stop_group(process: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM the process group ``process`` leads (started with start_new_session), SIGKILL what outlives it.

    The group, not the leader: servers fork workers, task supervisors and job runners that outlive it.
    """
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_alive(process.pid):
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
