"""How encoder processes are scheduled: never in a real-time class, and as nice as configured.

libsvtav1 moves the threads it creates, and the thread that opens it, to SCHED_FIFO
priority 99 whenever the process may: as root, with CAP_SYS_NICE, or with an
RLIMIT_RTPRIO above 0. Real-time threads run ahead of every normal thread, the
record loop's included, for up to 950 ms in every second, and ``nice`` does not
apply to them. So an encoder process

1. applies its configured policy, nice value and CPU set while it has one thread;
2. gives up the right to raise its priority (``give_up_realtime``) before it opens
   a codec, so that the codec's attempts fail;
3. checks every thread after each codec open, and every second, and puts any
   real-time one back (``enforce``), in case a codec found another way.

The same applies to whoever opens a codec in the recording process itself (the probe):
``kept_schedule`` puts the calling thread back as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass

POLICIES = {"other": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}
# "auto": the recorder changes its encoders' class with their work (pipeline.py): SCHED_IDLE
# while they keep up with a recording, SCHED_OTHER once they fall behind or it waits for them
SETTINGS = (*POLICIES, "auto")
REALTIME = frozenset({os.SCHED_FIFO, os.SCHED_RR})
NAMES = {
    os.SCHED_OTHER: "other",
    os.SCHED_BATCH: "batch",
    os.SCHED_IDLE: "idle",
    os.SCHED_FIFO: "FIFO",
    os.SCHED_RR: "RR",
}
CAP_SYS_NICE = 23
_CAP_VERSION_3 = 0x20080522  # two 32-bit words per set


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _caps() -> tuple[_CapHeader, ctypes.Array] | None:
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    if _libc().capget(ctypes.byref(header), data) != 0:
        return None
    return header, data


def has_sys_nice() -> bool:
    """CAP_SYS_NICE in this process's effective set (root has it, unless a container drops it)."""
    caps = _caps()
    return bool(caps and caps[1][CAP_SYS_NICE // 32].effective & (1 << CAP_SYS_NICE % 32))


def realtime_allowed() -> str | None:
    """Why a thread of this process could enter SCHED_FIFO or SCHED_RR, or None if it cannot."""
    if has_sys_nice():
        return "CAP_SYS_NICE (root, or a privileged container)"
    soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    if soft != 0:
        return f"RLIMIT_RTPRIO is {'unlimited' if soft == resource.RLIM_INFINITY else soft}"
    return None


def give_up_realtime() -> None:
    """Drop CAP_SYS_NICE (effective, permitted, inheritable) and set RLIMIT_RTPRIO to 0.

    Capabilities belong to a thread, and a new thread inherits its creator's, so call this
    while the process has one thread: then no thread of it can enter a real-time class or
    lower its nice value again. It is for the encoder process, once its settings are applied.
    """
    caps = _caps()
    if caps is not None:
        header, data = caps
        word, bit = CAP_SYS_NICE // 32, 1 << (CAP_SYS_NICE % 32)
        if (data[word].effective | data[word].permitted | data[word].inheritable) & bit:
            data[word].effective &= ~bit
            data[word].permitted &= ~bit
            data[word].inheritable &= ~bit
            if _libc().capset(ctypes.byref(header), data) != 0:
                raise OSError(ctypes.get_errno(), "capset: cannot drop CAP_SYS_NICE")
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))  # lowering a limit is always allowed


def starting_policy(setting: str) -> str:
    """The class an encoder starts in. ``"auto"``: SCHED_IDLE where this process (the
    recorder) can later move it back to SCHED_OTHER (that takes CAP_SYS_NICE, which the
    recorder keeps and the encoder gives up), else SCHED_BATCH, which still gets its fair
    share. The recorder decides, and hands the encoder the class by name."""
    if setting != "auto":
        return setting
    return "idle" if has_sys_nice() else "batch"


