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

"""Ground truth of a bag's images: poses from a topic or the TF tree, matched by time.

Ground truth and images are recorded by different nodes at different rates, so each image
gets the pose at its header stamp from :meth:`Trajectory.at`; images without one are
counted and reported (:attr:`BagScan.outside`), never dropped silently.

Two ground-truth matching rules, on purpose (``test_bags.py::test_two_matching_rules``):

========================  ==============================  ==================================
                          bags (:meth:`Trajectory.at`)    TUM RGB-D folders
                                                          (``formats.read_dataset``)
========================  ==============================  ==================================
rule                      interpolate between the two     the nearest sample, as it is
                          samples around the stamp
                          (linear position, slerp); else
                          the nearest one
tolerance                 ``--gt-tolerance`` (0.05 s)     ``max_dt`` (0.02 s)
                          to each sample used
without a match           not scored, counted             an error, or ``drop_unmatched``
why                       pose topics, odometry and TF    the TUM benchmark's own
                          come at 10-50 Hz, so the        association (``associate.py``),
                          nearest sample can be 50 ms     so results compare with published
                          off at walking speed            ones; its motion capture runs at
                                                          100 Hz and more
========================  ==============================  ==================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from camreloc_ros.core.bags.errors import BagCorruptError, BagDamage, BagDamagedError, BagError
from camreloc_ros.core.bags.reader import Bag, BagMessage, IMAGE_TYPES
from camreloc_ros.core.robot.tf_tree import strip_frame, TransformError, TransformTree
from camreloc_ros.core.geometry import (interpolate_pose, pose_compose, pose_invert,
                                        quat_normalize, unit_quat_problem)
from camreloc_ros.core.robot.messages import header_stamp_ns, NS, seconds_to_ns, stamp_ns

POSE_TYPES = ('geometry_msgs/msg/PoseStamped', 'geometry_msgs/msg/PoseWithCovarianceStamped',
              'nav_msgs/msg/Odometry', 'geometry_msgs/msg/TransformStamped')
TF_TYPE = 'tf2_msgs/msg/TFMessage'
TF_TOPICS = ('/tf', '/tf_static')
DEFAULT_TOLERANCE = 0.05


def _pose_of(msgtype: str, msg: Any) -> tuple[np.ndarray, np.ndarray]:
    if msgtype == 'geometry_msgs/msg/PoseStamped':
        p, q = msg.pose.position, msg.pose.orientation
    elif msgtype == 'geometry_msgs/msg/TransformStamped':
        p, q = msg.transform.translation, msg.transform.rotation
    else:   # PoseWithCovarianceStamped, Odometry
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return (np.array([p.x, p.y, p.z], np.float64), np.array([q.x, q.y, q.z, q.w], np.float64))


def _checked_quat(q: np.ndarray, where: str, path: Path) -> np.ndarray:
    problem = unit_quat_problem(q)
    if problem:
        raise BagError(f'{where} ({q.tolist()}): {problem}', path)
    return q / np.linalg.norm(q)


class Trajectory:
    """Time-sorted poses of one frame pair; :meth:`at` interpolates within a tolerance."""

    def __init__(self, stamps_ns: Sequence[int], positions: np.ndarray,
                 quaternions: np.ndarray):
        stamps = np.asarray(stamps_ns, np.int64)
        pos = np.asarray(positions, np.float64).reshape(-1, 3)
        quat = np.asarray(quaternions, np.float64).reshape(-1, 4)
        if not len(stamps) == len(pos) == len(quat):
            raise ValueError(f'{len(stamps)} stamps, {len(pos)} positions and {len(quat)} '
                             'quaternions; expected one of each per sample')
        order = np.argsort(stamps, kind='stable')
        stamps, pos, quat = stamps[order], pos[order], quat[order]
        keep = np.r_[stamps[1:] != stamps[:-1], True][:len(stamps)]   # repeated: the last wins
        self.stamps_ns, self.positions, self.quaternions = stamps[keep], pos[keep], quat[keep]

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def at(self, times_ns: Sequence[int], tolerance_s: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pose at each time: ``(positions (M, 3), quaternions (M, 4), ok (M,))``.

        A time between two samples each no further than ``tolerance_s`` is interpolated
        (linear + slerp); otherwise a sample within ``tolerance_s`` is used as it is; else
        ``ok`` is False and the pose is NaN.
        """
        t = np.asarray(times_ns, np.int64).reshape(-1)
        m = len(t)
        pos = np.full((m, 3), np.nan)
        quat = np.full((m, 4), np.nan)
        ok = np.zeros(m, bool)
        n = len(self.stamps_ns)
        if n == 0 or m == 0:
            return pos, quat, ok
        tol = seconds_to_ns(tolerance_s)
        hi = np.searchsorted(self.stamps_ns, t, side='left')     # first sample >= t
        lo = hi - 1                                             # last sample < t
        has_lo, has_hi = lo >= 0, hi < n
        d_lo = np.where(has_lo, t - self.stamps_ns[np.clip(lo, 0, n - 1)], np.iinfo(np.int64).max)
        d_hi = np.where(has_hi, self.stamps_ns[np.clip(hi, 0, n - 1)] - t, np.iinfo(np.int64).max)
        lo_ok, hi_ok = d_lo <= tol, d_hi <= tol
        exact = has_hi & (d_hi == 0)
        both = lo_ok & hi_ok & ~exact
        only_hi = hi_ok & ~both
        only_lo = lo_ok & ~hi_ok
        for sel, idx in ((only_hi, hi), (only_lo, lo)):
            pos[sel] = self.positions[idx[sel]]
            quat[sel] = quat_normalize(self.quaternions[idx[sel]]) if sel.any() else quat[sel]
        if both.any():
            i0, i1 = lo[both], hi[both]
            alpha = d_lo[both] / (d_lo[both] + d_hi[both]).astype(np.float64)
            pos[both], quat[both] = interpolate_pose(
                self.positions[i0], self.quaternions[i0], self.positions[i1],
                self.quaternions[i1], alpha)
        ok = both | only_hi | only_lo
        return pos, quat, ok


