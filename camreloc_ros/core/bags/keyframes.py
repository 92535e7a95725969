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

"""Keyframes of a plain recording: images picked by count, time or motion, with odometry.

Structure from motion (``camreloc reconstruct``) needs neither every image of a 30 Hz camera
(neighbours are nearly the same picture and cost matching time) nor ground truth. A bag gives
images and, optionally, odometry (a pose topic or a TF pair): odometry is what puts the
reconstruction into metres and into the robot's frame, and it lets keyframes follow the
motion (one every N metres or M degrees) rather than the clock, so a robot standing still
adds no images. Images without odometry within the tolerance are never keyframes when
odometry is asked for (their scale could not be checked); they are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
import re
from typing import Callable, Sequence

import numpy as np

from camreloc_ros.core.bags.errors import BagError
from camreloc_ros.core.bags.extract import _write_image
from camreloc_ros.core.bags.groundtruth import DEFAULT_TOLERANCE, scan_bag
from camreloc_ros.core.bags.reader import Bag, IMAGE_TYPES
from camreloc_ros.core.geometry import matrix_from_pose, orientation_error_deg
from camreloc_ros.core.robot.messages import header_stamp_ns, NS

EVERY_UNITS = {'': 'images', 's': 'seconds', 'm': 'metres'}
DEFAULT_MAX_TURN_DEG = 15.0     # with --every Nm: also a keyframe after this much rotation


@dataclass(frozen=True)
class Every:
    """How keyframes are spaced: every ``value`` images, seconds or metres of odometry."""

    value: float
    unit: str                    # 'images', 'seconds' or 'metres'

    def __str__(self) -> str:
        return (f'every {self.value:g} {self.unit}' if self.unit != 'images' or self.value != 1
                else 'every image')


def parse_every(text: str | int | float | None) -> Every:
    """``'3'`` (every 3rd image), ``'0.5s'`` (seconds) or ``'0.25m'`` (metres of odometry)."""
    if text is None:
        return Every(1, 'images')
    m = re.fullmatch(r'\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(s|m)?\s*', str(text))
    value = float(m.group(1)) if m else float('nan')
    unit = EVERY_UNITS[(m.group(2) or '') if m else '']
    if not (value > 0 and math.isfinite(value)) or (unit == 'images' and value != int(value)):
        raise ValueError(f'--every must be N (every N-th image), SECONDSs (e.g. 0.5s) or '
                         f'METRESm (e.g. 0.25m, needs odometry), got {text!r}')
    return Every(value, unit)


def select_keyframes(stamps_ns: Sequence[int], every: Every,
                     positions: np.ndarray | None = None, quats: np.ndarray | None = None,
                     max_turn_deg: float = DEFAULT_MAX_TURN_DEG) -> list[int]:
    """Pick the keyframes among images in time order (the first is always one): indices.

    By count: every N-th image. By time: the first image at least ``every.value`` seconds
    after the previous keyframe. By motion (needs ``positions`` and ``quats``, odometry of
    each image): the first image at least ``every.value`` metres from the previous keyframe
    or turned ``max_turn_deg`` from it, since a turn on the spot changes the view as much as
    a step does.
    """
    n = len(stamps_ns)
    if n == 0:
        return []
    if every.unit == 'images':
        return list(range(0, n, int(every.value)))
    if every.unit == 'metres' and (positions is None or quats is None):
        raise ValueError(f'--every {every.value:g}m spaces keyframes by odometry: give '
                         '--odom-topic or --odom-tf, or space them by time (--every 0.5s)')
    keep = [0]
    for i in range(1, n):
        last = keep[-1]
        if every.unit == 'seconds':
            if (int(stamps_ns[i]) - int(stamps_ns[last])) / NS >= every.value:
                keep.append(i)
            continue
        moved = float(np.linalg.norm(positions[i] - positions[last]))
        turned = float(orientation_error_deg(quats[i], quats[last]))
        if moved >= every.value or turned >= max_turn_deg:
            keep.append(i)
    return keep


@dataclass
class Keyframes:
    """Keyframe images written to a folder, in time order, and what was left out."""

    folder: Path
    files: list[str]                 # file names in ``folder``
    positions: list[int]             # position of each in the image topic
    stamps_ns: list[int]
    odometry: list[np.ndarray] | None   # 4x4 camera-to-odom of each, or None without odometry
    images: int                      # images on the topic
    without_odometry: int            # images that had no odometry within the tolerance
    odometry_source: str | None

    def __len__(self) -> int:
        return len(self.files)


def _image_stamps(bag: Bag, topic: str) -> np.ndarray:
    """Header stamps (receive time where a stamp is 0) of every image of ``topic``."""
    stamps = []
    for msg in bag.messages([topic]):
        try:
            stamp = header_stamp_ns(msg.data)
        except ValueError:
            stamp = 0
        stamps.append(stamp if stamp > 0 else msg.log_ns)
    return np.asarray(stamps, np.int64)


def bag_keyframes(path: str | Path, image_topic: str, folder: str | Path, every: Every,
                  odom_topic: str | None = None, odom_tf: str | None = None,
                  tolerance: float = DEFAULT_TOLERANCE,
                  max_turn_deg: float = DEFAULT_MAX_TURN_DEG,
                  log: Callable[[str], None] | None = None) -> Keyframes:
    """Pick a bag's keyframes and write their images into ``folder`` (``NNNNNN.png|jpg``).

    Names are the image's position in the topic, zero-padded (the ``posed`` layout's order).
    JPEG / PNG CompressedImages are copied byte for byte, raw images written as PNG. With
    odometry (``odom_topic`` or ``odom_tf`` ``PARENT:CHILD``), each keyframe carries the
    interpolated camera-to-odom pose of its stamp. A bag without the topic raises
    :class:`BagError` naming the topics it has.
    """
    path, folder = Path(path), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with Bag(path) as bag:
        bag.require(image_topic, IMAGE_TYPES, '--image-topic')
        if odom_topic is None and odom_tf is None:
            stamps = _image_stamps(bag, image_topic)
            ok = np.ones(len(stamps), bool)
            pos = quat = None
            source = None
        else:
            scan = scan_bag(bag, image_topic, odom_topic, odom_tf, tolerance)
            stamps, ok, pos, quat = scan.stamps_ns, scan.gt_ok, scan.gt_pos, scan.gt_quat
            source = scan.gt_source
        if len(stamps) == 0:
            raise BagError(f'no messages on {image_topic}; the bag has: '
                           f'{bag.describe_topics()}', bag.path)
        usable = np.flatnonzero(ok)
        order = usable[np.argsort(stamps[usable], kind='stable')]
        chosen = select_keyframes(stamps[order], every,
                                  None if pos is None else pos[order],
                                  None if quat is None else quat[order], max_turn_deg)
        wanted = sorted(int(order[k]) for k in chosen)
        want = set(wanted)
        files, positions = [], []
        i = -1
        for msg in bag.messages([image_topic]):
            i += 1
            if i in want:
                files.append(_write_image(folder, i, msg.msgtype, bag.deserialize(msg),
                                          bag.path))
                positions.append(i)
                if log and len(files) % 100 == 0:
                    log(f'  {path.name}: {len(files)}/{len(wanted)} keyframes written')
            if i >= wanted[-1]:
                break
    odometry = None if pos is None else [matrix_from_pose(pos[i], quat[i]) for i in positions]
    return Keyframes(folder, files, positions, [int(stamps[i]) for i in positions], odometry,
                     len(stamps), int((~ok).sum()), source)
