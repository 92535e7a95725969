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

"""Rosbag2 files without ROS: images and ground truth in, predictions out (ROS-free).

One job per module; the public names are all importable from here:

- :mod:`.reader`: :class:`Bag` (topics, raw messages, deserialisation), salvage of bags cut
  short, with :mod:`.mcap` (record-level mcap: CRC checks, linear reads, CRCs for written
  files) and :mod:`.errors` (:class:`BagError`, :class:`BagCorruptError`,
  :class:`BagDamage`).
- :mod:`.groundtruth`: :class:`Trajectory`, :class:`TfTree` and :func:`scan_bag`: each
  image's ground truth, and the two ground-truth matching rules (bags vs TUM folders).
- :mod:`.extract`: a bag's posed images as training frames (cached), images in order.
- :mod:`.camera`: the camera intrinsics of a bag's CameraInfo.
- :mod:`.keyframes`: a plain recording's keyframes (by count, time or odometry motion)
  written to a folder with their odometry, for structure from motion.
- :mod:`.writer`: :class:`Messages` and the atomic :class:`BagWriter`.

May import: ``data`` (frames and image decoding), ``robot`` (stamps, message fields, the TF
tree), ``geometry``, ``io``. Never a model, ``inference`` or ``localization``: a bag is data.
"""

from camreloc_ros.core.bags.camera import (CAMERA_INFO, camera_info_topic, camera_intrinsics,
                                           camera_matrix)
from camreloc_ros.core.bags.errors import BagCorruptError, BagDamage, BagDamagedError, BagError
from camreloc_ros.core.bags.extract import (bag_digest, decode_image, decoded_images,
                                            default_extract_dir, extract_frames,
                                            EXTRACT_VERSION, iter_images, SIGNATURES)
from camreloc_ros.core.bags.groundtruth import (BagScan, DEFAULT_TOLERANCE, parse_tf_pair,
                                                POSE_TYPES, scan_bag, TF_TOPICS, TF_TYPE,
                                                TfTree, Trajectory)
from camreloc_ros.core.bags.keyframes import (bag_keyframes, Every, Keyframes, parse_every,
                                              select_keyframes)
from camreloc_ros.core.bags.mcap import MCAP_MAGIC
from camreloc_ros.core.bags.reader import (Bag, BagMessage, COMPRESSED, IMAGE, IMAGE_TYPES,
                                           STORAGES, TopicInfo, typestore)
from camreloc_ros.core.bags.writer import (BAG_FOLDER_SUFFIXES, BagWriter, Messages,
                                           rosbag_folder_problem)
from camreloc_ros.core.geometry import QUAT_NORM_TOL
from camreloc_ros.core.robot.messages import header_stamp_ns, NS

__all__ = [
    'BagError', 'BagCorruptError', 'BagDamagedError', 'BagDamage', 'Bag', 'BagMessage',
    'TopicInfo', 'BagWriter',
    'Trajectory', 'TfTree', 'BagScan', 'typestore', 'scan_bag', 'iter_images',
    'decoded_images', 'extract_frames', 'parse_tf_pair', 'header_stamp_ns',
    'decode_image', 'default_extract_dir', 'bag_digest', 'Messages',
    'rosbag_folder_problem',
    'STORAGES', 'IMAGE', 'COMPRESSED', 'IMAGE_TYPES', 'POSE_TYPES', 'TF_TYPE', 'TF_TOPICS',
    'DEFAULT_TOLERANCE', 'QUAT_NORM_TOL', 'EXTRACT_VERSION', 'NS', 'MCAP_MAGIC',
    'BAG_FOLDER_SUFFIXES', 'SIGNATURES', 'CAMERA_INFO', 'camera_info_topic',
    'camera_intrinsics', 'camera_matrix', 'bag_keyframes', 'Every', 'Keyframes',
    'parse_every', 'select_keyframes',
]
