"""Errors mean what their class says: a bad setting is a ValueError, misuse a RuntimeError,
a dead peer a BrokenPipeError, a short /dev/shm an OSError; the version is defined once."""

from __future__ import annotations

import errno
import importlib.metadata

import numpy as np
import pytest

import streamenc
from streamenc import (
    ConfigError,
    DiskFull,
    EncoderConfig,
    FrameRing,
    PeerDied,
    Recorder,
    RingError,
    ShmTooSmall,
    StateError,
    StreamencError,
)


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: Recorder(tmp, fps=0),
        lambda tmp: Recorder(tmp, fps=30.0),
        lambda tmp: Recorder(tmp, overflow="wait"),
        lambda tmp: Recorder(tmp, slots=4),
        lambda tmp: Recorder(tmp, cameras={"front cam": (480, 640)}),
        lambda tmp: Recorder(tmp, cameras={"front": (481, 640)}),
        lambda tmp: EncoderConfig(crf=99),
        lambda tmp: FrameRing.create((0, 4), "uint8"),
        lambda tmp: FrameRing.create((4, 4), "uint8", slots=0),
    ],
)
def test_every_bad_setting_is_a_config_error_and_a_value_error(tmp_path, make):
    with pytest.raises(ConfigError) as err:
        make(tmp_path)
    assert isinstance(err.value, ValueError)


def test_misuse_is_a_state_error_and_a_runtime_error(tmp_path):
    with Recorder(tmp_path, fps=30, cameras={"a": (32, 32)}, encoder=EncoderConfig(vcodec="libx264")) as rec:
        for call in (rec.end_episode, rec.seal_episode, lambda: rec.add_frame({"a": np.zeros((32, 32, 3), np.uint8)})):
            with pytest.raises(StateError) as err:
                call()
            assert isinstance(err.value, RuntimeError)
        rec.start_episode()
        with pytest.raises(RuntimeError, match="still open"):
            rec.start_episode()
        rec.cancel_episode()
    with pytest.raises(RuntimeError, match="closed"):
        rec.start_episode()
    ring = FrameRing.create((4, 4, 3), "uint8", slots=2)
    with pytest.raises(RuntimeError, match="for the consumer"):
        ring.get(timeout=0)
    ring.close()
    ring.unlink()
    with pytest.raises(RuntimeError, match="closed"):
        ring.put(np.zeros((4, 4, 3), np.uint8))


def test_os_level_errors_are_os_errors():
    assert issubclass(PeerDied, BrokenPipeError)
    short = ShmTooSmall(100 << 20, 10 << 20)
    assert isinstance(short, OSError) and short.errno == errno.ENOSPC and "docker run --shm-size" in str(short)
    full = DiskFull("/data/x.mp4", 921600)
    assert isinstance(full, OSError) and full.errno == errno.ENOSPC and str(full).startswith("disk full writing")
    with pytest.raises(RingError) as err:
        FrameRing.attach("streamenc-" + "0" * 32)
    assert isinstance(err.value, OSError) and isinstance(err.value, StreamencError)


def test_the_version_is_defined_once():
    assert streamenc.__version__ == importlib.metadata.version("streamenc")
