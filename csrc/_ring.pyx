# cython: language_level=3, boundscheck=False, wraparound=False
"""The ring's core: the segment's byte layout, its cursors and the frame copy.

Everything else (semaphores, waiting, naming, errors) lives in
streamenc/ring.py; this module only knows where bytes go, so that the copy
can run without the GIL and the cursors are read and written atomically.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from libc.string cimport memcpy, memset, strncpy
from libc.stdint cimport int64_t, uint64_t

from ring_layout cimport (SE_COUNTERS, SE_DTYPE_BYTES, SE_MAGIC, SE_MAX_DIMS, SE_PAGE, SE_PRODUCER_AT, SE_SLOT_HEADER,
                          SE_VERSION, se_header, se_load, se_slot, se_store)

PAGE = SE_PAGE
MAGIC = SE_MAGIC
VERSION = SE_VERSION
MAX_DIMS = SE_MAX_DIMS
SLOT_HEADER = SE_SLOT_HEADER
HEADER_BYTES = sizeof(se_header)
COUNTERS = SE_COUNTERS
PRODUCER_AT = SE_PRODUCER_AT  # byte offset of producer_pid, then producer_start


def layout(Py_ssize_t payload_bytes, Py_ssize_t slots):
    """Return (slot_offset, slot_stride, total_bytes): page-aligned slots after a one-page header."""
    cdef Py_ssize_t offset = SE_PAGE
    cdef Py_ssize_t stride = ((SE_SLOT_HEADER + payload_bytes + SE_PAGE - 1) // SE_PAGE) * SE_PAGE
    return offset, stride, offset + stride * slots


cdef class RingCore:
    """A mapped segment. Holds one buffer export of the mmap for its raw pointer."""

    cdef object _mm
    cdef Py_buffer _buf
    cdef bint _held
    cdef char *_base
    cdef se_header *_hdr
    cdef readonly Py_ssize_t size

    def __cinit__(self, mm):
        PyObject_GetBuffer(mm, &self._buf, PyBUF_WRITABLE)
        self._held = True
        self._mm = mm
        self._base = <char *>self._buf.buf
        self._hdr = <se_header *>self._base
        self.size = self._buf.len

    def __dealloc__(self):
        if self._held:
            PyBuffer_Release(&self._buf)

    def release(self):
        """Drop our export of the mmap so that it can be closed."""
        if self._held:
            PyBuffer_Release(&self._buf)
            self._held = False
            self._base = NULL
            self._hdr = NULL

    cdef se_header *_h(self) except NULL:
        """The header; every entry point goes through here, so a released core raises
        instead of dereferencing NULL (a segfault)."""
        if self._hdr == NULL:
            raise RuntimeError("ring core is released (the ring was closed)")
        return self._hdr

    cdef char *_slot(self, uint64_t index) except NULL:
        cdef se_header *h = self._h()
        return self._base + h.slot_offset + (index % h.slots) * h.slot_stride

    def init(self, tuple shape, bytes dtype, Py_ssize_t payload_bytes, Py_ssize_t slots,
             Py_ssize_t slot_offset, Py_ssize_t slot_stride, long long pid, unsigned long long start):
        """Write a fresh header and touch every page, so that put() never takes a page fault."""
        cdef se_header *h = self._h()
        cdef Py_ssize_t n = self.size
        with nogil:
            memset(self._base, 0, n)
        h.version = SE_VERSION
        h.header_bytes = sizeof(se_header)
        h.slots = slots
        h.ndim = len(shape)
        for i, d in enumerate(shape):
            h.shape[i] = d
        strncpy(h.dtype, dtype, SE_DTYPE_BYTES - 1)
        h.payload_bytes = payload_bytes
        h.slot_offset = slot_offset
        h.slot_stride = slot_stride
        h.producer_pid = pid
        h.producer_start = start
        se_store(&h.magic, SE_MAGIC)   # last: a reader never sees a half-written header as valid

    def header(self):
        """The header as a dict (geometry, pids, flags, cursors)."""
        cdef se_header *h = self._h()
        return {
            "magic": h.magic, "version": h.version, "header_bytes": h.header_bytes,
            "slots": h.slots, "shape": tuple(h.shape[i] for i in range(min(<int>h.ndim, SE_MAX_DIMS))),
            "dtype": h.dtype[:SE_DTYPE_BYTES].split(b"\0", 1)[0].decode("ascii", "replace"),
            "payload_bytes": h.payload_bytes, "slot_offset": h.slot_offset, "slot_stride": h.slot_stride,
            "producer_pid": h.producer_pid, "producer_start": h.producer_start,
            "consumer_pid": h.consumer_pid, "consumer_start": h.consumer_start,
            "producer_closed": bool(h.producer_closed), "consumer_closed": bool(h.consumer_closed),
            "head": se_load(&h.head), "read": se_load(&h.read), "tail": se_load(&h.tail),
        }

    # -- peers --------------------------------------------------------------
    def set_consumer(self, long long pid, unsigned long long start):
        cdef se_header *h = self._h()
        h.consumer_pid = pid
        h.consumer_start = start
        h.consumer_closed = 0

    def mark_closed(self, bint producer):
        cdef se_header *h = self._h()
        if producer:
            h.producer_closed = 1
        else:
            h.consumer_closed = 1

    @property
    def producer(self):
        cdef se_header *h = self._h()
        return (h.producer_pid, h.producer_start, bool(h.producer_closed))

    @property
    def consumer(self):
        cdef se_header *h = self._h()
        return (h.consumer_pid, h.consumer_start, bool(h.consumer_closed))

    # -- cursors ------------------------------------------------------------
    @property
    def head(self):
        return se_load(&self._h().head)

    @property
    def read(self):
        return se_load(&self._h().read)

    @property
    def tail(self):
        return se_load(&self._h().tail)

    def set_read(self, uint64_t v):
        se_store(&self._h().read, v)

    def set_tail(self, uint64_t v):
        se_store(&self._h().tail, v)

    # -- users' counters ---------------------------------------------------------
    def counter(self, bint producer, int i):
        cdef se_header *h = self._h()
        if not 0 <= i < SE_COUNTERS:
            raise IndexError(i)
        return se_load(&h.producer_counters[i] if producer else &h.consumer_counters[i])

    def set_counter(self, bint producer, int i, uint64_t v):
        cdef se_header *h = self._h()
        if not 0 <= i < SE_COUNTERS:
            raise IndexError(i)
        se_store(&h.producer_counters[i] if producer else &h.consumer_counters[i], v)

    # -- slots --------------------------------------------------------------
    def payload_offset(self, uint64_t seq):
        """Byte offset of the payload of the slot that holds seq."""
        return <Py_ssize_t>(self._slot(seq) - self._base) + SE_SLOT_HEADER

    def write(self, object frame, int64_t timestamp_ns, int64_t episode, int64_t frame_index):
        """Copy frame into the slot at head, without the GIL, then commit. Returns its seq."""
        cdef Py_buffer src
        cdef se_header *h = self._h()
        cdef uint64_t seq = se_load(&h.head)
        cdef char *dst = self._slot(seq)
        PyObject_GetBuffer(frame, &src, PyBUF_C_CONTIGUOUS)
        try:
            if <uint64_t>src.len != h.payload_bytes:
                raise ValueError(f"frame has {src.len} bytes, slot holds {h.payload_bytes}")
            with nogil:
                memcpy(dst + SE_SLOT_HEADER, src.buf, src.len)
        finally:
            PyBuffer_Release(&src)
        return self._commit(dst, seq, timestamp_ns, episode, frame_index)

    def commit(self, int64_t timestamp_ns, int64_t episode, int64_t frame_index):
        """Commit the slot at head, whose payload was written in place (reserve)."""
        cdef uint64_t seq = se_load(&self._h().head)
        return self._commit(self._slot(seq), seq, timestamp_ns, episode, frame_index)

    cdef uint64_t _commit(self, char *dst, uint64_t seq, int64_t ts, int64_t ep, int64_t fi):
        cdef se_slot *s = <se_slot *>dst
        s.seq = seq
        s.timestamp_ns = ts
        s.episode = ep
        s.frame_index = fi
        se_store(&self._hdr.head, seq + 1)  # callers went through _h() or _slot() already
        return seq

    def meta(self, uint64_t seq):
        """(seq, timestamp_ns, episode, frame_index) stored in the slot that holds seq."""
        cdef se_slot *s = <se_slot *>self._slot(seq)
        return s.seq, s.timestamp_ns, s.episode, s.frame_index
