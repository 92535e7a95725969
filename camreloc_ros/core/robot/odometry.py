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

"""Odometry that drifts: a posed recording made to look like what a robot really records.

A robot has no ground truth, only odometry that is good over a few metres and wrong after a
walk. To try the no-ground-truth workflow (``bag-from-dataset --odometry drift`` ->
``reconstruct`` -> ``train`` -> ``map`` -> node) and the live benchmark's "with odometry" rows
on a posed dataset, its poses are turned into such odometry: the systematic kind a
visual-inertial or wheel odometry has (a scale-like error along one direction and a yaw
drift about gravity), seeded so a run can be repeated.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from camreloc_ros.core.geometry import quat_from_rotvec, quat_to_matrix

DRIFT_SCALE = 0.02                 # translation error: 2 % of the distance travelled
DRIFT_YAW_DEG_PER_M = (0.1, 0.3)   # yaw drift rate range, deg per metre (sign seeded)


def _axis_rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    return quat_to_matrix(quat_from_rotvec(np.asarray(axis, np.float64) * angle_rad))


def drifted_odometry(poses_c2w: Sequence[np.ndarray], breaks: Sequence[bool],
                     rng: np.random.Generator, scale: float = DRIFT_SCALE,
                     yaw_deg_per_m: tuple[float, float] = DRIFT_YAW_DEG_PER_M
                     ) -> list[np.ndarray]:
    """Return camera poses in an odometry frame: the truth's motion with a drift that grows.

    Each step's motion (in the previous camera's frame) gets a translation error of ``scale``
    x its length in one fixed, seeded direction of the odometry frame, and a yaw error about
    the up axis of a seeded rate (``yaw_deg_per_m``, random sign) x its length. ``breaks[k]``
    (a new sequence: no motion was observed) carries the true relative pose over without
    error. The odometry frame starts at the first pose: it is the truth's frame until the
    drift builds up, which is what a robot's ``odom`` frame is to its map.
    """
    poses = [np.asarray(p, np.float64) for p in poses_c2w]
    if len(breaks) != len(poses):
        raise ValueError(f'breaks has {len(breaks)} entries for {len(poses)} poses')
    if not poses:
        return []
    down = np.mean([p[:3, 1] for p in poses], axis=0)   # the optical frame's y points down
    up = -down / max(np.linalg.norm(down), 1e-12)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    yaw_rate = math.radians(rng.uniform(*yaw_deg_per_m)) * rng.choice([-1.0, 1.0])
    odom = [poses[0].copy()]
    for k in range(1, len(poses)):
        step = np.linalg.inv(poses[k - 1]) @ poses[k]
        if not breaks[k]:
            dist = float(np.linalg.norm(step[:3, 3]))
            rot_prev = odom[-1][:3, :3]
            step = step.copy()
            step[:3, :3] = _axis_rotation(rot_prev.T @ up, yaw_rate * dist) @ step[:3, :3]
            step[:3, 3] += scale * dist * (rot_prev.T @ direction)
        odom.append(odom[-1] @ step)
    return odom
