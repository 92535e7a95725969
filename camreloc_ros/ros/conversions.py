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
covariance pose, the TF and the path always agree.
"""

from typing import Sequence

from builtin_interfaces.msg import Time
import cv2
from geometry_msgs.msg import (Pose, PoseStamped, PoseWithCovarianceStamped, TransformStamped)
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from camreloc_ros.core.data.images import (  # noqa: F401 - re-exported for the node
    check_compressed, check_image, COMPRESSED_SIGNATURES, compressed_format, compressed_to_rgb,
    ENCODINGS, image_to_rgb, ImageConversionError, UnsupportedEncodingError)


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
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.strides[0])
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
    msg.format = f'rgb8; {codec} compressed bgr8'
    msg.data = buf.tobytes()
    return msg


# ---------------------------------------------------------------------------- stamps

def stamp_to_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds (exact)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_to_sec(stamp: Time) -> float:
    """``builtin_interfaces/Time`` -> float seconds (for the engine's time-gap rule)."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(seconds: float) -> Time:
    """Float seconds (>= 0) -> ``builtin_interfaces/Time``, rounded to the nanosecond."""
    if seconds < 0:
        raise ValueError(f'a ROS time stamp cannot be negative, got {seconds}')
    total = int(round(seconds * 1e9))
    return Time(sec=total // 1_000_000_000, nanosec=total % 1_000_000_000)


def ns_to_stamp(nanoseconds: int) -> Time:
    """Integer nanoseconds (>= 0) -> ``builtin_interfaces/Time``."""
    if nanoseconds < 0:
        raise ValueError(f'a ROS time stamp cannot be negative, got {nanoseconds} ns')
    return Time(sec=int(nanoseconds) // 1_000_000_000, nanosec=int(nanoseconds) % 1_000_000_000)


# ---------------------------------------------------------------------------- poses out

def pose_msg(position: Sequence[float], quaternion: Sequence[float]) -> Pose:
    """Position (m) and quaternion ``(x, y, z, w)`` -> ``geometry_msgs/Pose``."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    (pose.orientation.x, pose.orientation.y, pose.orientation.z,
     pose.orientation.w) = (float(v) for v in quaternion)
    return pose


def covariance_to_list(covariance: np.ndarray) -> list[float]:
    """6x6 covariance (x y z rotx roty rotz; m², rad²) -> 36 floats, row-major, as ROS wants.

    Symmetrised so the message is exactly symmetric; non-finite values are an error because
    a consumer such as robot_localization would silently diverge on them.
    """
    cov = np.asarray(covariance, np.float64)
    if cov.shape != (6, 6):
        raise ValueError(f'covariance must be 6x6, got shape {cov.shape}')
    if not np.all(np.isfinite(cov)):
        raise ValueError('covariance has non-finite entries')
    return (0.5 * (cov + cov.T)).reshape(36).tolist()


def pose_stamped(header: Header, position: Sequence[float],
                 quaternion: Sequence[float]) -> PoseStamped:
    """``geometry_msgs/PoseStamped`` with the given header (the image's stamp, the map frame)."""
    return PoseStamped(header=header, pose=pose_msg(position, quaternion))


def pose_with_covariance_stamped(header: Header, position: Sequence[float],
                                 quaternion: Sequence[float],
                                 covariance: np.ndarray) -> PoseWithCovarianceStamped:
    """``geometry_msgs/PoseWithCovarianceStamped``; covariance as :func:`covariance_to_list`."""
    msg = PoseWithCovarianceStamped(header=header)
    msg.pose.pose = pose_msg(position, quaternion)
    msg.pose.covariance = covariance_to_list(covariance)
    return msg


def transform_stamped(header: Header, child_frame_id: str, position: Sequence[float],
                      quaternion: Sequence[float]) -> TransformStamped:
    """``header.frame_id`` -> ``child_frame_id`` transform; the camera pose in the map."""
    msg = TransformStamped(header=header, child_frame_id=child_frame_id)
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in position)
    r.x, r.y, r.z, r.w = (float(v) for v in quaternion)
    return msg
