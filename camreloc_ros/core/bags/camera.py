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

"""A bag's camera intrinsics from its ``sensor_msgs/CameraInfo`` (ROS-free)."""

from __future__ import annotations

import numpy as np

from camreloc_ros.core.bags.reader import Bag
from camreloc_ros.core.data.datasets import Intrinsics

CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'


def camera_info_topic(bag: Bag, image_topic: str) -> str | None:
    """Return the CameraInfo topic beside ``image_topic`` (else the bag's only one), or None."""
    infos = [t for t, i in bag.topics.items() if i.msgtype == CAMERA_INFO]
    base = image_topic.rsplit('/compressed', 1)[0].rsplit('/', 1)[0]
    near = [t for t in infos if t.rsplit('/', 1)[0] == base]
    return near[0] if near else (infos[0] if len(infos) == 1 else None)


def camera_intrinsics(bag: Bag, image_topic: str,
                      info_topic: str | None = None) -> Intrinsics | None:
    """Return the intrinsics of the first CameraInfo of :func:`camera_info_topic`, or None.

    ``info_topic`` names the CameraInfo topic where the camera's own is not beside the
    image topic (it must exist and be a CameraInfo: the error lists the bag's topics).
    None also when the message's focal lengths are not positive (an uncalibrated camera).
    ``width`` / ``height`` are the message's (0 when the driver leaves them unset).
    """
    if info_topic is not None:
        bag.require(info_topic, (CAMERA_INFO,), '--camera-info-topic')
    topic = info_topic or camera_info_topic(bag, image_topic)
    if topic is None:
        return None
    for msg in bag.messages([topic]):
        info = bag.deserialize(msg)
        K = np.asarray(info.k, np.float64).reshape(3, 3)
        if not (K[0, 0] > 0 and K[1, 1] > 0):
            return None
        return Intrinsics(int(info.width), int(info.height), float(K[0, 0]), float(K[1, 1]),
                          float(K[0, 2]), float(K[1, 2]))
    return None


def camera_matrix(bag: Bag, image_topic: str) -> np.ndarray | None:
    """K of the bag's CameraInfo beside ``image_topic`` (else its only one), or None."""
    intrinsics = camera_intrinsics(bag, image_topic)
    return None if intrinsics is None else intrinsics.matrix()
