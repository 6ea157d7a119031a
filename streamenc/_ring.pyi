"""Type stub for the Cython extension streamenc._ring (csrc/_ring.pyx).

Keep in step with the .pyx: names, parameters and return types as it defines them.
"""

from typing import Any

import numpy as np
from _typeshed import ReadableBuffer, WriteableBuffer

PAGE: int  # bytes before slot 0: the header's page
MAGIC: int
VERSION: int
MAX_DIMS: int
SLOT_HEADER: int  # bytes of each slot's header; the payload follows
HEADER_BYTES: int  # sizeof(se_header)
COUNTERS: int  # counters per side
PRODUCER_AT: int  # byte offset of producer_pid, then producer_start

def layout(payload_bytes: int, slots: int) -> tuple[int, int, int]:
    """Return (slot_offset, slot_stride, total_bytes): page-aligned slots after a one-page header."""

class RingCore:
    """A mapped segment. Holds one buffer export of the mmap for its raw pointer."""

    def __new__(cls, mm: WriteableBuffer) -> RingCore: ...  # __cinit__: any writable buffer, in practice an mmap
    @property
    def size(self) -> int: ...
    def release(self) -> None:
        """Drop our export of the mmap so that it can be closed."""

    def init(
        self,
        shape: tuple[int, ...],
        dtype: bytes,
        payload_bytes: int,
        slots: int,
        slot_offset: int,
        slot_stride: int,
        pid: int,
        start: int,
    ) -> None:
        """Write a fresh header and touch every page, so that put() never takes a page fault."""

    def header(self) -> dict[str, Any]:
        """The header as a dict (geometry, pids, flags, cursors).

        Keys: magic, version, header_bytes, slots, payload_bytes, slot_offset, slot_stride,
        producer_pid, producer_start, consumer_pid, consumer_start, head, read, tail (int);
        shape (tuple[int, ...]); dtype (str); producer_closed, consumer_closed (bool).
        """
    # -- peers
    def set_consumer(self, pid: int, start: int) -> None: ...
    def mark_closed(self, producer: bool) -> None: ...
    @property
    def producer(self) -> tuple[int, int, bool]:
        """(pid, start, closed)"""

    @property
    def consumer(self) -> tuple[int, int, bool]:
        """(pid, start, closed)"""
    # -- cursors
    @property
    def head(self) -> int: ...
    @property
    def read(self) -> int: ...
    @property
    def tail(self) -> int: ...
    def set_read(self, v: int) -> None: ...
    def set_tail(self, v: int) -> None: ...
    # -- users' counters (IndexError outside 0 <= i < COUNTERS)
    def counter(self, producer: bool, i: int) -> int: ...
    def set_counter(self, producer: bool, i: int, v: int) -> None: ...
    # -- slots
    def payload_offset(self, seq: int) -> int:
        """Byte offset of the payload of the slot that holds seq."""

    # numpy's stubs make an ndarray a buffer only for Python >= 3.12, hence the union
    def write(
        self, frame: ReadableBuffer | np.ndarray[Any, Any], timestamp_ns: int, episode: int, frame_index: int
    ) -> int:
        """Copy frame into the slot at head, without the GIL, then commit. Returns its seq."""

    def commit(self, timestamp_ns: int, episode: int, frame_index: int) -> int:
        """Commit the slot at head, whose payload was written in place (reserve)."""

    def meta(self, seq: int) -> tuple[int, int, int, int]:
        """(seq, timestamp_ns, episode, frame_index) stored in the slot that holds seq."""
