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

"""Writing a rosbag2 without ROS: message builders and an atomic bag writer (ROS-free).

Messages are rosbags objects of the same typestore the reader uses, so type names and type
hashes match a robot's and the files open in ``ros2 bag``, RViz and Foxglove. Mcap files get
the CRCs rosbags' writer leaves at 0, so bit-rot in them is found when they are read.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from camreloc_ros.core.bags.errors import BagError
from camreloc_ros.core.bags.groundtruth import TF_TYPE
from camreloc_ros.core.bags.mcap import write_crcs
from camreloc_ros.core.bags.reader import COMPRESSED, IMAGE, STORAGES, typestore
from camreloc_ros.core.io import atomic_folder
from camreloc_ros.core.robot.messages import (compressed_format_string, covariance_fields,
                                              image_fields, quaternion_fields, time_fields,
                                              vector_fields)

# Files a rosbag2 folder holds; --overwrite replaces only folders with nothing else in them.
BAG_FOLDER_SUFFIXES = ('.mcap', '.db3', '.db3-wal', '.db3-shm', '.db3-journal', '.zstd')


class Messages:
    """Builders of the messages the tools write, as rosbags objects of the ROS 2 typestore.

    Field values come from :mod:`camreloc_ros.core.robot.messages`, as for the live node's rclpy
    messages (:mod:`camreloc_ros.ros.conversions`), so both mean and refuse the same.
    """

    def __init__(self) -> None:
        self.types = typestore().types

    def time(self, ns: int) -> Any:
        """``builtin_interfaces/Time`` of integer nanoseconds."""
        return self.types['builtin_interfaces/msg/Time'](**time_fields(ns))

    def header(self, ns: int, frame_id: str) -> Any:
        """``std_msgs/Header``."""
        return self.types['std_msgs/msg/Header'](stamp=self.time(ns), frame_id=frame_id)

    def pose(self, position: Sequence[float], quaternion: Sequence[float]) -> Any:
        """``geometry_msgs/Pose`` of a position and an x, y, z, w quaternion."""
        T = self.types
        return T['geometry_msgs/msg/Pose'](
            position=T['geometry_msgs/msg/Point'](**vector_fields(position)),
            orientation=T['geometry_msgs/msg/Quaternion'](**quaternion_fields(quaternion)))

    def pose_stamped(self, ns: int, frame_id: str, position, quaternion) -> Any:
        """``geometry_msgs/PoseStamped``."""
        return self.types['geometry_msgs/msg/PoseStamped'](
            header=self.header(ns, frame_id), pose=self.pose(position, quaternion))

    def pose_with_covariance_stamped(self, ns: int, frame_id: str, position, quaternion,
                                     covariance: np.ndarray) -> Any:
        """``geometry_msgs/PoseWithCovarianceStamped``; covariance symmetrised, row-major.

        A non-finite covariance is a ``ValueError``, as in the live node.
        """
        T = self.types
        inner = T['geometry_msgs/msg/PoseWithCovariance'](
            pose=self.pose(position, quaternion), covariance=covariance_fields(covariance))
        return T['geometry_msgs/msg/PoseWithCovarianceStamped'](
            header=self.header(ns, frame_id), pose=inner)

    def transform_stamped(self, ns: int, parent: str, child: str, position,
                          quaternion) -> Any:
        """``geometry_msgs/TransformStamped`` parent -> child."""
        T = self.types
        return T['geometry_msgs/msg/TransformStamped'](
            header=self.header(ns, parent), child_frame_id=child,
            transform=T['geometry_msgs/msg/Transform'](
                translation=T['geometry_msgs/msg/Vector3'](**vector_fields(position)),
                rotation=T['geometry_msgs/msg/Quaternion'](**quaternion_fields(quaternion))))

    def tf(self, transforms: list) -> Any:
        """``tf2_msgs/TFMessage``."""
        return self.types[TF_TYPE](transforms=list(transforms))

    def path(self, ns: int, frame_id: str, poses: list) -> Any:
        """``nav_msgs/Path`` of PoseStamped objects."""
        return self.types['nav_msgs/msg/Path'](header=self.header(ns, frame_id),
                                               poses=list(poses))

    def image(self, ns: int, frame_id: str, rgb: np.ndarray) -> Any:
        """``sensor_msgs/Image`` rgb8."""
        rgb = np.ascontiguousarray(rgb, np.uint8)
        return self.types[IMAGE](header=self.header(ns, frame_id), data=rgb.reshape(-1),
                                 **image_fields(rgb, 'rgb8'))

    def compressed(self, ns: int, frame_id: str, data: bytes, codec: str = 'jpeg') -> Any:
        """``sensor_msgs/CompressedImage`` with image_transport's format string."""
        return self.types[COMPRESSED](header=self.header(ns, frame_id),
                                      format=compressed_format_string(codec),
                                      data=np.frombuffer(data, np.uint8))

    def camera_info(self, ns: int, frame_id: str, width: int, height: int, fx: float,
                    fy: float, cx: float, cy: float) -> Any:
        """``sensor_msgs/CameraInfo`` of an undistorted pinhole camera."""
        T = self.types
        k = np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])
        p = np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
        roi = T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
        return T['sensor_msgs/msg/CameraInfo'](
            header=self.header(ns, frame_id), height=int(height), width=int(width),
            distortion_model='plumb_bob', d=np.zeros(5), k=k, r=np.eye(3).reshape(-1), p=p,
            binning_x=0, binning_y=0, roi=roi)


