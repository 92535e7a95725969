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

"""The localizer's parameters: one table for the node, the YAML, the launch file, the docs.

``test_params_agree.py`` checks that they agree.

Each :class:`Param` says when it is read (``startup``, ``configure`` or ``live``) and what it
accepts; :func:`parameter_descriptor` turns it into the ROS descriptor the node declares.
"""

from dataclasses import dataclass
import math
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from camreloc_ros.core.config import PRECISIONS, RUNTIMES
from camreloc_ros.ros.qos import RELIABILITY_CHOICES

# Smallest shorter image side the node localizes: a quarter of the model's input size (the
# preprocessing would upscale more than 4x, so the pose says nothing about the image) and
# never below 32 px. Smaller images are counted as bad messages.
MIN_IMAGE_SIDE = 32
MIN_SIDE_FRACTION = 0.25


@dataclass(frozen=True)
class Param:
    """One node parameter: the single source of truth for the node, the YAML and the docs.

    ``when``: ``startup`` (read-only), ``configure`` (read in on_configure; changes are refused
    while configured, so a value never silently fails to apply) or ``live`` (applied at once).
    """

    name: str
    default: Any
    description: str
    when: str = 'configure'
    limits: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()


PARAMETERS: list[Param] = [
    Param('autostart', True, 'Configure and activate on start, so a plain `ros2 run` '
          'localizes; false leaves the transitions to a lifecycle manager.', 'startup'),
    Param('model', '', 'Checkpoint file (.pt) written by `camreloc train`, or an .onnx '
          'written by `camreloc export` (runtime onnx).'),
    Param('runtime', 'auto', 'auto: onnx on a CPU, torch on CUDA; torch: eager PyTorch (CPU '
          'or CUDA); onnx: ONNX Runtime, the fast path on a CPU (a .pt model is exported once '
          'into ~/.cache/camreloc_ros).', choices=RUNTIMES),
    Param('device', 'auto', 'auto (CUDA when present), cpu, cuda or cuda:N.'),
    Param('precision', 'fp32', 'CNN precision (the head stays float32): fp32; fp16 or bf16 '
          'autocast with torch on CUDA; bf16 with torch on a CPU with native bf16 (AVX-512 '
          'BF16 or AMX; runtime auto picks torch); int8 with runtime onnx on the CPU and an '
          'int8 .onnx from `camreloc export --precision int8`. Any other combination fails '
          'configure with the valid choices.', choices=PRECISIONS),
    Param('threads', 0, 'CPU threads of the runtime (torch or ONNX Runtime intra-op); 0 = '
          'half the cores (at least 1), leaving the rest to the camera driver and DDS.',
          limits=(0, 1024)),
    Param('input', 'raw', 'raw: sensor_msgs/Image on `image`; compressed: '
          'sensor_msgs/CompressedImage (JPEG, PNG) on `image/compressed`.',
          choices=('raw', 'compressed')),
    Param('qos.reliability', 'best_effort', 'Image subscription reliability (best_effort is '
          'the sensor-data profile).', choices=RELIABILITY_CHOICES),
    Param('qos.depth', 1, 'Image subscription history depth (keep last).', limits=(1, 100)),
    Param('map_frame', 'map', 'Frame of the published poses and parent frame of the TF.'),
    Param('camera_pose_frame', 'camreloc_camera', 'Child frame of the TF: the estimated '
          'camera pose.'),
    Param('publish_tf', True, 'Deprecated, use tf_mode: false turns TF off whatever tf_mode '
          'says (as tf_mode none).'),
    Param('tf_mode', 'camera', 'TF output. none; camera: map_frame -> camera_pose_frame (a '
          'leaf frame, the camera pose); map_to_odom: map_frame -> odom_frame as nav2_amcl '
          'publishes it (odom -> base from TF at the image stamp, future-dated by '
          'transform_tolerance).', choices=('none', 'camera', 'map_to_odom')),
    Param('base_frame', 'base_link', 'Robot frame the pose topics describe; the camera '
          'extrinsics come from TF (base_frame -> image header.frame_id) at the image stamp. '
          'An empty image frame_id or one equal to base_frame means identity extrinsics.'),
    Param('odom_frame', 'odom', 'Odometry frame: the child of the map_frame -> odom_frame '
          'transform of tf_mode map_to_odom.'),
    Param('transform_tolerance', 1.0, 'Seconds the map -> odom transform is post-dated by, '
          'i.e. how long it stays valid (nav2_amcl transform_tolerance).',
          limits=(0.0, 60.0)),
    Param('transform_timeout', 0.1, 'Seconds to wait for a TF lookup at an image stamp '
          '(extrinsics, odometry) and, on configure, for the published child frame to show '
          'up in TF (robot_localization transform_timeout).', limits=(0.0, 10.0)),
    Param('latched_pose', False, 'pose and pose_with_covariance transient-local, keep last 1 '
          '(amcl_pose QoS): a late subscriber gets the last pose.'),
    Param('path_period', 1.0, 'Seconds between `path` messages (built from the kept poses, '
          'only while someone subscribes).', limits=(0.05, 60.0)),
    Param('path_length', 1000, 'Poses kept in `path`; 0 turns the path off.', 'live',
          limits=(0, 100000)),
    Param('max_gap', 1.0, 'Seconds between image stamps that restart the temporal window, '
          'the reference pose of the gate and, with a map, the localization (nothing carries '
          'a pose across the gap).', 'live', limits=(0.001, 3600.0)),
    Param('gate.max_speed', 0.0, 'm/s from the last published pose above which a pose is '
          'not published; 0 = off.', 'live', limits=(0.0, 1000.0)),
    Param('gate.max_angular_speed', 0.0, 'deg/s from the last published pose above which a '
          'pose is not published; 0 = off.', 'live', limits=(0.0, 100000.0)),
    Param('gate.max_position_std', 0.0, 'm; poses whose largest position standard '
          'deviation is above are not published; 0 = off.', 'live', limits=(0.0, 1000.0)),
    Param('map', '', 'Localization map (.npz) from `camreloc map` for the checkpoint of '
          '`model` (the .pt, or the one an .onnx was exported from): every frame is tracked '
          'against the map, refinements (2D-3D matching + PnP, latest frame, their own '
          'thread) seed and check the tracking, and only localized poses (or dead reckoning '
          'within localization.max_position_std / max_rotation_std) go out on pose, '
          'pose_with_covariance and TF; the network pose goes to ~/network_pose; empty = '
          'off (every network pose is published).'),
    Param('refine.sync', False, 'Refine every frame before its pose is published (tests, '
          'evaluation: live states equal `camreloc evaluate --map`); false: the refiner takes '
          'the latest frame in its own thread and the network answers every frame.'),
    Param('refine.period', 1.0, 'Seconds between refinements while localized (tracking '
          'holds the pose; refinements check it and re-seed it); not localized, the refiner '
          'runs on every latest frame. 0 = no limit.', limits=(0.0, 3600.0)),
    Param('refine.nice', 10, 'Niceness of the refiner thread (Linux): the network worker '
          '(nice 0) gets the CPU first, so every frame is answered; 19 starves refinements '
          'behind the camera driver and DDS on 2 cores, 0 shares the CPU evenly.',
          limits=(0, 19)),
    Param('refine.max_keypoints', 1024, 'Query SIFT keypoints a refinement keeps (the '
          'strongest); 0 = the map setting (4096 by default). Fewer: faster refinements '
          '(HoloLens: 270 vs 430 ms a frame, same median), so localization comes sooner.',
          limits=(0, 100000)),
    Param('localization.lost_after', 2.0, 'Seconds without a tracked or accepted refined '
          'pose after which the node is not_localized (dead reckoning stops).',
          limits=(0.0, 3600.0)),
    Param('localization.max_position_std', 0.25, 'm; dead_reckoning poses whose largest '
          'position standard deviation is above are not published.', limits=(0.0, 1000.0)),
    Param('localization.max_rotation_std', 5.0, 'deg; dead_reckoning poses whose largest '
          'rotation standard deviation is above are not published.', limits=(0.0, 180.0)),
    Param('localization.confirmations', 2, 'Consistent refinements needed before localized '
          '(at start, after ~/reset, a jump in time or being lost): one lucky PnP on a '
          'repetitive structure is not enough.', limits=(1, 100)),
    Param('localization.motion_noise', 0.1, 'Dead reckoning by the network: position std '
          'per metre and rotation std per radian of its motion, on top of its own covariance '
          'at both frames.', limits=(0.0, 10.0)),
    Param('localization.odom_noise', 0.02, 'Dead reckoning by odometry (TF odom_frame -> '
          'the camera at both stamps): position std per metre and rotation std per radian '
          'of the odometry motion.', limits=(0.0, 10.0)),
    Param('refine.min_inliers', 20, 'PnP inliers below which a refinement falls back to '
          "the network's pose.", limits=(4, 100000)),
    Param('diagnostics_period', 1.0, 'Seconds between /diagnostics messages.',
          limits=(0.1, 60.0)),
    Param('camera_check.fov_tolerance_deg', 5.0, 'Degrees the horizontal or vertical field '
          'of view of the live camera (camera_info) may differ from the training camera.',
          limits=(0.0, 180.0)),
    Param('camera_check.aspect_tolerance', 0.02, 'Relative difference of the image aspect '
          'ratio (width/height) allowed between the live and the training camera.',
          limits=(0.0, 10.0)),
    Param('camera_check.refuse', False, 'Refuse (do not localize, count) images while the '
          'live camera differs from the training camera; false only warns.'),
]
PARAMETERS_BY_NAME = {p.name: p for p in PARAMETERS}


