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

"""ROS message <-> numpy helpers for the localizer: images in, poses out.

cv_bridge is not needed (nor installable everywhere this runs): images are read with a
zero-copy ``np.frombuffer`` view and converted with OpenCV, and every problem raises an
:class:`ImageConversionError` that names it, so the node can count it and keep running.
Pose messages are built from the engine's numpy outputs in one place, so the pose, the
covariance pose, the TF and the path always agree; their field values come from
:mod:`camreloc_ros.core.robot.messages`, as for the messages the bag tools write.
"""

from typing import Sequence

from builtin_interfaces.msg import Time
import cv2
from geometry_msgs.msg import (Point, Pose, PoseStamped, PoseWithCovarianceStamped, Quaternion,
                               Transform, TransformStamped, Vector3)
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from camreloc_ros.core.data.images import (  # noqa: F401 - re-exported for the node
    check_compressed, check_image, COMPRESSED_SIGNATURES, compressed_format, compressed_pixels,
    compressed_to_rgb, ENCODINGS, image_pixels, image_to_rgb, ImageConversionError,
    UnsupportedEncodingError)
from camreloc_ros.core.robot.messages import (compressed_format_string, covariance_fields,
                                              image_fields, quaternion_fields, seconds_to_ns,
                                              stamp_ns, stamp_seconds, time_fields, vector_fields)


# --------------------------------------------------------------------------- images out

def rgb_to_image(rgb: np.ndarray, encoding: str = 'rgb8', header: Header | None = None) -> Image:
    """RGB ``uint8 (H, W, 3)`` -> ``sensor_msgs/Image`` (tests, benchmarks, bag tools).

    Supports rgb8, bgr8, rgba8, bgra8 and mono8. ``data`` is assigned as ``bytes``: assigning
    an array takes rclpy's slow path (tens of ms for VGA).
    """
    conversions = {'rgb8': None, 'bgr8': cv2.COLOR_RGB2BGR, 'rgba8': cv2.COLOR_RGB2RGBA,
                   'bgra8': cv2.COLOR_RGB2BGRA, 'mono8': cv2.COLOR_RGB2GRAY}
    if encoding not in conversions:
        raise UnsupportedEncodingError(encoding, list(conversions))
    code = conversions[encoding]
    pixels = np.ascontiguousarray(rgb if code is None else cv2.cvtColor(rgb, code))
    msg = Image(**image_fields(pixels, encoding))
    if header is not None:
        msg.header = header
    msg.data = pixels.tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, codec: str = 'jpeg', header: Header | None = None,
                      quality: int = 95) -> CompressedImage:
    """RGB ``uint8 (H, W, 3)`` -> JPEG or PNG ``sensor_msgs/CompressedImage``."""
    if codec not in COMPRESSED_SIGNATURES:
        raise UnsupportedEncodingError(codec, list(COMPRESSED_SIGNATURES))
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == 'jpeg' else []
    ok, buf = cv2.imencode('.jpg' if codec == 'jpeg' else '.png',
                           cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f'could not encode {codec}', 'encode')
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = compressed_format_string(codec)
    msg.data = buf.tobytes()
    return msg


# ---------------------------------------------------------------------------- stamps

def stamp_to_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds (exact)."""
    return stamp_ns(stamp)


def stamp_to_sec(stamp: Time) -> float:
    """``builtin_interfaces/Time`` -> float seconds (for the engine's time-gap rule)."""
    return stamp_seconds(stamp)


def sec_to_stamp(seconds: float) -> Time:
    """Float seconds (>= 0) -> ``builtin_interfaces/Time``, rounded to the nanosecond."""
    if seconds < 0:
        raise ValueError(f'a ROS time stamp cannot be negative, got {seconds}')
    return ns_to_stamp(seconds_to_ns(seconds))


def ns_to_stamp(nanoseconds: int) -> Time:
    """Integer nanoseconds (>= 0) -> ``builtin_interfaces/Time``."""
    return Time(**time_fields(nanoseconds))


# ---------------------------------------------------------------------------- poses out

def pose_msg(position: Sequence[float], quaternion: Sequence[float]) -> Pose:
    """Position (m) and quaternion ``(x, y, z, w)`` -> ``geometry_msgs/Pose``."""
    return Pose(position=Point(**vector_fields(position)),
                orientation=Quaternion(**quaternion_fields(quaternion)))


def covariance_to_list(covariance: np.ndarray) -> list[float]:
    """6x6 covariance (x y z rotx roty rotz; m², rad²) -> 36 floats, row-major, as ROS wants.

    Symmetrised; non-finite values are an error (:func:`camreloc_ros.core.robot.messages.
    covariance_fields`, which the bag writer uses too).
    """
    return covariance_fields(covariance).tolist()


def pose_stamped(header: Header, position: Sequence[float],
                 quaternion: Sequence[float], pose: Pose | None = None) -> PoseStamped:
    """``geometry_msgs/PoseStamped`` with the given header (the image's stamp, the map frame).

    ``pose``: the :func:`pose_msg` of ``position`` and ``quaternion`` when already built
    (the node builds it once for its pose topics).
    """
    if pose is None:
        pose = pose_msg(position, quaternion)
    return PoseStamped(header=header, pose=pose)


def pose_with_covariance_stamped(header: Header, position: Sequence[float],
                                 quaternion: Sequence[float], covariance: np.ndarray,
                                 pose: Pose | None = None) -> PoseWithCovarianceStamped:
    """``geometry_msgs/PoseWithCovarianceStamped``; covariance as :func:`covariance_to_list`.

    The covariance goes in as the float64 array itself: rclpy checks a list element by
    element (0.1 ms a message), an array by its dtype and size only.
    """
    msg = PoseWithCovarianceStamped(header=header)
    msg.pose.pose = pose_msg(position, quaternion) if pose is None else pose
    msg.pose.covariance = covariance_fields(covariance)
    return msg


def transform_stamped(header: Header, child_frame_id: str, position: Sequence[float],
                      quaternion: Sequence[float]) -> TransformStamped:
    """``header.frame_id`` -> ``child_frame_id`` transform; the camera pose in the map."""
    return TransformStamped(header=header, child_frame_id=child_frame_id, transform=Transform(
        translation=Vector3(**vector_fields(position)),
        rotation=Quaternion(**quaternion_fields(quaternion))))
