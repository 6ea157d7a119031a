"""Chunk files that grow by appending episodes: nothing written before is rewritten.

LeRobot keeps many episodes per camera in one MP4 "chunk" file and, at every
save_episode, remuxes the whole chunk plus the new episode into a new faststart file:
each save costs the chunk's size, a session the square of it. ``append`` instead writes
only the new episode's packets, at the end, and a new index (moov) for the whole file.

An appendable chunk is an ordinary MP4 that every reader reads as before (complete sample
tables, so opening and seeking cost what they cost in a faststart file)::

    ftyp | slot A | slot B | mdat (size 0: to the end of the file) | packets ...

Each slot is ``SLOT_BYTES`` long (a sparse hole on disk until used) and holds either a
``free`` box, or the moov followed by a ``free`` box. An append:

1. drops what the active moov does not cover (a crashed append's packets), and packets
   beyond ``keep_s`` (an episode written before a crash that the dataset never recorded);
2. writes the episode's packets at the end and syncs them;
3. writes the new moov into the inactive slot, disguised as a ``free`` box, and syncs;
4. turns the new slot into ``moov`` and the old one into ``free``, in the order that keeps
   the *first* moov in the file (the one readers use) valid at every instant.

So a kill -9 at any point leaves the file readable with every earlier episode intact, and
the next append goes on from it. A chunk in another layout (LeRobot's own, or a first
episode just moved into place) is converted once, into a new file renamed over it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

SLOT_BYTES = 1 << 20  # each moov slot: ~170k frames' sample tables (1.5 h at 30 fps)
FTYP = b"isom\x00\x00\x02\x00isomiso2mp41"


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


def _full(version: int, flags: int = 0) -> bytes:
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
        stts = _full(0) + struct.pack(">I", len(runs)) + runs.tobytes()
        stsc_rows, prev = [], None
        for i, c in enumerate(self.chunk_counts):
            if c != prev:
                stsc_rows.append(struct.pack(">III", i + 1, c, 1))
                prev = c
        stsc = _full(0) + struct.pack(">I", len(stsc_rows)) + b"".join(stsc_rows)
        stsz = _full(0) + struct.pack(">II", 0, n) + self.sizes.astype(">u4").tobytes()
        co64 = _full(0) + struct.pack(">I", len(self.chunk_offsets)) + np.array(self.chunk_offsets, ">u8").tobytes()
        boxes = [stsd, Box(b"stts", stts)]
        if not self.sync.all():
            keys = (np.flatnonzero(self.sync) + 1).astype(">u4")
            boxes.append(Box(b"stss", _full(0) + struct.pack(">I", len(keys)) + keys.tobytes()))
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


def _set_duration(box: Box, value: int) -> None:
    """Write a duration into an mvhd, tkhd or mdhd box (32 or 64 bits by its version)."""
    p = bytearray(box.payload)
    v1 = p[0] == 1
    at = _DURATION_AT[box.kind][v1]
    if v1:
        struct.pack_into(">Q", p, at, value)
    else:
        struct.pack_into(">I", p, at, min(value, 0xFFFFFFFF))
    box.payload = bytes(p)


def _timescale(box: Box) -> int:
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
        return _timescale(self.trak.find(b"mdia").find(b"mdhd"))

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
        movie_scale = _timescale(moov.find(b"mvhd"))
        movie = media * movie_scale // self.timescale
        _set_duration(moov.find(b"mvhd"), movie)
        _set_duration(trak.find(b"tkhd"), movie)
        _set_duration(trak.find(b"mdia").find(b"mdhd"), media)
        return out


def _packets(path: Path, first_only: bool = False) -> tuple[list[tuple[bytes, int, bool]], Fraction, bytes | None]:
    """(data, duration in the time base, keyframe) per packet of an MP4's one video stream,
    read through FFmpeg; the time base; the codec's extradata (its parameter sets)."""
    import av

    with av.open(str(path)) as c:
        if len(c.streams) != 1 or not c.streams.video:
            raise Unsupported(f"{path.name}: one video stream expected")
        s = c.streams.video[0]
        got = []
        for p in c.demux(s):
            if not p.size:
                continue
            if p.pts is None or p.pts != p.dts:
                raise Unsupported(f"{path.name}: packets without a timestamp, or reordered")
            if first_only:
                return [], s.time_base, s.codec_context.extradata
            got.append((bytes(p), int(p.pts), int(p.duration or 0), bool(p.is_keyframe)))
        # a packet lasts until the next one (fragmented files often say 0); the last one
        # as long as it says, or as the one before it
        out = []
        for k, (data, pts, duration, key) in enumerate(got):
            if k + 1 < len(got):
                duration = got[k + 1][1] - pts
            elif not duration and out:
                duration = out[-1][1]
            if duration <= 0:
                raise Unsupported(f"{path.name}: a packet of no duration")
            out.append((data, duration, key))
        return out, s.time_base, s.codec_context.extradata


def _template(path: Path) -> Box:
    """A complete (non-fragmented) moov for the stream of ``path``, made by FFmpeg itself
    from its first packet: the sample tables are ours to replace."""
    import tempfile

    import av

    with tempfile.TemporaryDirectory() as d, av.open(str(path)) as src:
        tmp = Path(d) / "t.mp4"
        with av.open(str(tmp), "w", format="mp4") as dst:
            s = src.streams.video[0]
            o = dst.add_stream_from_template(template=s, opaque=True)
            o.time_base = s.time_base
            for p in src.demux(s):
                if p.size:
                    p.stream = o
                    dst.mux(p)
                    break
        data = tmp.read_bytes()
    root = parse(data)
    return next(c for c in root.children if c.kind == b"moov")


