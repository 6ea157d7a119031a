"""Whether a process is alive: the one reader of ``/proc/<pid>/stat``.

A pid alone can be reused once its process is gone; a pid with the process's start time
names one process. The ring header stores both for each side, so a peer that died (or a
stale segment's owner) is told apart from a new process that got the same pid.
"""

from __future__ import annotations

import os


def _stat(pid: int) -> list[bytes]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 if unknown)."""
    try:
        return int(_stat(pid)[19])
    except (OSError, IndexError, ValueError):
        return 0


def alive(pid: int, start: int = 0) -> bool:
    """True if ``pid`` runs and, when ``start`` is given, is the process that started then.
    A zombie counts as dead: it will never touch the ring again."""
    if pid <= 0:
        return False
    try:
        fields = _stat(pid)
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: a signal probe says only whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in (b"Z", b"X"):
        return False
    return not start or int(fields[19]) == start