def set_process(pid: int, policy: str, nice: int) -> None:
    """Put every thread of another process (an encoder) in ``policy`` at ``nice``."""
    for tid in threads(pid):
        _set(tid, policy, nice)


def threads(pid: int | str = "self") -> list[int]:
    """Thread ids of a process (default: this one)."""
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return []


_RANK = {os.SCHED_IDLE: 0, os.SCHED_BATCH: 1, os.SCHED_OTHER: 2, os.SCHED_RR: 3, os.SCHED_FIFO: 3}


@dataclass(frozen=True)
class Schedule:
    """A process's threads for the scheduler: how many, the policies and nice values seen,
    and how many are real-time. ``policy``/``nice`` are those of the thread that the
    scheduler favours most: what competes hardest with the record loop."""

    threads: int
    policies: tuple[str, ...]
    nices: tuple[int, ...]
    realtime: int
    policy: int = os.SCHED_OTHER
    nice: int = 0

    def __str__(self) -> str:
        return describe(self.policy, self.nice)


def describe(policy: int, nice: int) -> str:
    """A policy as a user reads it: "other nice 10", "FIFO"."""
    name = NAMES.get(policy, str(policy))
    return name if policy in REALTIME else f"{name} nice {nice}"


def observe(pid: int | str = "self") -> Schedule:
    """Read the scheduling class and nice value of every thread of ``pid``."""
    seen: list[tuple[int, int]] = []
    for tid in threads(pid):
        try:
            seen.append((os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))
        except OSError:  # the thread ended meanwhile
            continue
    if not seen:
        return Schedule(0, (), (), 0)
    policy, nice = max(seen, key=lambda pn: (_RANK.get(pn[0], 2), -pn[1]))
    return Schedule(
        len(seen),
        tuple(sorted({NAMES.get(p, str(p)) for p, _ in seen})),
        tuple(sorted({n for _, n in seen})),
        sum(p in REALTIME for p, _ in seen),
        policy,
        nice,
    )


def pack(s: Schedule) -> int:
    """A Schedule's favoured thread as one number for a shared counter (0 means unknown)."""
    return (s.policy << 8 | (s.nice + 20)) + 1 if s.threads else 0


def unpack(code: int) -> str:
    """What ``pack`` stored, as ``describe`` says it."""
    if code <= 0:
        return "unknown"
    code -= 1
    return describe(code >> 8, (code & 0xFF) - 20)


def apply(policy: str, nice: int, cpus: tuple[int, ...] | None = None) -> None:
    """Put every thread of this process in ``policy`` at ``nice``, on ``cpus`` if given.
    Threads created later inherit all three from the thread that creates them."""
    for tid in threads():
        _set(tid, policy, nice)
        if cpus:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, cpus)


def _set(tid: int, policy: str, nice: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.sched_getscheduler(tid) != POLICIES[policy]:
            os.sched_setscheduler(tid, POLICIES[policy], os.sched_param(0))
        if os.getpriority(os.PRIO_PROCESS, tid) != nice:
            with contextlib.suppress(PermissionError):  # lowering nice needs the right we gave up
                os.setpriority(os.PRIO_PROCESS, tid, nice)


def enforce(policy: str, nice: int) -> int:
    """Put back every real-time thread of this process; returns how many there were.

    Leaving a real-time class is always allowed, without any privilege."""
    repaired = 0
    for tid in threads():
        try:
            rt = os.sched_getscheduler(tid) in REALTIME
        except OSError:
            continue
        if rt:
            _set(tid, policy, nice)
            repaired += 1
    return repaired


@contextlib.contextmanager
def kept_schedule() -> Iterator[None]:
    """Run a block (a codec open) and put the calling thread's policy, priority and nice
    value back as they were: opening SVT-AV1 in the record loop's thread must not leave
    that thread real-time, nor the threads it starts later."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
                os.sched_setscheduler(0, policy, param)
            if os.getpriority(os.PRIO_PROCESS, 0) != nice:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
