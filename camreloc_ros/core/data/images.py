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

"""Image message payloads -> RGB frames, for the live node and the bag tools alike.

Works on anything with the fields of ``sensor_msgs/Image`` (``encoding, height, width, step,
data``) or ``CompressedImage`` (``format, data``): rclpy messages and rosbags' deserialised
messages. One decoder means a bag evaluated offline gives the same pixels, hence the same
poses, as the live node. cv_bridge is not needed: images are read with a zero-copy
``np.frombuffer`` view and converted with OpenCV, and every problem raises an
:class:`ImageConversionError` that names it, so a node can count it and keep running.
"""

from typing import Any, Sequence

import cv2
import numpy as np

# encoding -> (channels, OpenCV conversion to RGB or None when it already is RGB).
# OpenCV names Bayer patterns by the second row's first two pixels, hence the "swapped" codes
# (the same table as cv_bridge): bayer_rggb8 -> COLOR_BayerBG2RGB.
ENCODINGS: dict[str, tuple[int, int | None]] = {
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
    'bayer_rggb8': (1, cv2.COLOR_BayerBG2RGB),
    'bayer_bggr8': (1, cv2.COLOR_BayerRG2RGB),
    'bayer_gbrg8': (1, cv2.COLOR_BayerGR2RGB),
    'bayer_grbg8': (1, cv2.COLOR_BayerGB2RGB),
    # YUV 4:2:2, two bytes per pixel, what USB (UVC) and V4L2 camera drivers publish. ROS names
    # (sensor_msgs/image_encodings.hpp): `yuv422` is U0 Y0 V0 Y1 (UYVY, as `uyvy`) and
    # `yuv422_yuy2` is Y0 U0 Y1 V0 (YUYV, as `yuyv`); cv_bridge converts them the same way.
    'yuv422': (2, cv2.COLOR_YUV2RGB_UYVY),
    'uyvy': (2, cv2.COLOR_YUV2RGB_UYVY),
    'yuv422_yuy2': (2, cv2.COLOR_YUV2RGB_YUY2),
    'yuyv': (2, cv2.COLOR_YUV2RGB_YUY2),
}
# encodings whose pixels come in pairs (one U and one V per two pixels): the width is even
PAIRED_ENCODINGS = frozenset({'yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv'})

# compressed format keyword -> the file signature its data must start with
COMPRESSED_SIGNATURES: dict[str, bytes] = {
    'jpeg': b'\xff\xd8\xff',
    'png': b'\x89PNG\r\n\x1a\n',
}

# image_transport writes e.g. 'rgb8; jpeg compressed bgr8'; plain 'jpeg', 'jpg', 'png' too
_FORMAT_ALIASES = {'jpg': 'jpeg'}


class ImageConversionError(ValueError):
    """An image message that cannot become an RGB frame; ``reason`` is a short stable key."""

    def __init__(self, message: str, reason: str = 'invalid'):
        super().__init__(message)
        self.reason = reason


class UnsupportedEncodingError(ImageConversionError):
    """An encoding (raw) or format (compressed) that the localizer does not read."""

    def __init__(self, encoding: str, supported: Sequence[str]):
        super().__init__(f'unsupported image encoding {encoding!r}; supported: '
                         f'{", ".join(supported)}', reason=f'encoding:{encoding}')
        self.encoding = encoding


def check_image(msg: Any) -> int:
    """Cheap validation of a raw image (no pixel is touched); returns its channel count.

    Run in the subscription callback, so a malformed message is counted at once and never
    displaces a good frame waiting for the worker.
    """
    encoding = msg.encoding.lower()
    if encoding not in ENCODINGS:
        raise UnsupportedEncodingError(msg.encoding, list(ENCODINGS))
    channels = ENCODINGS[encoding][0]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f'empty image ({width}x{height})', 'zero_size')
    if encoding in PAIRED_ENCODINGS and width % 2:
        raise ImageConversionError(
            f'{encoding} image of odd width {width}: YUV 4:2:2 stores pixels in pairs, so the '
            'width must be even', 'odd_width')
    if step < width * channels:
        raise ImageConversionError(
            f'step {step} is smaller than width*channels = {width}*{channels} '
            f'for {encoding}', 'step')
    if len(msg.data) < height * step:
        raise ImageConversionError(
            f'data has {len(msg.data)} bytes, expected height*step = {height}*{step} = '
            f'{height * step}', 'short_data')
    return channels


