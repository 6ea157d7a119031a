"""A hypothesis state machine drives put, reserve, get and release against a model queue."""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamenc import FrameRing, RingTimeout

SHAPE = (2, 3)
SLOTS = 3


def _frame(v: int) -> np.ndarray:
    return np.full(SHAPE, v % 256, np.uint8)


class RingModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ring = FrameRing.create(SHAPE, "uint8", slots=SLOTS)
        self.peer = FrameRing.attach(self.ring.name)
        self.waiting: list[tuple[int, int]] = []  # (seq, value) committed, not yet got
        self.held: dict[int, tuple[object, int]] = {}  # seq -> (slot, value)
        self.released: set[int] = set()
        self.head = 0
        self.tail = 0

    def _occupied(self) -> int:
        return self.head - self.tail

    def _commit(self, value: int) -> None:
        self.waiting.append((self.head, value))
        self.head += 1

    @rule(value=st.integers(0, 255))
    def put(self, value):
        if self._occupied() == SLOTS:
            try:
                self.ring.put(_frame(value), timeout=0)
            except RingTimeout:
                return
            raise AssertionError("put into a full ring succeeded")
        assert self.ring.put(_frame(value), timeout=0, frame_index=value) == self.head
        self._commit(value)

    @rule(value=st.integers(0, 255), fail=st.booleans())
    def reserve(self, value, fail):
        if self._occupied() == SLOTS:
            try:
                with self.ring.reserve(timeout=0):
                    pass
            except RingTimeout:
                return
            raise AssertionError("reserve in a full ring succeeded")
        try:
            with self.ring.reserve(timeout=0, frame_index=value) as buf:
                buf[...] = value
                if fail:
                    raise ZeroDivisionError
        except ZeroDivisionError:
            return
        self._commit(value)

    @rule()
    def get(self):
        if not self.waiting:
            try:
                self.peer.get(timeout=0)
            except RingTimeout:
                return
            raise AssertionError("get from an empty ring succeeded")
        seq, value = self.waiting.pop(0)
        slot = self.peer.get(timeout=0)
        assert slot.seq == seq and slot.frame_index == value
        assert np.array_equal(slot.array, _frame(value))
        self.held[seq] = (slot, value)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data):
        seq = data.draw(st.sampled_from(sorted(self.held)))
        slot, _ = self.held.pop(seq)
        slot.release()
        self.released.add(seq)
        while self.tail in self.released:
            self.released.discard(self.tail)
            self.tail += 1

    @invariant()
    def matches_model(self):
        assert self.ring.head == self.head
        assert self.ring.tail == self.tail
        assert self.ring.queued == self._occupied()
        for slot, value in self.held.values():  # held views never change under us
            assert np.array_equal(slot.array, _frame(value))

    def teardown(self):
        self.peer.close()
        self.ring.close()
        self.ring.unlink()


RingModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestRingModel = RingModel.TestCase
