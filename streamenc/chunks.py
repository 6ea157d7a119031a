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
from fractions import Fraction
from pathlib import Path

import numpy as np

from .mp4 import Box, Samples, Track, Unsupported, parse  # noqa: F401  (Unsupported: raised to callers)

SLOT_BYTES = 1 << 20  # each moov slot: ~170k frames' sample tables (1.5 h at 30 fps)
FTYP = b"isom\x00\x00\x02\x00isomiso2mp41"


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
        sync(f)


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
    with open(chunk, "r+b") as f:
        f.truncate(start)  # what no moov covers: a crashed append's packets
        f.seek(start)
        for d, _, _ in packets:
            f.write(d)
        sync(f)
        _swap_index(f, state, track.with_samples(new).moov.pack())


def _swap_index(f, state: Chunk, moov: bytes) -> None:
    """Write ``moov`` into the inactive slot and make it the one readers use, in the order
    that keeps a whole moov first in the file at every instant."""
    new_slot, old_slot = SLOTS[1 - state.active], SLOTS[state.active]
    f.seek(new_slot)
    f.write(_slot_bytes(moov, disguise=True))
    sync(f)
    # Readers take the first moov in the file. Typing the new one moov first, then
    # freeing the old one, keeps a whole moov first at every instant: the old one
    # while it comes first, else the new one, whose packets are already on disk.
    f.seek(new_slot + 4)
    f.write(b"moov")
    sync(f)
    f.seek(old_slot)
    f.write(struct.pack(">I4s", SLOT_BYTES, b"free"))
    sync(f)


def trim(chunk: Path, keep_s: float) -> int:
    """Cut an appendable chunk back to its first ``keep_s`` seconds (the episodes a
    dataset has on record, after a crash); returns how many frames went. Unsupported for
    a chunk in another layout."""
    state = Chunk(chunk)
    track, samples = state.track, state.track.samples
    ends = np.cumsum(samples.deltas.astype(np.int64))
    slack = int(np.median(samples.deltas)) // 2 if len(samples.deltas) else 0  # half a frame: float seconds
    keep = int(np.searchsorted(ends, round(keep_s * track.timescale) + slack, side="right"))
    kept = samples.cut(keep)  # whole episodes only
    cut = len(samples.sizes) - len(kept.sizes)
    with open(chunk, "r+b") as f:
        if cut:
            samples = kept
            _swap_index(f, state, track.with_samples(samples).moov.pack())
        end = max(DATA_START, samples.end)
        if os.fstat(f.fileno()).st_size > end:  # packets no moov covers (a crashed append's)
            f.truncate(end)
            sync(f)
    return cut


def ordinary(path: Path) -> bool:
    """Whether an MP4 is laid out as LeRobot's own files are: no fragments, one mdat of a
    known size, no free space to speak of (a few kB: FFmpeg's own padding)."""
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        off, mdats = 0, 0
        while off + 8 <= end:
            f.seek(off)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
            if kind == b"moof" or (kind == b"mdat" and size == 0) or (kind == b"free" and size > ORDINARY_SLACK):
                return False
            if size < 8:
                return False
            mdats += kind == b"mdat"
            off += size
    return mdats == 1


ORDINARY_SLACK = 1 << 14


def finish(path: Path) -> bool:
    """Rewrite a chunk file (appendable, or one episode as the encoder wrote it: fragmented)
    as an ordinary MP4 like LeRobot's own: ftyp with FFmpeg's brands for the codec, the
    index first, one bounded mdat, nothing else. The packets are copied, not re-encoded,
    with their timestamps. Renamed over the file once synced, so a crash leaves one or the
    other whole. Returns whether anything was rewritten (False: it was ordinary)."""
    import av

    path = Path(path)
    if ordinary(path):
        return False
    tmp = path.with_name(path.name + ".finishing")
    try:
        with av.open(str(path)) as src, av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
            s = src.streams.video[0]
            out = dst.add_stream_from_template(template=s, opaque=True)
            out.time_base = s.time_base
            held, last = None, 0  # a packet lasts until the next one (fragments often say 0)
            for p in src.demux(s):
                if not p.size:
                    continue
                if held is not None:
                    held.duration = last = p.pts - held.pts
                    dst.mux(held)
                p.stream = out
                held = p
            if held is not None:
                held.duration = held.duration or last
                dst.mux(held)
        with open(tmp, "rb+") as f:
            sync(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def finish_all(directory: Path) -> list[Path]:
    """``finish`` every MP4 under ``directory`` that is not ordinary; the ones rewritten."""
    return [p for p in sorted(Path(directory).rglob("*.mp4")) if finish(p)]


def sync(f) -> None:
    """Make what was written to ``f`` durable: every step of an append ends here (and a
    kill test stops an append here, at each step in turn)."""
    f.flush()
    os.fsync(f.fileno())


def frames(path: Path) -> int:
    """The chunk's frame count, from its index."""
    return len(Chunk(path).track.samples.sizes)
