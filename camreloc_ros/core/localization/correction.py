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

"""Carry the last PnP refinement forward onto later network poses (live, ROS-free).

The refiner (:mod:`camreloc_ros.core.localization.refiner`) is much slower than the pose network,
so live it finishes every few frames. Between refinements the network's error is mostly a slowly
varying bias; its *relative* motion over a short time is far better than its absolute pose.
:class:`PoseCorrector` keeps the last refinement ``T_ref`` (camera-to-world) with the
network's pose ``T_net_ref`` of that same frame, and corrects a later network pose by the
network's motion since then::

    T_corrected = T_ref @ inv(T_net_ref) @ T_net_now

A pure network drift (``T_net = D @ T_true`` with the same ``D`` at both frames) is then
removed exactly. Covariance (same convention as the network's: position, then rotation about
the world axes, first order):

* the refinement's covariance carried through the composition: a rotation error ``dtheta``
  of ``T_ref`` moves the corrected position by ``-[d]x dtheta``, ``d`` the world
  displacement from the refined to the corrected camera centre, so
  ``Sigma = J Sigma_ref J^T`` with ``J = [[I, -[d]x], [0, I]]``;
* plus an isotropic motion term for the error of the network's relative motion:
  position std ``motion_noise * |d|`` (m) and rotation std ``motion_noise * angle`` (rad),
  ``angle`` the network's relative rotation.

A correction expires ``max_age`` seconds (image stamps) after the refined frame, and never
applies to a frame stamped before it: then the network's pose passes unchanged.

Time can go backwards (a bag replayed from an earlier stamp, a simulator restarted). The
newest refinement wins, so a reference from "the future" would refuse every later one and
nothing would be corrected again until ``~/reset``. :meth:`PoseCorrector.observe` sees every
network frame's stamp first and, as ROS' time-jump handling clears TF buffers, forgets the
refinement when the stamp goes back; a refinement of a frame stamped after the newest frame
seen (one started before the jump) is then refused.

The motion since the refined frame can come from odometry instead of the network: with the
camera's pose in the odometry frame at both stamps (``A_ref``, ``A_now``, e.g. TF
``odom -> camera``), ``T_corrected = T_ref @ inv(A_ref) @ A_now``: the same composition, so
the odometry frame's unknown offset to the map cancels, and wheel / visual-inertial odometry
is usually far better over a few seconds than the network's relative pose (its own noise
term, ``odom_noise``). ``motion``: ``auto`` uses odometry where both poses are known, else the
network; ``odom`` only odometry (no correction without it); ``network`` only the network.
"""

from __future__ import annotations

from dataclasses import dataclass
import threading

import numpy as np

from camreloc_ros.core.geometry import (matrix_from_pose, orientation_error_rad,
                                        pose_from_matrix, shift_covariance)