class ConfigurationError(ValueError):
    """A parameter value the node cannot start with."""


def parameter_descriptor(param: Param) -> ParameterDescriptor:
    """ROS descriptor of a :class:`Param` (ranges, read-only, allowed values)."""
    desc = ParameterDescriptor(name=param.name, description=param.description,
                               read_only=param.when == 'startup')
    if param.choices:
        desc.additional_constraints = 'one of: ' + ', '.join(param.choices)
    elif param.when == 'configure':
        desc.additional_constraints = 'read in on_configure (clean up to change it)'
    if param.limits is not None:
        lo, hi = param.limits
        if isinstance(param.default, bool):
            pass
        elif isinstance(param.default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                            to_value=float(hi), step=0.0)]
    return desc


def expected_value(param: Param) -> str:
    """Describe in words what ``param`` accepts (for start-failure messages)."""
    default = param.default
    if isinstance(default, bool):
        return 'a boolean (true or false)'
    text = {int: 'an integer', float: 'a floating-point number'}.get(type(default), 'a string')
    if param.limits is not None:
        lo, hi = param.limits
        text += f' in {lo:g}..{hi:g}'
    if param.choices:
        text += ': one of ' + ', '.join(param.choices)
    if isinstance(default, float):
        text += ' (write 2.0, not 2)'
    return text


def min_image_side(input_size: int) -> int:
    """Smallest shorter side (px) of an image the node localizes, for a model input size."""
    return max(MIN_IMAGE_SIDE, math.ceil(MIN_SIDE_FRACTION * input_size))


def check_value(param: Param, value: Any) -> str | None:
    """Why ``value`` is not allowed for ``param`` (None when it is)."""
    if param.choices and value not in param.choices:
        return f'{param.name} must be one of {", ".join(param.choices)}, got {value!r}'
    if param.name == 'device' and not (value in ('auto', 'cpu') or value.startswith('cuda')):
        return f'device must be auto, cpu, cuda or cuda:N, got {value!r}'
    return None
