/* Byte layout of a streamenc ring segment, shared by every process that maps it.
 * Keep in step with docs/design.md ("Ring memory layout"). */
#ifndef STREAMENC_RING_LAYOUT_H
#define STREAMENC_RING_LAYOUT_H
#include <stddef.h>
#include <stdint.h>

#define SE_MAGIC 0x31434e454d525453ULL   /* "STRMENC1" as little-endian bytes */
#define SE_VERSION 1
#define SE_MAX_DIMS 4
#define SE_SLOT_HEADER 64
#define SE_COUNTERS 8
#define SE_DTYPE_BYTES 16      /* dtype.str, NUL padded */
#define SE_PAGE 4096           /* the header's page: slot 0 starts at this offset */
#define SE_CACHE_LINE 64

typedef struct {
    uint64_t magic;                /* written last by the creator */
    uint32_t version;
    uint32_t header_bytes;
    uint32_t slots;
    uint32_t ndim;
    uint64_t shape[SE_MAX_DIMS];
    char     dtype[SE_DTYPE_BYTES];  /* numpy dtype.str, e.g. "|u1" */
    uint64_t payload_bytes;
    uint64_t slot_stride;          /* a page multiple */
    uint64_t slot_offset;          /* offset of slot 0, page aligned */
    int64_t  producer_pid;
    uint64_t producer_start;       /* /proc start time: tells a reused pid apart */
    int64_t  consumer_pid;
    uint64_t consumer_start;
    uint32_t producer_closed;
    uint32_t consumer_closed;
    uint64_t _pad0[2];
    /* cursors, each on its own cache line; only one side stores each */
    uint64_t head;  uint64_t _pad1[7];   /* frames committed = next seq (producer) */
    uint64_t read;  uint64_t _pad2[7];   /* frames handed out (consumer) */
    uint64_t tail;  uint64_t _pad3[7];   /* frames released (consumer) */
    /* general-purpose counters for the ring's users (the spill, drop and encode counts);
       each side stores only its own array (see the checks below for their lines) */
    uint64_t producer_counters[SE_COUNTERS];
    uint64_t consumer_counters[SE_COUNTERS];
} se_header;

typedef struct {
    uint64_t seq;
    int64_t  timestamp_ns;
    int64_t  episode;
    int64_t  frame_index;
    uint64_t _pad[4];
} se_slot;                         /* SE_SLOT_HEADER bytes; the payload follows */

#define SE_PRODUCER_AT offsetof(se_header, producer_pid)

/* The layout, checked when the extension compiles (C11). A ring is read by other
 * processes and by streamenc/ring.py without this header, so a field that moves must
 * fail the build rather than a recording. */
#define SE_LINE_OF(field) (offsetof(se_header, field) / SE_CACHE_LINE)

_Static_assert(sizeof(se_slot) == SE_SLOT_HEADER, "se_slot must be SE_SLOT_HEADER bytes: the payload follows it");
_Static_assert(SE_SLOT_HEADER % SE_CACHE_LINE == 0, "the payload must start on a cache line");
_Static_assert(sizeof(se_header) <= SE_PAGE, "the header must fit in the page before slot 0 (layout() in _ring.pyx)");
_Static_assert(SE_PAGE % SE_CACHE_LINE == 0, "slot 0 must start on a cache line");

/* Cursors: 8-byte aligned (atomic, and so never across a line), each on a cache line
 * of its own among the cursors, and the counters on later lines. The segment is page
 * aligned, so an offset's line here is its line in memory. Not checked, because layout
 * version 1 does not have it: head's line also holds producer_closed and consumer_closed
 * (stored once each, at close), and producer_counters[5..7] share a line with
 * consumer_counters[0..4]; making either exclusive changes the layout (SE_VERSION 2). */
_Static_assert(offsetof(se_header, head) % 8 == 0 && offsetof(se_header, read) % 8 == 0
               && offsetof(se_header, tail) % 8 == 0, "cursors must be 8-byte aligned");
_Static_assert(SE_LINE_OF(head) < SE_LINE_OF(read), "head and read must be on different cache lines");
_Static_assert(SE_LINE_OF(read) < SE_LINE_OF(tail), "read and tail must be on different cache lines");
_Static_assert(SE_LINE_OF(tail) < SE_LINE_OF(producer_counters), "the counters must not share tail's cache line");
_Static_assert(offsetof(se_header, producer_counters) % 8 == 0 && offsetof(se_header, consumer_counters) % 8 == 0,
               "counters must be 8-byte aligned");

/* What streamenc/ring.py reads from a raw segment (_segment_owner): the magic as the
 * first 8 little-endian bytes, then producer_pid and producer_start at SE_PRODUCER_AT. */
_Static_assert(offsetof(se_header, magic) == 0 && sizeof(((se_header *)0)->magic) == 8, "magic: bytes 0..7");
_Static_assert(sizeof(((se_header *)0)->producer_pid) == 8, "producer_pid: 8 bytes at SE_PRODUCER_AT");
_Static_assert(offsetof(se_header, producer_start) == SE_PRODUCER_AT + 8
               && sizeof(((se_header *)0)->producer_start) == 8, "producer_start: the 8 bytes after producer_pid");

/* Layout version 1 as docs/design.md describes it: a change to any of these is a new
 * layout, and SE_VERSION must change with it (a peer of the other version is refused). */
_Static_assert(SE_VERSION != 1 || (sizeof(se_header) == 472 && SE_PRODUCER_AT == 96 && offsetof(se_header, head) == 152
                                   && offsetof(se_header, read) == 216 && offsetof(se_header, tail) == 280
                                   && offsetof(se_header, producer_counters) == 344
                                   && offsetof(se_header, consumer_counters) == 408),
               "the ring layout changed: bump SE_VERSION (and docs/design.md)");

static inline uint64_t se_load(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void se_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

#endif
