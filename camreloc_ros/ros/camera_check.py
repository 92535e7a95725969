# Copyright 2026 camreloc_ros authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""The live camera against the training camera: ``camera_info`` in, a warning or a refusal out.

The node subscribes to ``camera_info`` (a relative name, next to ``image``; remap it like
the image topic) and compares each new calibration with the camera recorded in the model
(:mod:`camreloc_ros.core.robot.camera`). A difference beyond the tolerances is logged once per
kind of difference and counted in diagnostics; with ``camera_check.refuse`` the images are
not localized while it lasts (each refused image is counted).

It also keeps the live calibration (:meth:`CameraCheck.intrinsics`) for the PnP refiner:
the network can only be warned about another lens, but geometry can use it, so a refinement
is computed with the camera's own K instead of the map's (a 2x lens refined with the map's
K is a metre off with a centimetre covariance).
"""

import math
import threading
from typing import Any, Callable

from camreloc_ros.core.data.datasets import Intrinsics
from camreloc_ros.core.robot.camera import camera_mismatch, describe_camera, training_camera


class CameraCheck:
    """Compare CameraInfo messages with the model's training camera; thread-safe counters."""

    def __init__(self, extra: dict | None, fov_tolerance_deg: float, aspect_tolerance: float,
                 refuse: bool, warn: Callable[[str], Any]):
        self.training = training_camera(extra)
        self.fov_tolerance_deg = float(fov_tolerance_deg)
        self.aspect_tolerance = float(aspect_tolerance)
        self.refuse = bool(refuse)
        self._warn = warn
        self._lock = threading.Lock()
        self._last_key: tuple | None = None
        self._warned: set[str] = set()
        self.live: dict | None = None
        self._intrinsics: Intrinsics | None = None   # the live calibration, when complete
        self.problems: list[str] = []
        self.infos = 0         # CameraInfo messages received
        self.mismatches = 0    # of them, those differing beyond the tolerances
        self.refused = 0       # images not localized because of a mismatch (refuse: true)

    @property
    def refusing(self) -> bool:
        """Whether images must be refused now (a mismatch and ``refuse``)."""
        return self.refuse and bool(self.problems)

    def on_camera_info(self, msg: Any) -> None:
        """Check one ``sensor_msgs/CameraInfo`` (recomputed only when the calibration changes)."""
        width, height = int(msg.width), int(msg.height)
        fx, fy, cx, cy = (float(msg.k[i]) for i in (0, 4, 2, 5))
        key = (width, height, fx, fy, cx, cy)
        with self._lock:
            self.infos += 1
            if key != self._last_key:
                self._last_key = key
                calibrated = width > 0 and height > 0 and fx > 0 and fy > 0 and all(
                    math.isfinite(v) for v in (fx, fy, cx, cy))
                self._intrinsics = (Intrinsics(width, height, fx, fy, cx, cy) if calibrated
                                    else None)
                if width <= 0 or height <= 0:
                    self.live, self.problems = None, []
                else:
                    self.live = {'width': width, 'height': height}
                    if fx > 0 and fy > 0:
                        self.live.update(fx=fx, fy=fy)
                    self.problems = [] if self.training is None else camera_mismatch(
                        self.training, self.live, self.fov_tolerance_deg,
                        self.aspect_tolerance)
            problems = list(self.problems)
            if problems:
                self.mismatches += 1
            text = '; '.join(problems)
            first = bool(problems) and text not in self._warned
            if first:
                self._warned.add(text)
        if first:
            self._warn(
                f'the camera differs from the one the model was trained with: {text}. '
                f'Live {describe_camera(self.live)}, training {describe_camera(self.training)}. '
                + ('Images are refused (camera_check.refuse).' if self.refuse else
                   'Poses may be wrong; set camera_check.refuse to refuse such images.'))

    def intrinsics(self) -> Intrinsics | None:
        """Return the newest calibration (size, fx, fy, cx, cy), or None.

        None until a CameraInfo with a size and finite positive focal lengths arrives (an
        all-zero K is an uncalibrated camera): the refiner then uses the map's camera.
        """
        with self._lock:
            return self._intrinsics

    def count_refused(self) -> None:
        """Count one image refused because of the mismatch."""
        with self._lock:
            self.refused += 1

    def status(self) -> str:
        """One word or phrase for diagnostics."""
        if self.training is None:
            return 'off: the model records no training camera'
        if self.live is None:
            return 'waiting for camera_info'
        if self.problems:
            return ('refusing: ' if self.refuse else 'mismatch: ') + '; '.join(self.problems)
        return 'ok'

    def values(self) -> dict:
        """Diagnostics key/values."""
        with self._lock:
            return {'camera_check': self.status(),
                    'training_camera': describe_camera(self.training) if self.training
                    else 'unknown',
                    'camera_info_received': self.infos,
                    'camera_mismatches': self.mismatches,
                    'camera_refused_images': self.refused}
