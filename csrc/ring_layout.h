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

typedef struct {
    uint64_t magic;                /* written last by the creator */
    uint32_t version;
    uint32_t header_bytes;
    uint32_t slots;
    uint32_t ndim;
    uint64_t shape[SE_MAX_DIMS];
    char     dtype[16];            /* numpy dtype.str, e.g. "|u1" */
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
       each side stores only its own line */
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

static inline uint64_t se_load(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void se_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

#endif
