# Cython's view of ring_layout.h.
from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef extern from "ring_layout.h":
    uint64_t SE_MAGIC
    uint32_t SE_VERSION
    # compile-time constants (an enum to Cython), so that they can size the arrays below;
    # their values are the header's alone
    cdef enum:
        SE_MAX_DIMS
        SE_SLOT_HEADER
        SE_COUNTERS
        SE_DTYPE_BYTES
        SE_PAGE
    size_t SE_PRODUCER_AT

    ctypedef struct se_header:
        uint64_t magic
        uint32_t version
        uint32_t header_bytes
        uint32_t slots
        uint32_t ndim
        uint64_t shape[SE_MAX_DIMS]
        char dtype[SE_DTYPE_BYTES]
        uint64_t payload_bytes
        uint64_t slot_stride
        uint64_t slot_offset
        int64_t producer_pid
        uint64_t producer_start
        int64_t consumer_pid
        uint64_t consumer_start
        uint32_t producer_closed
        uint32_t consumer_closed
        uint64_t head
        uint64_t read
        uint64_t tail
        uint64_t producer_counters[SE_COUNTERS]
        uint64_t consumer_counters[SE_COUNTERS]

    ctypedef struct se_slot:
        uint64_t seq
        int64_t timestamp_ns
        int64_t episode
        int64_t frame_index

    uint64_t se_load(uint64_t *p) nogil
    void se_store(uint64_t *p, uint64_t v) nogil
