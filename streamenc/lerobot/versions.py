"""The version gate: which lerobot release lines this adapter knows.

The seams (``seams.py``) find LeRobot's hook by attribute, not by version, but a release
line nobody has looked at may have moved it, or changed what it means; so an unknown line
is refused with one message naming the known ones, unless the user asks to try.
"""

from __future__ import annotations

import importlib.metadata
import os

from ..errors import ConfigError

SUPPORTED = ("0.4.", "0.5.", "0.6.")  # release lines whose hooks this adapter knows
TESTED = "0.4.4 and 0.6.1"
UNTESTED_ENV = "STREAMENC_LEROBOT_UNTESTED"  # set to 1 to try a lerobot outside SUPPORTED


def check_version() -> str:
    """The installed lerobot version; ConfigError when this adapter does not know its line."""
    try:
        version = importlib.metadata.version("lerobot")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("lerobot is not installed; streamenc.lerobot supports lerobot 0.4.x to 0.6.x") from None
    if not version.startswith(SUPPORTED) and not os.environ.get(UNTESTED_ENV):
        raise ConfigError(
            f"lerobot {version} is not supported: streamenc.lerobot supports lerobot 0.4.x, 0.5.x and 0.6.x "
            f"(tested: {TESTED}). Install one of those, record with streamenc.Recorder directly, or set "
            f"{UNTESTED_ENV}=1 to try anyway."
        )
    return version
