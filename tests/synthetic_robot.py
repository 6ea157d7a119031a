"""A LeRobot robot and teleoperator with no hardware, for running the real
lerobot-record loop in tests: two cameras of stamped synthetic frames (index = a
counter across the whole run) and one joint that follows the teleoperator."""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.robots.config import RobotConfig
from lerobot.robots.robot import Robot
from lerobot.teleoperators.config import TeleoperatorConfig
from lerobot.teleoperators.teleoperator import Teleoperator

from streamenc.synthetic import SyntheticCamera

CAMERAS = ("front", "wrist")


@RobotConfig.register_subclass("streamenc_synth")
@dataclass(kw_only=True)
class SynthRobotConfig(RobotConfig):
    height: int = 240
    width: int = 320


class SynthRobot(Robot):
    config_class = SynthRobotConfig
    name = "streamenc_synth"

    def __init__(self, config: SynthRobotConfig) -> None:
        super().__init__(config)
        self.h, self.w = config.height, config.width
        self.cams = {c: SyntheticCamera(self.h, self.w, seed=i + 1) for i, c in enumerate(CAMERAS)}
        self.cameras = dict.fromkeys(CAMERAS)  # lerobot-record counts these for its image writer
        self.count = 0
        self.pos = 0.0
        self._connected = False

    @property
    def observation_features(self) -> dict:
        return {"joint.pos": float, **{c: (self.h, self.w, 3) for c in CAMERAS}}

    @property
    def action_features(self) -> dict:
        return {"joint.pos": float}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        self._connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict:
        obs = {"joint.pos": self.pos, **{c: cam.frame(self.count) for c, cam in self.cams.items()}}
        self.count += 1
        return obs

    def send_action(self, action: dict) -> dict:
        self.pos = float(action["joint.pos"])
        return action

    def disconnect(self) -> None:
        self._connected = False


@TeleoperatorConfig.register_subclass("streamenc_synth_teleop")
@dataclass(kw_only=True)
class SynthTeleopConfig(TeleoperatorConfig):
    pass


class SynthTeleop(Teleoperator):
    config_class = SynthTeleopConfig
    name = "streamenc_synth_teleop"

    def __init__(self, config: SynthTeleopConfig) -> None:
        super().__init__(config)
        self.t = 0
        self._connected = False

    @property
    def action_features(self) -> dict:
        return {"joint.pos": float}

    @property
    def feedback_features(self) -> dict:
        return {}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        self._connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_action(self) -> dict:
        self.t += 1
        return {"joint.pos": float(self.t % 100)}

    def send_feedback(self, feedback: dict) -> None:
        pass

    def disconnect(self) -> None:
        self._connected = False