def _qos(durability: str = 'volatile', depth: int = 10, reliable: bool = True) -> Any:
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability[durability.upper()], zero, zero, QosLiveliness.AUTOMATIC, zero,
               False)


def rosbag_folder_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a rosbag2 folder that may be replaced (None when it is one).

    A rosbag2 folder holds ``metadata.yaml`` and its storage files, nothing else: anything
    more (a subfolder, a results file) would be lost with it.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return 'is not a folder' if path.exists() or path.is_symlink() else 'does not exist'
    if not (path / 'metadata.yaml').is_file():
        return 'is not a rosbag2 folder (no metadata.yaml)'
    other = sorted(p.name for p in path.iterdir()
                   if p.name != 'metadata.yaml'
                   and not (p.is_file() and not p.is_symlink()
                            and p.name.endswith(BAG_FOLDER_SUFFIXES)))
    if other:
        return (f'holds more than a rosbag2 ({", ".join(other[:5])}'
                f'{" ..." if len(other) > 5 else ""})')
    return None


class BagWriter:
    """Writes a rosbag2 atomically: into a temporary folder renamed into place on success.

    A crash or an exception leaves no half-written bag (and keeps an older one). An existing
    path is replaced only with ``overwrite`` and only when it is a rosbag2 folder, so a
    mistyped output never deletes other files. Topics are added on first use;
    ``/tf_static`` is offered transient-local as tf2 expects. Mcap files get their CRCs.
    """

    def __init__(self, path: str | Path, storage: str = 'mcap', overwrite: bool = False):
        if storage not in STORAGES:
            raise ValueError(f'storage must be one of {", ".join(STORAGES)}, got {storage!r}')
        self.path = Path(path)
        self.storage = storage
        self.overwrite = overwrite
        self._check_target()
        self._tmp: Path | None = None
        self._stack: contextlib.ExitStack | None = None
        self._writer = None
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.msgs = Messages()

    def _check_target(self) -> None:
        if not (self.path.exists() or self.path.is_symlink()):
            return
        if not self.overwrite:
            raise BagError('exists already; choose another output (--overwrite replaces an '
                           'older rosbag2 folder)', self.path)
        problem = rosbag_folder_problem(self.path)
        if problem:
            raise BagError(f'{problem}; only a rosbag2 folder is replaced, so it is left '
                           'as it is', self.path)

    def __enter__(self) -> 'BagWriter':
        from rosbags.rosbag2 import StoragePlugin, Writer
        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        with contextlib.ExitStack() as stack:
            self._tmp = stack.enter_context(atomic_folder(self.path, overwrite=self.overwrite))
            self._writer = Writer(self._tmp, version=9, storage_plugin=plugin)
            self._writer.open()
            self._stack = stack.pop_all()
        return self

    def add_topic(self, topic: str, msgtype: str, qos: Any = None) -> None:
        """Register a topic (done by :meth:`write` on first use with default QoS)."""
        if topic in self._conns:
            return
        if qos is None:
            qos = _qos('transient_local', 1) if topic == '/tf_static' else \
                _qos('volatile', 100 if topic == '/tf' else 10)
        self._conns[topic] = self._writer.add_connection(
            topic, msgtype, typestore=typestore(), offered_qos_profiles=[qos])
        self.counts[topic] = 0

    def write(self, topic: str, msgtype: str, log_ns: int, msg: Any) -> None:
        """Write a rosbags message object, or raw CDR ``bytes`` of ``msgtype``."""
        self.add_topic(topic, msgtype)
        data = msg if isinstance(msg, (bytes, bytearray, memoryview)) else \
            typestore().serialize_cdr(msg, msgtype)
        self._writer.write(self._conns[topic], int(log_ns), bytes(data))
        self.counts[topic] += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        writer, self._writer = self._writer, None
        tmp, self._tmp = self._tmp, None
        stack, self._stack = self._stack, None
        if exc_type is not None:
            try:
                writer.abort()
            finally:
                stack.__exit__(exc_type, exc, tb)    # removes the temporary folder
            return
        with stack:     # renames the finished bag into place, unless this raises
            writer.close()
            if self.storage == 'mcap':
                for f in tmp.glob('*.mcap'):
                    write_crcs(f)
            self._check_target()    # nothing else appeared at the path meanwhile
