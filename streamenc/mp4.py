"""The few MP4 boxes an appendable chunk rewrites: a box tree, a track's sample tables,
and its moov. Enough to write a new index for packets already on disk, nothing more:
the packets themselves are read and written by FFmpeg (chunks.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np


class Unsupported(Exception):
    """This pair of files cannot be appended here (different codec parameters, B-frames,
    a chunk too long for its slot): the caller falls back to a full remux."""


# -- boxes ---------------------------------------------------------------------------------
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"udta", b"mvex"}


@dataclass
class Box:
    kind: bytes
    payload: bytes = b""
    children: list[Box] = field(default_factory=list)

    def find(self, kind: bytes) -> Box:
        for c in self.children:
            if c.kind == kind:
                return c
        raise Unsupported(f"no {kind.decode()} box in {self.kind.decode()}")

    def pack(self) -> bytes:
        body = b"".join(c.pack() for c in self.children) if self.kind in _CONTAINERS else self.payload
        return struct.pack(">I4s", 8 + len(body), self.kind) + body


def parse(data: bytes, kind: bytes = b"root") -> Box:
    """A box tree of ``data`` (the payload of a container box)."""
    box, off = Box(kind), 0
    while off + 8 <= len(data):
        size, k = struct.unpack_from(">I4s", data, off)
        head = 8
        if size == 1:
            size, head = struct.unpack_from(">Q", data, off + 8)[0], 16
        elif size == 0:
            size = len(data) - off
        body = data[off + head : off + size]
        box.children.append(parse(body, k) if k in _CONTAINERS else Box(k, body))
        off += size
    return box


def full_header(version: int, flags: int = 0) -> bytes:
    return struct.pack(">I", version << 24 | flags)


# -- the sample tables ---------------------------------------------------------------------
@dataclass
class Samples:
    """What the moov says of the packets: size, duration, keyframe; grouped in chunks (one
    run of consecutive packets per episode) at absolute file offsets."""

    sizes: np.ndarray  # uint32 per sample
    deltas: np.ndarray  # uint32 per sample, in the track's timescale
    sync: np.ndarray  # bool per sample
    chunk_offsets: list[int]
    chunk_counts: list[int]

    @property
    def end(self) -> int:
        """Where the last covered byte ends."""
        if not self.chunk_offsets:
            return 0
        last = sum(self.chunk_counts[:-1])
        return self.chunk_offsets[-1] + int(self.sizes[last:].astype(np.int64).sum())

    def cut(self, samples: int) -> Samples:
        """Only the first ``samples``, whole chunks (episodes) only."""
        offsets, counts, n = [], [], 0
        for off, c in zip(self.chunk_offsets, self.chunk_counts, strict=True):
            if n + c > samples:
                break
            offsets.append(off)
            counts.append(c)
            n += c
        return Samples(self.sizes[:n], self.deltas[:n], self.sync[:n], offsets, counts)

    def plus(self, offset: int, sizes, deltas, sync) -> Samples:
        return Samples(
            np.concatenate([self.sizes, np.asarray(sizes, np.uint32)]),
            np.concatenate([self.deltas, np.asarray(deltas, np.uint32)]),
            np.concatenate([self.sync, np.asarray(sync, bool)]),
            [*self.chunk_offsets, offset],
            [*self.chunk_counts, len(sizes)],
        )

    def stbl(self, stsd: Box) -> Box:
        n = len(self.sizes)
        # stts: (count, delta) per run of equal durations, the inverse of Samples.of's repeat
        starts = np.flatnonzero(np.diff(self.deltas, prepend=np.int64(-1)))
        counts = np.diff(np.append(starts, n))
        runs = np.stack([counts, self.deltas[starts]], axis=1).astype(">u4")
        stts = full_header(0) + struct.pack(">I", len(runs)) + runs.tobytes()
        stsc_rows, prev = [], None
        for i, c in enumerate(self.chunk_counts):
            if c != prev:
                stsc_rows.append(struct.pack(">III", i + 1, c, 1))
                prev = c
        stsc = full_header(0) + struct.pack(">I", len(stsc_rows)) + b"".join(stsc_rows)
        stsz = full_header(0) + struct.pack(">II", 0, n) + self.sizes.astype(">u4").tobytes()
        co64 = (
            full_header(0) + struct.pack(">I", len(self.chunk_offsets)) + np.array(self.chunk_offsets, ">u8").tobytes()
        )
        boxes = [stsd, Box(b"stts", stts)]
        if not self.sync.all():
            keys = (np.flatnonzero(self.sync) + 1).astype(">u4")
            boxes.append(Box(b"stss", full_header(0) + struct.pack(">I", len(keys)) + keys.tobytes()))
        boxes += [Box(b"stsc", stsc), Box(b"stsz", stsz), Box(b"co64", co64)]
        return Box(b"stbl", children=boxes)

    @classmethod
    def of(cls, stbl: Box) -> Samples:
        kinds = {c.kind for c in stbl.children}
        if b"ctts" in kinds:
            raise Unsupported("reordered frames (ctts)")
        p = stbl.find(b"stsz").payload
        size, n = struct.unpack_from(">II", p, 4)
        sizes = np.full(n, size, np.uint32) if size else np.frombuffer(p, ">u4", n, 12).astype(np.uint32)
        p = stbl.find(b"stts").payload
        runs = np.frombuffer(p, ">u4", 2 * struct.unpack_from(">I", p, 4)[0], 8).reshape(-1, 2)
        deltas = np.repeat(runs[:, 1], runs[:, 0]).astype(np.uint32)
        sync = np.ones(n, bool)
        if b"stss" in kinds:
            p = stbl.find(b"stss").payload
            sync[:] = False
            sync[np.frombuffer(p, ">u4", struct.unpack_from(">I", p, 4)[0], 8).astype(np.int64) - 1] = True
        if b"co64" in kinds:
            p = stbl.find(b"co64").payload
            offsets = np.frombuffer(p, ">u8", struct.unpack_from(">I", p, 4)[0], 8).tolist()
        else:
            p = stbl.find(b"stco").payload
            offsets = np.frombuffer(p, ">u4", struct.unpack_from(">I", p, 4)[0], 8).tolist()
        p = stbl.find(b"stsc").payload
        rows = np.frombuffer(p, ">u4", 3 * struct.unpack_from(">I", p, 4)[0], 8).reshape(-1, 3).tolist()
        counts = []
        for k, (first, per, _) in enumerate(rows):
            last = rows[k + 1][0] - 1 if k + 1 < len(rows) else len(offsets)
            counts += [per] * (last - first + 1)
        if len(deltas) != n or sum(counts) != n:
            raise Unsupported("inconsistent sample tables")
        return cls(sizes, deltas, sync, offsets, counts)


# -- the moov ------------------------------------------------------------------------------
_DURATION_AT = {b"mvhd": (16, 24), b"tkhd": (20, 28), b"mdhd": (16, 24)}  # version 0, version 1


def set_duration(box: Box, value: int) -> None:
    """Write a duration into an mvhd, tkhd or mdhd box (32 or 64 bits by its version)."""
    p = bytearray(box.payload)
    v1 = p[0] == 1
    at = _DURATION_AT[box.kind][v1]
    if v1:
        struct.pack_into(">Q", p, at, value)
    else:
        struct.pack_into(">I", p, at, min(value, 0xFFFFFFFF))
    box.payload = bytes(p)


def timescale_of(box: Box) -> int:
    v1 = box.payload[0] == 1
    return struct.unpack_from(">I", box.payload, 20 if v1 else 12)[0]


@dataclass
class Track:
    """The one video track of a chunk: its moov as a tree, and its samples."""

    moov: Box
    samples: Samples

    @property
    def trak(self) -> Box:
        return self.moov.find(b"trak")

    @property
    def timescale(self) -> int:
        return timescale_of(self.trak.find(b"mdia").find(b"mdhd"))

    def with_samples(self, samples: Samples) -> Track:
        """The moov for ``samples``: new sample tables and durations, no edit list."""
        moov = parse(self.moov.pack()[8:], b"moov")
        out = Track(moov, samples)
        trak = out.trak
        trak.children = [c for c in trak.children if c.kind != b"edts"]
        moov.children = [c for c in moov.children if c.kind != b"mvex"]
        minf = trak.find(b"mdia").find(b"minf")
        stsd = minf.find(b"stbl").find(b"stsd")
        minf.children = [samples.stbl(stsd) if c.kind == b"stbl" else c for c in minf.children]
        media = int(samples.deltas.astype(np.int64).sum())
        movie_scale = timescale_of(moov.find(b"mvhd"))
        movie = media * movie_scale // self.timescale
        set_duration(moov.find(b"mvhd"), movie)
        set_duration(trak.find(b"tkhd"), movie)
        set_duration(trak.find(b"mdia").find(b"mdhd"), media)
        return out
