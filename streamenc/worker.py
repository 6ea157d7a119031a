"""Inside an encoder process: one camera's frames, from its ring and spill, into video.

One process per camera, started once and kept across episodes, so PyAV and the encoder
initialise once. A ``Server`` answers the recorder's commands (protocol.py), one handler
per state (idle between episodes, recording one), and drains the camera's frames, merged
from the ring and the spill file in order (``Input``), into the open episode's
``EpisodeWriter`` (episode.py). A command that does not fit the state is answered with a
``Failed("protocol")``, which the recorder raises to the user.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from . import liveness, sched, segments, spill
from .codecs import EncoderConfig, quiet_svt
from .episode import EpisodeWriter, describe
from .errors import PeerDied, RingTimeout
from .protocol import Cancel, EncoderCounter, EncoderSpec, End, Failed, Ready, Start, Started, Stop, Stopped
from .ring import FrameRing
from .spill import SpillReader

GET_WAIT_S = 0.01  # how long an idle encoder waits in the ring before it looks at its pipe again
SCHED_CHECK_S = 1.0  # how often the encoder checks its threads' scheduling besides after each codec open


class Input:
    """The camera's frames in order, merged from the ring and the spill by (episode, index)."""

    def __init__(self, ring: FrameRing, spill: SpillReader) -> None:
        self.ring, self.spill = ring, spill
        self.pending = None  # a slot taken from the ring, not used yet
        self.producer_gone = False

    def waiting(self) -> int:
        """Frames put for this encoder that it has not taken yet (ring and spill)."""
        return self.ring.available + self.spill.available() + (self.pending is not None)

    def _take_from_ring(self, wait: float) -> None:
        if self.pending is None and not self.producer_gone:
            try:
                self.pending = self.ring.get(timeout=wait)
            except RingTimeout:
                pass
            except PeerDied:
                self.producer_gone = True

    def next(self, wait: float):
        """(episode, frame index, array, release) or None if nothing came within ``wait``.

        The recorder spills a frame only once its ring is full, so every ring frame before
        a spill record was committed before that record appeared. A record seen first is
        safe to merge against the ring as it is; one that appears after the ring's wait ran
        out (a stopped or starved encoder, or frames that came just then) is looked at
        again against the ring, which holds the frames put before it by now."""
        spill_next = self.spill.peek()
        self._take_from_ring(0 if spill_next else wait)
        if spill_next is None:
            spill_next = self.spill.peek()
            if spill_next is not None:
                self._take_from_ring(0)
        slot = self.pending
        if slot is not None and (spill_next is None or (slot.episode, slot.frame_index) < spill_next):
            self.pending = None
            return slot.episode, slot.frame_index, slot.array, slot.release
        if spill_next is not None:
            j, episode, index, _, array = self.spill.read()
            return episode, index, array, lambda: self.spill.done(j)
        if self.producer_gone:
            raise EOFError
        return None


class ScheduleWatch:
    """Checks the encoder's threads after each codec open and every second: real-time ones
    are put back (and counted: it means a codec got round give_up_realtime) to the class
    the process has now (the recorder may have changed it: ``sched="auto"``), and that
    class and the CPU the process got are published in the ring header for health()."""

    def __init__(self, ring: FrameRing, cfg: EncoderConfig) -> None:
        self.ring, self.cfg, self.repaired = ring, cfg, 0
        self._cpu = (time.monotonic(), time.process_time())
        self.check()

    def check(self) -> None:
        policy = sched.NAMES.get(os.sched_getscheduler(0), self.cfg.sched)
        if policy not in sched.POLICIES:  # this thread real-time: put it back too
            policy = "idle" if self.cfg.sched == "auto" else self.cfg.sched
        found = sched.enforce(policy, os.getpriority(os.PRIO_PROCESS, 0))
        if found:
            self.repaired += found
            print(f"streamenc: encoder put {found} real-time thread(s) back to {policy}", file=sys.stderr)
            self.ring.consumer_counters[EncoderCounter.RT_REPAIRED] = self.repaired
        counters = self.ring.consumer_counters
        counters[EncoderCounter.SCHED] = sched.pack(sched.observe())
        now, cpu = time.monotonic(), time.process_time()
        if now > self._cpu[0]:
            counters[EncoderCounter.CPU_MILLI] = int(1000 * (cpu - self._cpu[1]) / (now - self._cpu[0]))
        self._cpu = (now, cpu)
        self.last = now

    def maybe_check(self) -> None:
        if time.monotonic() - self.last >= SCHED_CHECK_S:
            self.check()