def image_to_rgb(msg: Any, checked: bool = False) -> np.ndarray:
    """``sensor_msgs/Image`` -> RGB ``uint8 (H, W, 3)``.

    rgb8 with ``step == width * 3`` is returned as a read-only view of ``msg.data`` (no copy);
    other encodings are converted (Bayer patterns debayered) by OpenCV. ``checked``: the
    message already passed :func:`check_image` (the node checks in its callback, once).
    """
    image, order = image_pixels(msg, checked)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if order == 'bgr' else image


def image_pixels(msg: Any, checked: bool = False) -> tuple[np.ndarray, str]:
    """``sensor_msgs/Image`` -> ``(uint8 (H, W, 3), 'rgb' | 'bgr')`` with the least work.

    rgb8 and bgr8 come back as read-only views of ``msg.data`` in their own channel order
    (the preprocessor reads either), every other encoding converted to RGB by OpenCV.
    """
    channels = ENCODINGS[msg.encoding.lower()][0] if checked else check_image(msg)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    rows = np.frombuffer(msg.data, np.uint8, count=height * step).reshape(height, step)
    pixels = rows[:, :width * channels]
    image = pixels.reshape(height, width, channels) if channels > 1 else pixels
    encoding = msg.encoding.lower()
    if encoding == 'bgr8':
        return image, 'bgr'
    code = ENCODINGS[encoding][1]
    if code is None:
        return image, 'rgb'
    if not image.flags.c_contiguous:
        image = np.ascontiguousarray(image)   # OpenCV wants dense rows for Bayer patterns
    return cv2.cvtColor(image, code), 'rgb'


def compressed_format(msg: Any) -> str:
    """Return the codec named in ``msg.format`` ('jpeg' or 'png'); raise for anything else.

    An empty format is read from the data's signature, as image_transport did in early
    releases.
    """
    text = msg.format.lower()
    for word in text.replace(';', ' ').split():
        word = _FORMAT_ALIASES.get(word, word)
        if word in COMPRESSED_SIGNATURES:
            return word
        if word in ('compresseddepth', 'theora', 'h264', 'zstd'):
            break
    if not text.strip():
        head = bytes(msg.data[:8])
        for name, signature in COMPRESSED_SIGNATURES.items():
            if head.startswith(signature):
                return name
    raise UnsupportedEncodingError(msg.format or '<empty>', list(COMPRESSED_SIGNATURES))


def check_compressed(msg: Any) -> str:
    """Cheap validation of a compressed image (format and file signature); returns the codec."""
    if len(msg.data) == 0:
        raise ImageConversionError('compressed image with no data', 'zero_size')
    codec = compressed_format(msg)
    signature = COMPRESSED_SIGNATURES[codec]
    if bytes(msg.data[:len(signature)]) != signature:
        raise ImageConversionError(f'data is not {codec}: bad file signature', 'corrupt')
    return codec


def compressed_pixels(msg: Any) -> tuple[np.ndarray, str]:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> ``(uint8 (H, W, 3), 'bgr')``.

    The decoder's own BGR, without a colour conversion of the full frame: the preprocessor
    reads either channel order (what :func:`image_pixels` does for bgr8 messages).
    """
    codec = check_compressed(msg)
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageConversionError(f'corrupt {codec} data ({len(msg.data)} bytes) could not '
                                   'be decoded', 'corrupt')
    return bgr, 'bgr'


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> RGB ``uint8 (H, W, 3)``."""
    return cv2.cvtColor(compressed_pixels(msg)[0], cv2.COLOR_BGR2RGB)
