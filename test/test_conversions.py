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

"""Image and pose message conversions (real rclpy message classes, no DDS traffic)."""

import cv2
from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from camreloc_ros.ros.conversions import (check_image, compressed_to_rgb, covariance_to_list,
                                          image_to_rgb, ImageConversionError, ns_to_stamp,
                                          pose_stamped, pose_with_covariance_stamped,
                                          rgb_to_compressed, rgb_to_image, sec_to_stamp,
                                          stamp_to_ns, stamp_to_sec, transform_stamped,
                                          UnsupportedEncodingError)


@pytest.fixture(scope='module')
def rgb() -> np.ndarray:
    """A smooth 48x64 colour image with distinct channels (JPEG-friendly)."""
    y, x = np.mgrid[0:48, 0:64]
    return np.dstack([4 * x, 5 * y, 255 - 3 * x]).astype(np.uint8)


def received(msg: Image) -> Image:
    """As a subscriber gets it: ``data`` is an ``array.array`` (rclpy's type for uint8[])."""
    out = Image(header=msg.header, height=msg.height, width=msg.width, encoding=msg.encoding,
                is_bigendian=msg.is_bigendian, step=msg.step)
    out.data = bytes(msg.data)
    return out


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_colour_encodings_round_trip(rgb, encoding):
    """Every colour encoding comes back as the same RGB pixels."""
    out = image_to_rgb(received(rgb_to_image(rgb, encoding)))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_rgb8_is_a_zero_copy_view(rgb):
    """rgb8 with dense rows is not copied: the engine reads the message buffer directly."""
    msg = received(rgb_to_image(rgb))
    out = image_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_mono8_becomes_grey_rgb(rgb):
    """mono8 -> three equal channels, the same as the preprocessor's GRAY2RGB."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = image_to_rgb(rgb_to_image(rgb, 'mono8'))
    np.testing.assert_array_equal(out, np.dstack([grey] * 3))


def test_padded_rows(rgb):
    """``step`` larger than ``width * channels`` (row padding) is honoured."""
    rows = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).reshape(rgb.shape[0], -1)
    padded = np.full((rows.shape[0], rows.shape[1] + 16), 255, np.uint8)
    padded[:, :rows.shape[1]] = rows
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='bgr8',
                step=padded.shape[1], data=padded.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


# pattern -> (row, col) offsets of R, G (two), B in the 2x2 tile
BAYER = {'bayer_rggb8': ((0, 0), (0, 1), (1, 0), (1, 1)),
         'bayer_bggr8': ((1, 1), (0, 1), (1, 0), (0, 0)),
         'bayer_gbrg8': ((1, 0), (0, 0), (1, 1), (0, 1)),
         'bayer_grbg8': ((0, 1), (0, 0), (1, 1), (1, 0))}


@pytest.mark.parametrize('encoding', sorted(BAYER))
def test_bayer_patterns_debayer_to_the_right_colour(encoding):
    """A flat colour mosaicked in each pattern comes back as that colour (no R/B swap)."""
    colour = (200, 100, 40)
    (ry, rx), (g1y, g1x), (g2y, g2x), (by, bx) = BAYER[encoding]
    mosaic = np.zeros((16, 16), np.uint8)
    mosaic[ry::2, rx::2] = colour[0]
    mosaic[g1y::2, g1x::2] = colour[1]
    mosaic[g2y::2, g2x::2] = colour[1]
    mosaic[by::2, bx::2] = colour[2]
    msg = Image(height=16, width=16, encoding=encoding, step=16, data=mosaic.tobytes())
    out = image_to_rgb(msg)
    assert out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out[4:12, 4:12], np.broadcast_to(colour, (8, 8, 3)))


@pytest.mark.parametrize('encoding', ['32FC1', 'yuv422', '16UC1', 'rgb16'])
def test_unknown_encoding_is_named(encoding):
    """An unsupported encoding raises a ValueError subclass that names it."""
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=bytes(16))
    with pytest.raises(UnsupportedEncodingError, match=encoding) as info:
        image_to_rgb(msg)
    assert isinstance(info.value, ValueError)
    assert info.value.encoding == encoding


@pytest.mark.parametrize('fields, reason', [
    (dict(height=0, width=0, step=0, data=b''), 'zero_size'),
    (dict(height=4, width=0, step=0, data=b''), 'zero_size'),
    (dict(height=4, width=4, step=8, data=bytes(48)), 'step'),
    (dict(height=4, width=4, step=12, data=bytes(47)), 'short_data'),
])
def test_malformed_raw_images(fields, reason):
    """Zero size, a step too small, data shorter than height*step: clear errors."""
    msg = Image(encoding='rgb8', **fields)
    with pytest.raises(ImageConversionError) as info:
        check_image(msg)
    assert info.value.reason == reason


def test_jpeg_and_png(rgb):
    """JPEG decodes close to the source, PNG exactly; formats as image_transport writes."""
    jpeg = rgb_to_compressed(rgb, 'jpeg', quality=95)
    assert jpeg.format == 'rgb8; jpeg compressed bgr8'
    assert np.abs(compressed_to_rgb(jpeg).astype(int) - rgb).mean() < 3
    png = rgb_to_compressed(rgb, 'png')
    np.testing.assert_array_equal(compressed_to_rgb(png), rgb)
    for fmt in ('jpeg', 'JPG', ''):
        np.testing.assert_array_equal(
            compressed_to_rgb(CompressedImage(format=fmt, data=bytes(jpeg.data))),
            compressed_to_rgb(jpeg))


@pytest.mark.parametrize('fmt, data, error', [
    ('jpeg', b'', ImageConversionError),
    ('jpeg', b'\xff\xd8\xff\xe0' + bytes(range(256)) * 2, ImageConversionError),
    ('jpeg', b'GIF89a' + bytes(64), ImageConversionError),
    ('16UC1; compressedDepth png', b'\x89PNG\r\n\x1a\n' + bytes(64), UnsupportedEncodingError),
    ('theora', bytes(64), UnsupportedEncodingError),
])
def test_bad_compressed_images(fmt, data, error):
    """Corrupt data, a wrong signature and unsupported formats raise clear errors."""
    with pytest.raises(error):
        compressed_to_rgb(CompressedImage(format=fmt, data=data))


def test_truncated_jpeg(rgb):
    """A JPEG cut short is a bad message, not a half-grey frame."""
    data = bytes(rgb_to_compressed(rgb, 'jpeg').data)
    with pytest.raises(ImageConversionError, match='corrupt'):
        compressed_to_rgb(CompressedImage(format='jpeg', data=data[:len(data) // 3]))


def test_stamps():
    """Stamps convert exactly to ns and to float seconds and back."""
    stamp = sec_to_stamp(1700000000.123456789)
    assert stamp.sec == 1700000000 and abs(stamp.nanosec - 123456789) < 300
    assert stamp_to_ns(ns_to_stamp(1_500_000_000_000_000_123)) == 1_500_000_000_000_000_123
    assert stamp_to_sec(sec_to_stamp(12.5)) == 12.5
    with pytest.raises(ValueError):
        sec_to_stamp(-1.0)


def test_pose_messages_agree():
    """Pose, covariance pose and transform carry the same numbers; covariance row-major."""
    header = Header(stamp=sec_to_stamp(3.25), frame_id='map')
    position, quat = np.array([1.0, -2.0, 0.5]), np.array([0.0, 0.0, 0.6, 0.8])
    a = np.arange(36, dtype=float).reshape(6, 6) / 100
    cov = a @ a.T + np.eye(6)
    pose = pose_stamped(header, position, quat)
    assert pose.header.frame_id == 'map' and pose.pose.orientation.z == pytest.approx(0.6)
    msg = pose_with_covariance_stamped(header, position, quat, cov)
    assert isinstance(msg, PoseWithCovarianceStamped)
    np.testing.assert_allclose(np.asarray(msg.pose.covariance).reshape(6, 6), cov)
    assert msg.pose.covariance[1] == pytest.approx(cov[0, 1])
    tf = transform_stamped(header, 'camreloc_camera', position, quat)
    assert tf.child_frame_id == 'camreloc_camera' and tf.header.stamp.sec == 3
    assert (tf.transform.translation.y, tf.transform.rotation.w) == (-2.0, 0.8)


def test_covariance_validation():
    """A covariance must be 6x6 and finite; the list is exactly symmetric."""
    with pytest.raises(ValueError):
        covariance_to_list(np.eye(3))
    bad = np.eye(6)
    bad[2, 2] = np.nan
    with pytest.raises(ValueError):
        covariance_to_list(bad)
    skew = np.eye(6)
    skew[0, 1] = 1e-9
    out = np.asarray(covariance_to_list(skew)).reshape(6, 6)
    np.testing.assert_array_equal(out, out.T)