# -- the chunk file ------------------------------------------------------------------------
FTYP_BOX = struct.pack(">I4s", 8 + len(FTYP), b"ftyp") + FTYP
SLOTS = (len(FTYP_BOX), len(FTYP_BOX) + SLOT_BYTES)  # where slot A and slot B begin
DATA_START = len(FTYP_BOX) + 2 * SLOT_BYTES + 8  # after the mdat header


class Chunk:
    """An appendable chunk file: which slot holds the moov readers use, and its track."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            if f.read(len(FTYP_BOX)) != FTYP_BOX:
                raise Unsupported("not an appendable chunk")
            f.seek(DATA_START - 8)
            if f.read(8) != struct.pack(">I4s", 0, b"mdat"):
                raise Unsupported("not an appendable chunk")
            self.active = None
            for k, off in enumerate(SLOTS):  # the first moov in the file is the one readers use
                f.seek(off)
                size, kind = struct.unpack(">I4s", f.read(8))
                if kind == b"moov":
                    self.active = k
                    moov = parse(f.read(size - 8), b"moov")
                    break
            if self.active is None:
                raise Unsupported("no moov")
        stbl = moov.find(b"trak").find(b"mdia").find(b"minf").find(b"stbl")
        self.track = Track(moov, Samples.of(stbl))


def _slot_bytes(moov: bytes | None, disguise: bool = False) -> bytes:
    """A slot's content: the moov (typed ``free`` while it is being written) and a free box
    over the rest; or, for ``None``, only a free box's header (the rest stays a hole)."""
    if moov is None:
        return struct.pack(">I4s", SLOT_BYTES, b"free")
    if len(moov) + 8 > SLOT_BYTES:
        raise Unsupported(f"the moov ({len(moov)} bytes) outgrew its slot ({SLOT_BYTES})")
    head = moov[:4] + (b"free" if disguise else b"moov") + moov[8:]
    return head + struct.pack(">I4s", SLOT_BYTES - len(moov), b"free")


def convert(chunk: Path, out: Path) -> None:
    """Write ``chunk`` (any single-video MP4) to ``out`` in the appendable layout."""
    packets, tb, _ = _packets(chunk)
    empty = Samples(np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, bool), [], [])
    track = Track(_template(chunk), empty)
    _check_time_base(track, tb)
    with open(out, "wb") as f:
        f.write(FTYP_BOX)
        f.seek(DATA_START - 8)
        f.write(struct.pack(">I4s", 0, b"mdat"))
        for d, _, _ in packets:
            f.write(d)
        samples = empty.plus(DATA_START, *zip(*[(len(d), t, k) for d, t, k in packets], strict=True))
        f.seek(SLOTS[0])
        f.write(_slot_bytes(track.with_samples(samples).moov.pack()))
        f.seek(SLOTS[1])
        f.write(_slot_bytes(None))  # the rest of the slots stays a hole until used
        _sync(f)


def _check_time_base(track: Track, tb: Fraction) -> None:
    if Fraction(1, track.timescale) != tb:
        raise Unsupported(f"time base {tb} differs from the chunk's 1/{track.timescale}")


def append(chunk: Path, episode: Path, keep_s: float | None = None) -> None:
    """Append ``episode``'s packets to ``chunk`` in place (converting ``chunk`` to the
    appendable layout first if it is not in it). ``keep_s``: the chunk's length the caller
    has on record; whole episodes beyond it (one a crash kept from being recorded) go."""
    chunk, episode = Path(chunk), Path(episode)
    packets, tb, extradata = _packets(episode)
    if not packets:
        raise Unsupported(f"{episode.name} has no packets")
    if _packets(chunk, first_only=True)[2] != extradata:
        raise Unsupported("codec parameters differ")
    try:
        state = Chunk(chunk)
    except Unsupported:
        tmp = chunk.with_name(chunk.name + ".appendable")
        try:
            convert(chunk, tmp)
            os.replace(tmp, chunk)
        finally:
            tmp.unlink(missing_ok=True)
        state = Chunk(chunk)
    track, samples = state.track, state.track.samples
    _check_time_base(track, tb)
    if keep_s is not None:
        ends = np.cumsum(samples.deltas.astype(np.int64))
        samples = samples.cut(int(np.searchsorted(ends, round(keep_s * track.timescale), side="right")))
    start = max(DATA_START, samples.end)
    new = samples.plus(start, *zip(*[(len(d), t, k) for d, t, k in packets], strict=True))
    moov = track.with_samples(new).moov.pack()
    new_slot, old_slot = SLOTS[1 - state.active], SLOTS[state.active]
    with open(chunk, "r+b") as f:
        f.truncate(start)  # what no moov covers: a crashed append's packets
        f.seek(start)
        for d, _, _ in packets:
            f.write(d)
        _sync(f)
        f.seek(new_slot)
        f.write(_slot_bytes(moov, disguise=True))
        _sync(f)
        # Readers take the first moov in the file. Typing the new one moov first, then
        # freeing the old one, keeps a whole moov first at every instant: the old one
        # while it comes first, else the new one, whose packets are already on disk.
        f.seek(new_slot + 4)
        f.write(b"moov")
        _sync(f)
        f.seek(old_slot)
        f.write(struct.pack(">I4s", SLOT_BYTES, b"free"))
        _sync(f)


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def frames(path: Path) -> int:
    """The chunk's frame count, from its index."""
    return len(Chunk(path).track.samples.sizes)