def compose_correction(ref_position: np.ndarray, ref_quaternion: np.ndarray,
                       ref_covariance: np.ndarray, net_ref_position: np.ndarray,
                       net_ref_quaternion: np.ndarray, net_position: np.ndarray,
                       net_quaternion: np.ndarray, motion_noise: float = 0.1
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``T_ref @ inv(T_net_ref) @ T_net`` -> (position, quaternion x y z w, 6x6 covariance).

    ``T_net_ref`` and ``T_net`` may be any motion source's camera poses (network, odometry).
    """
    T_ref = matrix_from_pose(ref_position, ref_quaternion)
    T_net_ref = matrix_from_pose(net_ref_position, net_ref_quaternion)
    T_net = matrix_from_pose(net_position, net_quaternion)
    T = T_ref @ np.linalg.inv(T_net_ref) @ T_net
    position, quaternion = pose_from_matrix(T)
    d = position - np.asarray(ref_position, np.float64)
    cov = shift_covariance(ref_covariance, d)   # the reference point moved by d
    angle = float(orientation_error_rad(net_quaternion, net_ref_quaternion))
    cov[:3, :3] += np.eye(3) * (motion_noise * float(np.linalg.norm(d))) ** 2
    cov[3:, 3:] += np.eye(3) * (motion_noise * angle) ** 2
    return position, quaternion, 0.5 * (cov + cov.T)


MOTION_SOURCES = ('auto', 'odom', 'network')


@dataclass
class Correction:
    """A corrected pose; ``age`` seconds after the refined frame, motion from ``source``."""

    position: np.ndarray
    quaternion: np.ndarray
    covariance: np.ndarray
    age: float
    source: str = 'network'     # what measured the motion since the refinement: or 'odom'


class PoseCorrector:
    """The last refinement and the network's pose of its frame; corrects later network poses.

    Thread-safe: the refiner's worker calls :meth:`update`, the network's worker
    :meth:`correct`.
    """

    def __init__(self, max_age: float = 10.0, motion_noise: float = 0.1,
                 odom_noise: float = 0.02, motion: str = 'auto'):
        if motion not in MOTION_SOURCES:
            raise ValueError(f'motion must be one of {", ".join(MOTION_SOURCES)}, got '
                             f'{motion!r}')
        self.max_age = float(max_age)
        self.motion_noise = float(motion_noise)
        self.odom_noise = float(odom_noise)
        self.motion = motion
        self._lock = threading.Lock()
        self._ref: tuple | None = None
        self._newest: float | None = None   # newest network frame stamp observed

    def reset(self) -> None:
        """Forget the refinement (``~/reset``, a kidnapped robot)."""
        with self._lock:
            self._ref = None

    def observe(self, stamp: float) -> float | None:
        """Note a network frame stamped ``stamp``; on a jump back, reset and return its size.

        Called for each frame before it is refined or corrected. Returns the seconds time went
        back (then the refinement is forgotten), or None when time did not go back.
        """
        stamp = float(stamp)
        with self._lock:
            newest, self._newest = self._newest, stamp
            if newest is None or stamp >= newest:
                return None
            self._ref = None
        return newest - stamp

    @property
    def stamp(self) -> float | None:
        """Return the image stamp, in seconds, of the refinement in use; None without one."""
        ref = self._ref
        return None if ref is None else ref[0]

    def applies(self, stamp: float) -> bool:
        """Whether a refinement would correct a pose stamped ``stamp`` (before any lookup)."""
        return self._applies(self._ref, stamp)

    def _applies(self, ref: tuple | None, stamp: float) -> bool:
        return ref is not None and 0.0 <= float(stamp) - ref[0] <= self.max_age

    def update(self, stamp: float, position: np.ndarray, quaternion: np.ndarray,
               covariance: np.ndarray, net_position: np.ndarray,
               net_quaternion: np.ndarray, odom: tuple | None = None) -> None:
        """Use the refined camera pose of the frame stamped ``stamp`` (network pose beside).

        ``odom``: the camera's ``(position, quaternion)`` in the odometry frame at ``stamp``,
        or None where odometry is not known.
        """
        ref = (float(stamp), np.array(position, np.float64), np.array(quaternion, np.float64),
               np.array(covariance, np.float64), np.array(net_position, np.float64),
               np.array(net_quaternion, np.float64),
               None if odom is None else tuple(np.array(v, np.float64) for v in odom))
        with self._lock:
            if self._newest is not None and ref[0] > self._newest:
                return   # a frame from before a jump back in time: not this timeline's
            if self._ref is None or ref[0] >= self._ref[0]:   # never go back to an older one
                self._ref = ref

    def correct(self, stamp: float, position: np.ndarray, quaternion: np.ndarray,
                odom: tuple | None = None) -> Correction | None:
        """Correct a network pose stamped ``stamp``; None when no refinement applies.

        ``odom``: the camera's pose in the odometry frame at ``stamp`` (None: unknown); used
        with the refined frame's (``motion`` auto or odom).
        """
        with self._lock:
            ref = self._ref
        if not self._applies(ref, stamp):
            return None
        ref_stamp, r_pos, r_quat, r_cov, n_pos, n_quat, r_odom = ref
        age = float(stamp) - ref_stamp
        if self.motion != 'network' and odom is not None and r_odom is not None:
            pos, quat, cov = compose_correction(r_pos, r_quat, r_cov, *r_odom, *odom,
                                                self.odom_noise)
            return Correction(pos, quat, cov, age, 'odom')
        if self.motion == 'odom':
            return None
        pos, quat, cov = compose_correction(r_pos, r_quat, r_cov, n_pos, n_quat, position,
                                            quaternion, self.motion_noise)
        return Correction(pos, quat, cov, age)