def parse_tf_pair(text: str) -> tuple[str, str]:
    """``'map:camera'`` -> ``('map', 'camera')`` (leading slashes dropped, as tf2 does)."""
    parts = str(text).split(':')
    if len(parts) != 2 or not all(p.strip().strip('/') for p in parts):
        raise ValueError(f'--gt-tf expects PARENT:CHILD (e.g. map:camera), got {text!r}')
    return parts[0].strip().strip('/'), parts[1].strip().strip('/')


class TfTree(TransformTree):
    """Every ``/tf`` and ``/tf_static`` transform of a bag, looked up at many stamps at once.

    The tree itself (one parent per frame, chains through the common ancestor) is the live
    node's :class:`~camreloc_ros.core.robot.tf_tree.TransformTree`, kept whole (no cache time).
    What differs is the lookup: :meth:`lookup_many` takes all image stamps of a bag in one call and
    interpolates each dynamic edge within a tolerance (:meth:`Trajectory.at`, see the table
    above) where tf2 needs the exact bracket, and a stamp without a close sample is not ``ok``
    instead of an error. A second parent is an error: a recording is evidence to score
    against, so a tree two publishers disagree on is not guessed at.
    """

    def __init__(self) -> None:
        super().__init__(cache_ns=None)
        self._trajectories: dict[str, Trajectory] = {}

    def add(self, parent: str, child: str, stamp_ns: int, position: np.ndarray,
            quaternion: np.ndarray, static: bool = False) -> None:
        """Add one transform ``parent -> child`` (/tf_static wins over /tf for a child)."""
        parent, child = strip_frame(parent), strip_frame(child)
        existing = self.parent(child)
        if existing is not None and existing != parent:
            raise ValueError(f'frame {child!r} has two parents in the bag, {existing!r} '
                             f'and {parent!r}; a TF tree allows one')
        if self.is_static(child) and not static:
            return
        self._trajectories.pop(child, None)
        super().add(parent, child, stamp_ns, position, quaternion, static)

    def _trajectory(self, frame: str) -> Trajectory:
        traj = self._trajectories.get(frame)
        if traj is None:
            stamps, poses = self.samples(frame)
            traj = self._trajectories[frame] = Trajectory(
                stamps, np.array([p for p, _ in poses]), np.array([q for _, q in poses]))
        return traj

    def chain(self, parent: str, child: str) -> tuple[list[str], list[str]]:
        """Frames from ``child`` and from ``parent`` up to their common ancestor (inclusive)."""
        for frame in (parent, child):
            if strip_frame(frame) not in self.frames:
                raise ValueError(f'frame {frame!r} is not in the TF tree of the bag; it has '
                                 f'{self.describe()}')
        try:
            return self.chains(parent, child)
        except TransformError as exc:
            raise ValueError(f'{exc} in the bag') from None

    def path_samples(self, parent: str, child: str) -> tuple[list[str], np.ndarray]:
        """Frames between ``parent`` and ``child``, and their dynamic transforms' stamps.

        The stamps (sorted) are what :meth:`lookup_many` interpolates; both go into reports.
        """
        up_child, up_parent = self.chain(parent, child)
        dynamic = [self._trajectory(f).stamps_ns for f in up_child[:-1] + up_parent[:-1]
                   if not self.is_static(f)]
        stamps = np.sort(np.concatenate(dynamic)) if dynamic else np.zeros(0, np.int64)
        return up_child[1:-1] + up_parent[1:-1], stamps

    def _from_root(self, up: list[str], times: np.ndarray, tol: float):
        m = len(times)
        pos = np.zeros((m, 3))
        quat = np.tile([0.0, 0.0, 0.0, 1.0], (m, 1))
        ok = np.ones(m, bool)
        for frame in up[:-1]:
            if self.is_static(frame):
                p, q = self.samples(frame)[1][-1]
                e_pos, e_quat, e_ok = np.tile(p, (m, 1)), np.tile(q, (m, 1)), np.ones(m, bool)
            else:
                e_pos, e_quat, e_ok = self._trajectory(frame).at(times, tol)
            e_pos, e_quat = np.where(e_ok[:, None], e_pos, 0.0), np.where(
                e_ok[:, None], e_quat, [0.0, 0.0, 0.0, 1.0])
            pos, quat = pose_compose(e_pos, e_quat, pos, quat)
            ok &= e_ok
        return pos, quat, ok

    def lookup_many(self, parent: str, child: str, times_ns: Sequence[int],
                    tolerance_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pose of ``child`` in ``parent`` at each time, chaining intermediate frames.

        Every dynamic transform on the way is interpolated within ``tolerance_s``; a time
        where any of them has no sample close enough is not ``ok`` (NaN pose).
        """
        up_child, up_parent = self.chain(parent, child)
        times = np.asarray(times_ns, np.int64).reshape(-1)
        c_pos, c_quat, c_ok = self._from_root(up_child, times, tolerance_s)
        p_pos, p_quat, p_ok = self._from_root(up_parent, times, tolerance_s)
        inv_pos, inv_quat = pose_invert(p_pos, p_quat)
        pos, quat = pose_compose(inv_pos, inv_quat, c_pos, c_quat)
        ok = c_ok & p_ok
        pos[~ok] = np.nan
        quat[~ok] = np.nan
        return pos, quat, ok


@dataclass
class BagScan:
    """Images of one topic (in bag order) with their ground truth, from a first pass."""

    path: Path
    image_topic: str
    image_type: str
    stamps_ns: np.ndarray        # (N,) header stamps (log time where a stamp is 0)
    log_ns: np.ndarray           # (N,) receive times
    gt_pos: np.ndarray           # (N, 3), NaN where not ok
    gt_quat: np.ndarray          # (N, 4)
    gt_ok: np.ndarray            # (N,) ground truth within the tolerance
    gt_source: str
    gt_samples: int
    tolerance: float
    messages_read: int = 0
    truncated: BagCorruptError | None = None

    def __len__(self) -> int:
        return len(self.stamps_ns)

    @property
    def outside(self) -> int:
        """Images without ground truth within the tolerance (not scored)."""
        return int((~self.gt_ok).sum())

    def stamps_s(self) -> list[float]:
        """Image stamps in seconds (for the engine's time-gap rule and TUM files)."""
        return [int(s) / NS for s in self.stamps_ns]

    def names(self, indices: Iterable[int] | None = None) -> list[str]:
        """Frame names ``NNNNNN_SEC.NSEC``: image position in the topic and its stamp."""
        idx = range(len(self)) if indices is None else indices
        return [f'{i:06d}_{int(self.stamps_ns[i]) // NS}.{int(self.stamps_ns[i]) % NS:09d}'
                for i in idx]

    def coverage(self) -> str:
        """Why images may lack ground truth: the time ranges of both, for messages."""
        def span(a) -> str:
            return f'[{a[0] / NS:.3f}, {a[-1] / NS:.3f}] s' if len(a) else '(empty)'
        return (f'images {span(np.sort(self.stamps_ns))}, ground truth '
                f'{self.gt_source} {span(self._gt_stamps)} ({self.gt_samples} samples)')

    _gt_stamps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    damage: BagDamage | None = None    # what was skipped (only with allow_damaged)

    def undecodable(self) -> set[int]:
        """Return the positions of the images that did not decode; no model sees them."""
        if self.damage is None:
            return set()
        return {u['index'] for u in self.damage.undecodable
                if u.get('index') is not None and u['topic'] == self.image_topic}


def scan_bag(bag: Bag, image_topic: str, gt_topic: str | None = None,
             gt_tf: str | tuple[str, str] | None = None,
             tolerance: float = DEFAULT_TOLERANCE, allow_truncated: bool = False,
             require_gt: bool = True, allow_damaged: bool = False) -> BagScan:
    """First pass: image stamps and their ground truth (``gt_topic`` or ``gt_tf``).

    Raises :class:`BagError` for unknown topics or wrong types (listing the bag's topics),
    when no image has ground truth within ``tolerance`` (and ``require_gt``),
    :class:`BagCorruptError` for a truncated bag unless ``allow_truncated`` (its ``partial``
    is the scan of the messages read), and :class:`BagDamagedError` for CRC mismatches or
    undecodable messages unless ``allow_damaged``: then they are skipped and listed in
    ``scan.damage`` (:meth:`BagScan.undecodable` gives the images among them).
    """
    if (gt_topic is None) == (gt_tf is None):
        raise ValueError('give the ground truth as exactly one of --gt-topic TOPIC and '
                         '--gt-tf PARENT:CHILD')
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f'--gt-tolerance must be a non-negative number of seconds, '
                         f'got {tolerance}')
    damage = bag.verify()
    if damage and not allow_damaged:
        raise BagDamagedError(bag.path, damage)
    info = bag.require(image_topic, IMAGE_TYPES, '--image-topic')
    topics = [image_topic]
    tf_pair = None
    if gt_topic is not None:
        gt_info = bag.require(gt_topic, POSE_TYPES, '--gt-topic')
        topics.append(gt_topic)
        source = f'{gt_topic} ({gt_info.msgtype.rsplit("/", 1)[-1]})'
    else:
        tf_pair = parse_tf_pair(gt_tf) if isinstance(gt_tf, str) else tuple(gt_tf)
        present = [t for t in TF_TOPICS if t in bag.topics]
        if not present:
            raise BagError(f'--gt-tf {tf_pair[0]}:{tf_pair[1]} needs /tf or /tf_static, but '
                           f'the bag has: {bag.describe_topics()}', bag.path)
        for t in present:
            bag.require(t, (TF_TYPE,), 'TF topic')
        topics += present
        source = f'TF {tf_pair[0]} -> {tf_pair[1]}'

    stamps, logs = [], []
    gt_stamps, gt_pos, gt_quat = [], [], []
    tree = TfTree()
    truncated = None
    read = 0

    def undecodable(msg: BagMessage, reason: str, index: int | None = None) -> None:
        damage.undecodable.append({'topic': msg.topic, 'log_ns': int(msg.log_ns),
                                   'index': index, 'reason': reason})
        if not allow_damaged:
            raise BagDamagedError(bag.path, damage)

    try:
        for msg in bag.messages(topics):
            read += 1
            if msg.topic == image_topic:
                try:
                    stamp = header_stamp_ns(msg.data)
                except ValueError as exc:
                    undecodable(msg, str(exc), len(stamps))
                    stamp = 0
                stamps.append(stamp if stamp > 0 else msg.log_ns)
                logs.append(msg.log_ns)
                continue
            try:
                obj = bag.deserialize(msg)
            except BagError as exc:
                undecodable(msg, str(exc).split(': ', 1)[-1])
                continue
            if tf_pair is None:
                stamp = stamp_ns(obj.header.stamp) or msg.log_ns
                p, q = _pose_of(msg.msgtype, obj)
                gt_stamps.append(stamp)
                gt_pos.append(p)
                gt_quat.append(_checked_quat(q, f'{msg.topic} at {stamp} ns', bag.path))
            else:
                for tr in obj.transforms:
                    p, q = _pose_of('geometry_msgs/msg/TransformStamped', tr)
                    stamp = stamp_ns(tr.header.stamp) or msg.log_ns
                    q = _checked_quat(q, f'{msg.topic} {tr.header.frame_id} -> '
                                      f'{tr.child_frame_id} at {stamp} ns', bag.path)
                    tree.add(tr.header.frame_id, tr.child_frame_id, stamp, p, q,
                             msg.topic == '/tf_static')
    except BagCorruptError as exc:
        truncated = exc
    stamps_ns = np.asarray(stamps, np.int64)
    n = len(stamps_ns)
    if tf_pair is None:
        traj = Trajectory(gt_stamps, np.array(gt_pos).reshape(-1, 3),
                          np.array(gt_quat).reshape(-1, 4))
        pos, quat, ok = traj.at(stamps_ns, tolerance)
        samples, all_gt = len(traj), traj.stamps_ns
    else:
        try:
            pos, quat, ok = tree.lookup_many(tf_pair[0], tf_pair[1], stamps_ns, tolerance)
        except ValueError as exc:
            if truncated is not None and not allow_truncated:
                raise truncated
            raise BagError(str(exc), bag.path) from None
        via, all_gt = tree.path_samples(*tf_pair)
        if via:
            source += f' (via {", ".join(via)})'
        samples = len(all_gt)
    scan = BagScan(bag.path, image_topic, info.msgtype, stamps_ns, np.asarray(logs, np.int64),
                   pos.reshape(n, 3), quat.reshape(n, 4), ok.reshape(n), source, samples,
                   float(tolerance), read, truncated, all_gt,
                   damage if allow_damaged else None)
    if truncated is not None and not allow_truncated:
        truncated.partial = scan
        raise truncated
    if n == 0:
        raise BagError(f'no messages on {image_topic}' + (
            f' outside the damaged part ({damage.describe()})' if damage else ''), bag.path)
    if require_gt and not scan.gt_ok.any():
        raise BagError(f'none of the {n} images has ground truth within '
                       f'{tolerance:g} s: {scan.coverage()}. Are both stamped in the same '
                       'clock? Raise --gt-tolerance if the ground truth is sparse', bag.path)
    return scan
