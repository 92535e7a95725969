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

"""The training camera, recorded in checkpoints, and its comparison with a live camera.

A pose network learns the field of view it was trained on: the same scene seen by a camera
with a wider lens, or cropped to another aspect ratio (the preprocessing keeps the centre
square of the shorter side), looks like a different place, and the poses are wrong without
any error. Training records the camera (:func:`camera_record`, stored in the checkpoint's
``extra['camera']`` and carried into ONNX metadata); the live node compares it with the
camera's ``sensor_msgs/CameraInfo`` (:func:`camera_mismatch`). Pure Python, no ROS, no torch.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

KEYS = ('width', 'height', 'fx', 'fy', 'cx', 'cy')


def camera_record(dataset: Any, intrinsics: Any = None) -> dict | None:
    """Record the training camera of a dataset: image size, pinhole intrinsics when known.

    ``dataset`` is a :class:`~camreloc_ros.core.data.datasets.Dataset` (its ``intrinsics``
    are used) or a list of frames (with ``intrinsics`` given or None). Returns
    ``{'width', 'height'}`` plus ``fx, fy, cx, cy`` (pixels of the stored images) when the
    data has intrinsics, or None when there is no frame. The size is read from the first
    frame's image header (no decoding).
    """
    frames = getattr(dataset, 'frames', dataset)
    if intrinsics is None:
        intrinsics = getattr(dataset, 'intrinsics', None)
    if intrinsics is not None:
        return {k: (int if k in ('width', 'height') else float)(getattr(intrinsics, k))
                for k in KEYS}
    if not frames:
        return None
    from camreloc_ros.core.data.readers import image_size

    width, height = image_size(frames[0].image_path)
    return {'width': int(width), 'height': int(height)}


def training_camera(extra: Mapping | None) -> dict | None:
    """Return the camera record of a checkpoint's (or ONNX model's) ``extra``, or None.

    Read from ``extra['camera']`` (or ``extra['split']['camera']``). A missing or malformed
    record is None: older checkpoints have none, and the check is then skipped.
    """
    if not isinstance(extra, Mapping):
        return None
    record = extra.get('camera')
    if record is None and isinstance(extra.get('split'), Mapping):
        record = extra['split'].get('camera')
    if not isinstance(record, Mapping):
        return None
    try:
        out = {'width': int(record['width']), 'height': int(record['height'])}
        if out['width'] <= 0 or out['height'] <= 0:
            return None
        if all(record.get(k) is not None for k in ('fx', 'fy')):
            out.update({k: float(record[k]) for k in ('fx', 'fy')
                        if float(record[k]) > 0})
            out.update({k: float(record[k]) for k in ('cx', 'cy') if record.get(k) is not None})
    except (KeyError, TypeError, ValueError):
        return None
    return out


def field_of_view_deg(size_px: float, focal_px: float) -> float:
    """Full field of view (degrees) of ``size_px`` pixels at focal length ``focal_px``."""
    return math.degrees(2.0 * math.atan(size_px / (2.0 * focal_px)))


def describe_camera(camera: Mapping) -> str:
    """E.g. ``640x480 (aspect 1.333, FOV 57.4 x 44.6 deg)`` for logs and diagnostics."""
    text = f'{camera["width"]}x{camera["height"]} (aspect {camera["width"] / camera["height"]:.3f}'
    if camera.get('fx') and camera.get('fy'):
        text += (f', FOV {field_of_view_deg(camera["width"], camera["fx"]):.1f} x '
                 f'{field_of_view_deg(camera["height"], camera["fy"]):.1f} deg')
    return text + ')'


def camera_mismatch(training: Mapping, live: Mapping, fov_tolerance_deg: float,
                    aspect_tolerance: float) -> list[str]:
    """Why the live camera differs from the training camera beyond the tolerances ([] if not).

    The aspect ratios are compared relatively (``|a_live / a_train - 1| > aspect_tolerance``);
    horizontal and vertical fields of view in degrees, when both cameras have focal lengths
    (a CameraInfo with an all-zero K, i.e. uncalibrated, is checked for aspect only).
    """
    problems = []
    a_train = training['width'] / training['height']
    a_live = live['width'] / live['height']
    if abs(a_live / a_train - 1.0) > aspect_tolerance:
        problems.append(f'aspect ratio {a_live:.3f} ({live["width"]}x{live["height"]}) vs '
                        f'{a_train:.3f} in training ({training["width"]}x{training["height"]})')
    for axis, size, focal in (('horizontal', 'width', 'fx'), ('vertical', 'height', 'fy')):
        if not (training.get(focal) and live.get(focal)):
            continue
        fov_live = field_of_view_deg(live[size], live[focal])
        fov_train = field_of_view_deg(training[size], training[focal])
        if abs(fov_live - fov_train) > fov_tolerance_deg:
            problems.append(f'{axis} field of view {fov_live:.1f} deg vs {fov_train:.1f} deg '
                            f'in training')
    return problems
