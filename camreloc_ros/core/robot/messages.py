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

"""Field values of the ROS messages camreloc_ros writes, and stamps, without ROS.

Two builders make the same messages: :mod:`camreloc_ros.ros.conversions` (rclpy classes, for
the live node) and :class:`camreloc_ros.core.bags.writer.Messages` (rosbags classes, for
bags). Both take their field values from the plain functions here, so a pose, a covariance
or an image means the same in a live topic and in a bag, and both refuse the same bad input
(a non-finite covariance, a negative stamp). Stamps are integer nanoseconds everywhere
(:data:`NS` per second); float seconds only where the engine's time-gap rule wants them.
"""

from __future__ import annotations

import struct
from typing import Any, Sequence

import numpy as np

NS = 1_000_000_000


# ----------------------------------------------------------------------------- stamps

def time_fields(ns: int) -> dict[str, int]:
    """``builtin_interfaces/Time`` fields ``{'sec', 'nanosec'}`` of integer nanoseconds >= 0."""
    if ns < 0:
        raise ValueError(f'a ROS time stamp cannot be negative, got {ns} ns')
    sec, nanosec = divmod(int(ns), NS)
    return {'sec': sec, 'nanosec': nanosec}


def seconds_to_ns(seconds: float) -> int:
    """Float seconds -> integer nanoseconds, rounded to the nearest one."""
    return int(round(float(seconds) * NS))


def stamp_ns(stamp: Any) -> int:
    """Integer nanoseconds of any ``Time``-like object (rclpy or rosbags): exact."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def stamp_seconds(stamp: Any) -> float:
    """Float seconds of a ``Time``-like object (for the engine's time-gap rule)."""
    return stamp_ns(stamp) / NS


def header_stamp_ns(data: bytes) -> int:
    """Header stamp (ns) of a serialised message whose first field is a std_msgs/Header.

    Read from the CDR bytes directly, so an image's stamp costs nothing to get.
    """
    if len(data) < 12:
        raise ValueError(f'message of {len(data)} bytes is too short for a header')
    order = '<' if data[1] & 1 else '>'
    sec, nsec = struct.unpack_from(order + 'iI', data, 4)
    return sec * NS + nsec


# ----------------------------------------------------------------------------- poses

def vector_fields(values: Sequence[float]) -> dict[str, float]:
    """``{'x', 'y', 'z'}`` of a position (Point, Vector3)."""
    x, y, z = (float(v) for v in values)
    return {'x': x, 'y': y, 'z': z}


def quaternion_fields(values: Sequence[float]) -> dict[str, float]:
    """``{'x', 'y', 'z', 'w'}`` of an x, y, z, w quaternion."""
    x, y, z, w = (float(v) for v in values)
    return {'x': x, 'y': y, 'z': z, 'w': w}


def covariance_fields(covariance: np.ndarray) -> np.ndarray:
    """6x6 covariance (x y z rotx roty rotz; m², rad²) -> 36 float64, row-major, as ROS wants.

    Symmetrised so the message is exactly symmetric; non-finite values are an error because
    a consumer such as robot_localization would silently diverge on them.
    """
    cov = np.asarray(covariance, np.float64)
    if cov.shape != (6, 6):
        raise ValueError(f'covariance must be 6x6, got shape {cov.shape}')
    if not np.all(np.isfinite(cov)):
        raise ValueError('covariance has non-finite entries')
    return (0.5 * (cov + cov.T)).reshape(36)


# ----------------------------------------------------------------------------- images

def image_fields(pixels: np.ndarray, encoding: str) -> dict[str, Any]:
    """``sensor_msgs/Image`` fields but ``header`` and ``data`` of a C-contiguous array."""
    return {'height': int(pixels.shape[0]), 'width': int(pixels.shape[1]),
            'encoding': encoding, 'is_bigendian': 0, 'step': int(pixels.strides[0])}


def compressed_format_string(codec: str) -> str:
    """``CompressedImage.format`` as image_transport writes it for RGB data."""
    return f'rgb8; {codec} compressed bgr8'
