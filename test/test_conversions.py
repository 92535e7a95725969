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

from camreloc_ros.ros.conversions import (check_image, compressed_pixels, compressed_to_rgb,
                                          covariance_to_list, image_to_rgb,
                                          ImageConversionError, ns_to_stamp, pose_msg,
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


@pytest.mark.parametrize('encoding', ['32FC1', 'nv21', '16UC1', 'rgb16'])
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


def test_compressed_pixels_are_the_decoders_bgr(rgb):
    """The node's compressed path skips the full-frame colour conversion, same poses.

    It hands the decoder's BGR on with order 'bgr'; the preprocessor swaps the resized planes,
    which gives exactly the input the converted RGB frame gives.
    """
    from camreloc_ros.core.data.transforms import Preprocessor

    jpeg = rgb_to_compressed(rgb, 'jpeg', quality=90)
    bgr, order = compressed_pixels(jpeg)
    assert order == 'bgr'
    np.testing.assert_array_equal(bgr[..., ::-1], compressed_to_rgb(jpeg))
    pre = Preprocessor(224, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    np.testing.assert_array_equal(pre(bgr, order='bgr'), pre(compressed_to_rgb(jpeg)))


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
    # the node builds one Pose for both topics: the same message either way
    body = pose_msg(position, quat)
    assert pose_stamped(header, position, quat, body) == pose
    shared = pose_with_covariance_stamped(header, position, quat, cov, body)
    assert shared.pose.pose is body and shared == msg
    np.testing.assert_array_equal(msg.pose.covariance, covariance_to_list(cov))
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


# ---------------------------------------------------------------------------- YUV 4:2:2

def pack_yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """A real RGB image in a camera driver's 4:2:2 layout ``(H, W, 2)``, written here.

    BT.601 video-range YUV (Y 16..235, as UVC cameras send), chroma averaged over each pixel
    pair, bytes in ``order`` ('UYVY' or 'YUYV'): independent of the code under test.
    """
    bt601 = np.array([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]])
    yuv = rgb.astype(np.float64) @ bt601.T + [16.0, 128.0, 128.0]
    h, w = rgb.shape[:2]
    y = yuv[..., 0]
    u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2
    v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2
    names = {'Y0': y[:, 0::2], 'Y1': y[:, 1::2], 'U': u, 'V': v}
    quads = [names[n] for n in ({'UYVY': ('U', 'Y0', 'V', 'Y1'),
                                 'YUYV': ('Y0', 'U', 'Y1', 'V')}[order])]
    packed = np.stack(quads, axis=-1)                    # (H, W/2, 4)
    return np.clip(np.rint(packed), 0, 255).astype(np.uint8).reshape(h, w, 2)


YUV_LAYOUTS = {'yuv422': ('UYVY', cv2.COLOR_YUV2RGB_UYVY),
               'uyvy': ('UYVY', cv2.COLOR_YUV2RGB_UYVY),
               'yuv422_yuy2': ('YUYV', cv2.COLOR_YUV2RGB_YUY2),
               'yuyv': ('YUYV', cv2.COLOR_YUV2RGB_YUY2)}


@pytest.fixture(scope='module')
def real_rgb() -> np.ndarray:
    """A real hololens-office frame (even width, as camera drivers deliver)."""
    from support import load_frames

    frame = load_frames(1)[0]
    assert frame.shape[1] % 2 == 0
    return frame


def yuv_message(packed: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """An Image of ``packed`` ``(H, W, 2)`` bytes, rows padded by ``pad`` bytes."""
    h, w = packed.shape[:2]
    rows = np.zeros((h, 2 * w + pad), np.uint8)
    rows[:, :2 * w] = packed.reshape(h, 2 * w)
    msg = Image(height=h, width=w, encoding=encoding, step=2 * w + pad)
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize('encoding', sorted(YUV_LAYOUTS))
@pytest.mark.parametrize('pad', [0, 6])
def test_yuv422_encodings_match_opencv(real_rgb, encoding, pad):
    """yuv422 (UYVY), uyvy, yuv422_yuy2 (YUYV), yuyv: pixels equal OpenCV's conversion.

    ROS names `yuv422` the UYVY order and `yuv422_yuy2` the YUYV order; the wrong order
    gives a different image, and the result is the original frame up to chroma subsampling.
    """
    order, code = YUV_LAYOUTS[encoding]
    packed = pack_yuv422(real_rgb, order)
    out = image_to_rgb(yuv_message(packed, encoding, pad))
    assert out.shape == real_rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.cvtColor(packed, code))
    error = np.abs(out.astype(np.int16) - real_rgb.astype(np.int16)).mean()
    assert error < 4.0, f'{encoding}: mean error {error:.1f} against the original frame'
    other = cv2.COLOR_YUV2RGB_YUY2 if order == 'UYVY' else cv2.COLOR_YUV2RGB_UYVY
    wrong = np.abs(cv2.cvtColor(packed, other).astype(np.int16) - real_rgb).mean()
    assert wrong > 4 * error + 10, 'the two byte orders must be told apart by this image'


def test_yuv422_odd_width_and_short_step_are_refused(real_rgb):
    """A 4:2:2 image of odd width, or with step < 2 * width, is a clear error, not a crash."""
    packed = pack_yuv422(real_rgb, 'UYVY')
    msg = yuv_message(packed[:, :-1].copy(), 'yuv422')
    with pytest.raises(ImageConversionError, match='odd width') as info:
        check_image(msg)
    assert info.value.reason == 'odd_width'
    msg = yuv_message(packed, 'yuv422_yuy2')
    msg.step = packed.shape[1]   # one byte per pixel: too small for two
    with pytest.raises(ImageConversionError, match='step'):
        image_to_rgb(msg)


def test_bgr8_stays_a_view_and_the_preprocessor_swaps_the_small_planes():
    """No full-frame colour conversion for bgr8: same network input as converting first."""
    from camreloc_ros.core.data.transforms import Preprocessor
    from camreloc_ros.ros.conversions import image_pixels

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (360, 540, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, 'bgr8')
    pixels, order = image_pixels(msg)
    assert order == 'bgr'
    assert np.shares_memory(pixels, np.frombuffer(msg.data, np.uint8))   # zero-copy
    pre = Preprocessor(224, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    np.testing.assert_array_equal(pre(pixels, order='bgr'), pre(rgb))
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    with pytest.raises(ValueError, match="'rgb' or 'bgr'"):
        pre(pixels, order='rgba')
    pixels, order = image_pixels(rgb_to_image(rgb, 'rgb8'))
    assert order == 'rgb' and pixels.base is not None


def test_a_checked_image_is_not_checked_again(monkeypatch):
    """The node checks in its callback; the worker's conversion must not repeat it."""
    from camreloc_ros.core.data import images

    msg = rgb_to_image(np.zeros((8, 8, 3), np.uint8), 'mono8')
    calls = []
    real = images.check_image
    monkeypatch.setattr(images, 'check_image', lambda m: calls.append(1) or real(m))
    images.image_pixels(msg, checked=True)
    assert calls == []
    images.image_pixels(msg)
    assert calls == [1]
