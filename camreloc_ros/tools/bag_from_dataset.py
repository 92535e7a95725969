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

"""``camreloc bag-from-dataset DATA OUT --format F``: a posed dataset as a rosbag2.

So the live node, ``bag-eval``, ``bag-play``, RViz and Foxglove can be tried on any dataset
the readers know. Topics: ``/camera/image_raw`` (Image rgb8) or, with ``--compressed``,
``/camera/image_raw/compressed`` (CompressedImage JPEG: a dataset's JPEG files are copied
byte for byte, other images encoded), ``/camera/camera_info`` when intrinsics are known,
``/ground_truth/pose`` (PoseStamped in ``map``) and ``/tf`` (map -> camera_gt). Frames
without timestamps are stamped ``start + index / rate``, so held-out blocks of a split
leave time gaps (temporal windows restart there, as in ``evaluate``).

``--odometry drift`` adds what a robot records instead of ground truth: ``/odom``
(PoseStamped in ``odom``) and ``/tf`` odom -> camera, the dataset's motion with a seeded drift
(:mod:`camreloc_ros.core.robot.odometry`); with ``--no-ground-truth`` the bag carries nothing
else, the recording ``camreloc reconstruct`` starts from on a robot (docs/walkthrough.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
import time

import cv2
import numpy as np

from camreloc_ros.core.bags import BagWriter, COMPRESSED, IMAGE, SIGNATURES, STORAGES
from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.data.formats import FORMATS, read_dataset
from camreloc_ros.core.data.split import SPLIT_DEFAULTS, split_dataset, SPLIT_NAMES
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.geometry import pose_from_matrix
from camreloc_ros.core.robot.messages import NS, seconds_to_ns
from camreloc_ros.core.robot.odometry import drifted_odometry
from camreloc_ros.tools.common import (frame_stamps, refuse_output_in_inputs, require_exists,
                                       tool_logging)

logger = logging.getLogger('camreloc_ros')

IMAGE_TOPIC = '/camera/image_raw'
INFO_TOPIC = '/camera/camera_info'
GT_TOPIC = '/ground_truth/pose'
ODOM_TOPIC = '/odom'
ODOMETRY = ('none', 'drift')
# Stamps of datasets without times start here (2023-11-14): a stamp of 0 means "latest" to
# tf2 lookups, so a bag never starts at 0.
DEFAULT_START = 1_700_000_000.0

default_conf = {
    'format': None,
    'split': 'all',          # all | train | test (block split for formats without one)
    'block': SPLIT_DEFAULTS['block'],
    'every': SPLIT_DEFAULTS['every'],
    'compressed': False,
    'quality': 95,           # JPEG quality for images that are not JPEG files already
    'rate': 10.0,            # Hz, for frames without timestamps
    'start_time': DEFAULT_START,
    'storage': 'mcap',
    'limit': None,           # only the first N frames of the split
    'overwrite': False,
    'map_frame': 'map',
    'camera_frame': 'camera',
    'gt_frame': 'camera_gt',
    'odometry': 'none',      # none | drift: /odom and /tf odom -> camera with a seeded drift
    'odometry_seed': 0,
    'odom_frame': 'odom',
    'ground_truth': True,    # /ground_truth/pose and /tf map -> camera_gt
}


def _stamps_ns(frames: list, conf: dict) -> list[int]:
    """Frame timestamps when every frame has one, else start + index / rate (in ns)."""
    if all(f.timestamp is not None for f in frames):
        return [seconds_to_ns(f.timestamp) for f in frames]
    rel = frame_stamps([dataclasses.replace(f, timestamp=None) for f in frames],
                       fps=float(conf['rate']))
    start = seconds_to_ns(conf['start_time'])
    return [start + seconds_to_ns(r) for r in rel]


def _jpeg_bytes(path: Path, quality: int) -> bytes:
    data = path.read_bytes()
    if data.startswith(SIGNATURES['jpeg']):
        return data
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(read_rgb(path), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f'could not encode {path} as JPEG')
    return buf.tobytes()


def main(conf: dict, paths: dict) -> Path:
    """Write the dataset (split) as a bag; ``paths``: ``data`` and ``out``. Returns ``out``."""
    conf = merge_conf(default_conf, conf)
    tool_logging()
    data = require_exists(paths['data'], 'dataset')
    out = Path(paths['out'])
    refuse_output_in_inputs('out', out, [('dataset', data)])   # BagWriter: only a rosbag2
    if conf['format'] not in FORMATS:
        raise ValueError(f'--format must be one of {", ".join(FORMATS)}, got {conf["format"]!r}')
    if conf['split'] not in SPLIT_NAMES:
        raise ValueError(f'--split must be one of {", ".join(SPLIT_NAMES)}')
    if conf['rate'] <= 0:
        raise ValueError(f'--rate must be positive, got {conf["rate"]}')
    if conf['odometry'] not in ODOMETRY:
        raise ValueError(f'--odometry must be one of {", ".join(ODOMETRY)}, got '
                         f'{conf["odometry"]!r}')
    if conf['odometry'] == 'none' and not conf['ground_truth']:
        raise ValueError('--no-ground-truth without --odometry drift would write a bag with '
                         'no poses at all; give --odometry drift')
    dataset = read_dataset(data, conf['format'])
    frames = split_dataset(dataset, conf['split'], int(conf['block']),
                           int(conf['every'])).frames
    if conf['limit'] is not None:
        frames = frames[:int(conf['limit'])]
    if not frames:
        raise ValueError(f'no frames in the {conf["split"]} split of {data}')
    stamps = _stamps_ns(frames, conf)
    K = dataset.intrinsics
    topic = IMAGE_TOPIC + '/compressed' if conf['compressed'] else IMAGE_TOPIC
    cam, world, gt_frame = conf['camera_frame'], conf['map_frame'], conf['gt_frame']
    odom = None
    if conf['odometry'] == 'drift':   # a new sequence is a new start: no motion observed
        breaks = [k == 0 or f.sequence != frames[k - 1].sequence for k, f in enumerate(frames)]
        odom = drifted_odometry([f.pose_c2w for f in frames], breaks,
                                np.random.default_rng(int(conf['odometry_seed'])))
    t0 = time.perf_counter()
    with BagWriter(out, conf['storage'], overwrite=bool(conf['overwrite'])) as bag:
        m = bag.msgs
        for i, (frame, ns) in enumerate(zip(frames, stamps)):
            if conf['compressed']:
                bag.write(topic, COMPRESSED, ns, m.compressed(
                    ns, cam, _jpeg_bytes(frame.image_path, conf['quality'])))
                shape = None
            else:
                rgb = read_rgb(frame.image_path)
                shape = rgb.shape
                bag.write(topic, IMAGE, ns, m.image(ns, cam, rgb))
            if K is not None:
                if shape is None:
                    shape = (K.height, K.width)
                size = tuple(shape[:2])
                k = K if (K.height, K.width) == size else K.scaled(size[1], size[0])
                bag.write(INFO_TOPIC, 'sensor_msgs/msg/CameraInfo', ns, m.camera_info(
                    ns, cam, k.width, k.height, k.fx, k.fy, k.cx, k.cy))
            tf = []
            if conf['ground_truth']:
                t, q = pose_from_matrix(frame.pose_c2w)
                bag.write(GT_TOPIC, 'geometry_msgs/msg/PoseStamped', ns,
                          m.pose_stamped(ns, world, t, q))
                tf.append(m.transform_stamped(ns, world, gt_frame, t, q))
            if odom is not None:
                t, q = pose_from_matrix(odom[i])
                bag.write(ODOM_TOPIC, 'geometry_msgs/msg/PoseStamped', ns,
                          m.pose_stamped(ns, conf['odom_frame'], t, q))
                tf.append(m.transform_stamped(ns, conf['odom_frame'], cam, t, q))
            bag.write('/tf', 'tf2_msgs/msg/TFMessage', ns, m.tf(tf))
        counts = dict(bag.counts)
    span = (stamps[-1] - stamps[0]) / NS
    logger.info(f'wrote {len(frames)} frames of {data} ({conf["format"]}, {conf["split"]}) to '
                f'{out} ({conf["storage"]}, {span:.1f} s, {time.perf_counter() - t0:.1f} s to '
                'write): ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc bag-from-dataset``."""
    parser.add_argument('data', type=Path, help='dataset root folder (or csv file)')
    parser.add_argument('out', type=Path, help='output bag folder (must not exist)')
    parser.add_argument('--format', required=True, choices=FORMATS, help='dataset format')
    parser.add_argument('--split', choices=SPLIT_NAMES, default=default_conf['split'],
                        help='frames to write (default all)')
    parser.add_argument('--block', type=int, default=default_conf['block'],
                        help='frames per held-out block (formats without an official split)')
    parser.add_argument('--every', type=int, default=default_conf['every'],
                        help='every N-th block is test')
    parser.add_argument('--compressed', action='store_true',
                        help='CompressedImage JPEG instead of raw rgb8 Image')
    parser.add_argument('--quality', type=int, default=default_conf['quality'],
                        help='JPEG quality when images must be encoded')
    parser.add_argument('--rate', type=float, default=default_conf['rate'],
                        help='Hz for frames without timestamps (default %(default)g)')
    parser.add_argument('--start-time', type=float, default=DEFAULT_START,
                        help='stamp (s) of the first frame without a timestamp')
    parser.add_argument('--storage', choices=STORAGES, default=default_conf['storage'],
                        help='rosbag2 storage (default mcap)')
    parser.add_argument('--limit', type=int, default=None, help='only the first N frames')
    parser.add_argument('--odometry', choices=ODOMETRY, default=default_conf['odometry'],
                        help='drift: add /odom and /tf odom -> camera, the motion with a '
                        'seeded drift (what a robot records)')
    parser.add_argument('--odometry-seed', type=int, default=default_conf['odometry_seed'],
                        help='seed of the odometry drift')
    parser.add_argument('--no-ground-truth', dest='ground_truth', action='store_false',
                        help='leave out /ground_truth/pose and /tf map -> camera_gt')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing bag')


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    conf = {'format': args.format, 'split': args.split, 'block': args.block,
            'every': args.every, 'compressed': args.compressed, 'quality': args.quality,
            'rate': args.rate, 'start_time': args.start_time, 'storage': args.storage,
            'limit': args.limit, 'overwrite': args.overwrite, 'odometry': args.odometry,
            'odometry_seed': args.odometry_seed, 'ground_truth': args.ground_truth}
    return main(conf, {'data': args.data, 'out': args.out})
