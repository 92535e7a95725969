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

"""Carry a pose to a later frame by a measured motion (dead reckoning, ROS-free).

:func:`compose_correction` carries a reference pose ``T_ref`` (camera-to-world, e.g. the last
localized one) to a later frame by the motion a source measured between the two frames, as
the source's own poses of both frames (``T_src_ref``, ``T_src_now``: odometry's camera
poses in the odometry frame, or the network's)::

    T_now = T_ref @ inv(T_src_ref) @ T_src_now

so the source's unknown offset (odometry's frame, a network's bias) cancels. Covariance (the
package's convention: position, then rotation about the world axes, first order):

* the reference's covariance carried through the composition: a rotation error ``dtheta``
  of ``T_ref`` moves the carried position by ``-[d]x dtheta``, ``d`` the world
  displacement from the reference to the carried camera centre, so
  ``Sigma = J Sigma_ref J^T`` with ``J = [[I, -[d]x], [0, I]]``;
* plus an isotropic motion term for the error of the measured motion: position std
  ``motion_noise * |d|`` (m) and rotation std ``motion_noise * angle`` (rad).

The localizer (:mod:`~camreloc_ros.core.localization.state`) uses it for dead reckoning and
to carry a refinement to a later one's frame before comparing them.
"""

from __future__ import annotations

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