class Server:
    """The encoder process's loop: ``idle`` between episodes, ``recording`` during one.
    Each handler does one step and says whether the process goes on."""

    def __init__(self, spec: EncoderSpec, conn: Connection) -> None:
        self.spec, self.conn = spec, conn
        self.ring = FrameRing.attach(spec.ring)
        self.in_use = spill.hold(Path(spec.spill).parent)  # kept till the process ends: see spill.in_use
        self.spill = SpillReader(Path(spec.spill), self.ring)
        self.frames = Input(self.ring, self.spill)
        self.watch = ScheduleWatch(self.ring, spec.config)
        self.episode: EpisodeWriter | None = None
        self.stopping = False  # Stop came mid-episode: finish what the ring and spill hold, then exit

    def run(self) -> None:
        self.conn.send(Ready(os.getpid()))
        try:
            while self.idle() if self.episode is None else self.recording():
                pass
        finally:
            if self.episode is not None:
                with contextlib.suppress(Exception):
                    self.episode.close()
            self.spill.close()
            self.ring.close()
            _unlink_if_orphaned(self.spec.ring)

    # -- the states ---------------------------------------------------------------------
    def idle(self) -> bool:
        """No episode open: wait for the next command."""
        try:
            msg = self.conn.recv()
        except EOFError:
            return False  # the recorder is gone and no episode is open
        if isinstance(msg, Start):
            self.start(msg)
        elif isinstance(msg, Stop):
            self.conn.send(Stopped())
            return False
        else:
            self.conn.send(Failed("protocol", f"got {type(msg).__name__} with no episode open"))
        return True

    def recording(self) -> bool:
        """An episode open: take a command if one came, answer once the episode is whole,
        else encode the next frame."""
        ep = self.episode
        assert ep is not None
        self.command(ep)
        drained = not self.frames.waiting()
        if ep.complete or (self.stopping and ep.last is None and drained):
            self.conn.send(ep.close())
            self.episode = None
            return not self.stopping
        self.watch.maybe_check()
        try:
            item = self.frames.next(GET_WAIT_S)
        except EOFError:  # the recorder is gone and everything it put is drained: save the episode
            reply, self.episode = ep.close(), None
            with contextlib.suppress(OSError):
                self.conn.send(reply)
            self.spill.close()
            Path(self.spec.spill).unlink(missing_ok=True)  # nobody will write it again
            return False
        if item is not None:
            self.feed(ep, *item)
        return True

    # -- what the states do ---------------------------------------------------------------
    def start(self, msg: Start) -> None:
        try:
            self.episode = EpisodeWriter(
                self.spec,
                msg.episode,
                Path(msg.path),
                self.ring.shape,
                self.ring.slots - 2,
                on_open=self.watch.check,
                resume=msg.resume,
            )
            self.conn.send(Started(msg.episode, self.episode.start))
        except Exception as e:
            self.conn.send(Failed("encoder", f"could not start episode {msg.episode}: {describe(e)}"))

    def command(self, ep: EpisodeWriter) -> None:
        if not self.conn.poll():
            return
        try:
            msg = self.conn.recv()
        except EOFError:
            msg = End(None)  # the recorder died: finish with what is in the ring and the spill
        if isinstance(msg, End):
            ep.end(msg.last)
        elif isinstance(msg, Cancel):
            ep.cancel(msg.last)
        elif isinstance(msg, Stop):
            self.stopping = True
        else:  # the episode goes on; the recorder raises this at its next frame
            text = f"got {type(msg).__name__} while episode {ep.index} is open"
            self.conn.send(Failed("protocol", text, final=False))

    def feed(self, ep: EpisodeWriter, episode: int, index: int, array, release) -> None:
        if episode != ep.index:
            release()  # a frame of a cancelled or earlier episode
            return
        ep.take(index, array, release)
        self.ring.consumer_counters.add(EncoderCounter.ENCODED)
        news = ep.news()
        if news is not None:  # tell the recorder now, not at the end
            self.conn.send(news)


def _unlink_if_orphaned(ring: str) -> None:
    """A recorder killed outright (kill -9, OOM) cannot unlink its ring; its encoder, the
    ring's last user, does, so that a crash leaves nothing in /dev/shm."""
    found = segments.owner(ring)
    if found is not None and not liveness.alive(*found):
        segments.unlink(ring)


def serve(spec: EncoderSpec, conn: Connection) -> None:
    """The encoder process's main loop, once its scheduling is set up and no codec can go real-time."""
    cfg = spec.config
    if len(sched.threads()) > 1:  # a thread started at import would keep the right given up below
        print(f"streamenc: encoder has {len(sched.threads())} threads before giving up real-time", file=sys.stderr)
    sched.apply(sched.starting_policy(cfg.sched), cfg.nice, cfg.cpus)  # the only thread: later ones inherit it
    sched.give_up_realtime()  # before any codec opens: SVT-AV1's request for SCHED_FIFO 99 then fails
    quiet_svt()
    Server(spec, conn).run()


def main(argv: list[str]) -> int:
    """Entry point of the encoder process; argv is the socket's file descriptor."""
    conn = Connection(int(argv[0]))
    try:
        spec = conn.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        return 1
    try:
        serve(spec, conn)
    except (BrokenPipeError, ConnectionResetError):
        return 1  # the recorder died (kill -9): no one to tell; the episode so far is closed on disk
    except Exception as e:
        with contextlib.suppress(OSError):
            conn.send(Failed("crash", f"the encoder process failed: {describe(e)}"))
        raise
    return 0
