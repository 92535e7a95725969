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

"""Frames for a robot (REP 105), ROS-free: a TF tree with tf2's semantics and the pose math.

:class:`TransformTree` is what the live node looks transforms up in when tf2_ros does not
import (a PyPI-only install): it stores ``/tf`` and ``/tf_static`` transforms and answers
``lookup(target, source, stamp)`` as tf2's ``BufferCore.lookupTransform`` does: static
transforms hold at every time, dynamic ones are interpolated (linear position, slerp) between
the two samples around the stamp, and a stamp outside a dynamic edge's samples is an
:class:`ExtrapolationError`, never a guess. Stamp ``None`` is tf2's ``Time(0)``: the latest
time every dynamic edge of the chain has.

The pose math turns the model's camera pose into what a robot stack reads:
:func:`base_pose` (the camera pose composed with the extrinsics from TF),
:func:`map_to_odom` (AMCL's ``map -> odom`` from the base pose and ``odom -> base``), and
:func:`base_covariance` (the camera covariance propagated to base_link through the lever arm).
Poses are ``(position (3,), quaternion (4,) x y z w)``: the child frame's pose in the parent.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Iterable, Optional, Tuple

import numpy as np

from camreloc_ros.core.geometry import (interpolate_pose, pose_compose, pose_invert,
                                        quat_normalize, quat_rotate, rigid_shift_jacobian,
                                        shift_covariance)

Pose = Tuple[np.ndarray, np.ndarray]
NS = 1_000_000_000
DEFAULT_CACHE_NS = 10 * NS        # tf2's default cache time (10 s)
MAX_DEPTH = 1000                  # tf2's MAX_GRAPH_DEPTH: a longer chain is a loop

__all__ = ['TransformError', 'FrameLookupError', 'ConnectivityError', 'ExtrapolationError',
           'TransformTree', 'identity_pose', 'base_pose', 'map_to_odom', 'lever_arm_jacobian',
           'base_covariance', 'strip_frame', 'parent_conflict']


class TransformError(Exception):
    """A transform the tree cannot give (tf2.TransformException)."""


class FrameLookupError(TransformError):
    """A frame the tree has never heard of (tf2.LookupException)."""


class ConnectivityError(TransformError):
    """Both frames exist but are in different trees (tf2.ConnectivityException)."""


class ExtrapolationError(TransformError):
    """The stamp is outside the samples of a dynamic edge (tf2.ExtrapolationException).

    ``future``: the stamp is newer than the newest sample, so waiting for TF may help.
    """

    def __init__(self, message: str, future: bool = False) -> None:
        super().__init__(message)
        self.future = future


def strip_frame(frame: str) -> str:
    """Frame id without the leading ``/`` ROS 1 allowed (tf2 and AMCL strip it too)."""
    return frame.strip().lstrip('/')


def identity_pose() -> Pose:
    """Return the identity transform."""
    return np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0])


@dataclass
class _Edge:
    """The transforms ``parent -> child`` of one child frame, in stamp order."""

    parent: str
    static: bool = False
    stamps: list = field(default_factory=list)       # int ns, sorted
    poses: list = field(default_factory=list)        # (position, quaternion)

    def latest(self) -> int:
        return self.stamps[-1] if self.stamps else 0

    def at(self, stamp_ns: Optional[int], child: str) -> Pose:
        """Return the child's pose in the parent at ``stamp_ns`` (None: the latest)."""
        if self.static or stamp_ns is None:
            return self.poses[-1]
        stamps = self.stamps
        i = bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return self.poses[i]
        if i == 0 or i == len(stamps):
            when = 'past' if i == 0 else 'future'
            raise ExtrapolationError(
                f'lookup would require extrapolation into the {when}: transform '
                f'{self.parent} -> {child} requested at {stamp_ns / NS:.9f} s, but its samples '
                f'span {stamps[0] / NS:.9f} .. {stamps[-1] / NS:.9f} s', future=i > 0)
        t0, t1 = stamps[i - 1], stamps[i]
        (p0, q0), (p1, q1) = self.poses[i - 1], self.poses[i]
        return interpolate_pose(p0, q0, p1, q1, (stamp_ns - t0) / (t1 - t0))


class TransformTree:
    """``/tf`` + ``/tf_static`` transforms, looked up as tf2 does (not thread-safe: lock it).

    A child frame has one parent. A transform that gives it another one replaces the edge (as
    tf2 does, the newest parent wins) and the frame is remembered in :attr:`reparented`, so a
    node can tell that two publishers disagree about the tree.
    """

    def __init__(self, cache_ns: Optional[int] = DEFAULT_CACHE_NS) -> None:
        self.cache_ns = None if cache_ns is None else int(cache_ns)   # None: keep every sample
        self._edges: dict[str, _Edge] = {}
        self.reparented: dict[str, set[str]] = {}

    # ---- filling -----------------------------------------------------------------------
    def add(self, parent: str, child: str, stamp_ns: int, position: Iterable[float],
            quaternion: Iterable[float], static: bool = False) -> None:
        """Add one transform: ``child``'s pose in ``parent`` at ``stamp_ns``."""
        parent, child = strip_frame(parent), strip_frame(child)
        if not parent or not child:
            raise ValueError(f'a transform needs two frame ids, got parent {parent!r} and '
                             f'child {child!r}')
        if parent == child:
            raise ValueError(f'a transform from {parent!r} to itself is not a tree edge')
        pose = (np.asarray(position, np.float64).reshape(3).copy(),
                quat_normalize(np.asarray(quaternion, np.float64).reshape(4)))
        edge = self._edges.get(child)
        if edge is not None and edge.parent != parent:
            self.reparented.setdefault(child, set()).update({edge.parent, parent})
            edge = None
        if edge is None or edge.static != static:
            edge = self._edges[child] = _Edge(parent, static)
        if static:
            edge.stamps, edge.poses = [int(stamp_ns)], [pose]
            return
        stamp_ns = int(stamp_ns)
        i = bisect_left(edge.stamps, stamp_ns)
        if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
            edge.poses[i] = pose                   # tf2 keeps one sample per stamp
        else:
            edge.stamps.insert(i, stamp_ns)
            edge.poses.insert(i, pose)
        cut = 0 if self.cache_ns is None else bisect_left(edge.stamps,
                                                          edge.stamps[-1] - self.cache_ns)
        if cut > 0:                                # older than the cache time: dropped
            del edge.stamps[:cut], edge.poses[:cut]

    def clear(self) -> None:
        """Forget everything (a jump back in time, cleanup)."""
        self._edges.clear()
        self.reparented.clear()

    # ---- queries -----------------------------------------------------------------------
    @property
    def frames(self) -> set[str]:
        """Every frame named by a transform."""
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def parent(self, frame: str) -> Optional[str]:
        """Return the parent of ``frame`` (None for a root or an unknown frame)."""
        edge = self._edges.get(strip_frame(frame))
        return None if edge is None else edge.parent

    def is_static(self, frame: str) -> bool:
        """Whether ``frame``'s edge to its parent came from ``/tf_static``."""
        edge = self._edges.get(strip_frame(frame))
        return edge is not None and edge.static

    def describe(self) -> str:
        """``parent -> child`` for every edge, for error messages."""
        return ', '.join(f'{e.parent} -> {c}{" (static)" if e.static else ""}'
                         for c, e in sorted(self._edges.items())) or '(no transforms)'

    def _up(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > MAX_DEPTH:
                raise TransformError(f'the TF tree has a loop through {frame!r}: '
                                     f'{self.describe()}')
        return chain

    def samples(self, frame: str) -> Tuple[list[int], list[Pose]]:
        """Stamps (ns, sorted) and poses of ``frame``'s edge to its parent (copies)."""
        edge = self._edges[strip_frame(frame)]
        return list(edge.stamps), list(edge.poses)

    def chains(self, target: str, source: str) -> Tuple[list[str], list[str]]:
        """Frames from ``source`` and from ``target`` up to their common ancestor (inclusive)."""
        target, source = strip_frame(target), strip_frame(source)
        known = self.frames
        for role, frame in (('target', target), ('source', source)):
            if frame not in known:
                raise FrameLookupError(f'{role} frame {frame!r} does not exist in the TF tree '
                                       f'({self.describe()})')
        up_source, up_target = self._up(source), self._up(target)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise ConnectivityError(
                f'could not find a connection between {target!r} and {source!r}: they are '
                f'not part of the same tree ({self.describe()})')
        return (up_source[:up_source.index(common) + 1],
                up_target[:up_target.index(common) + 1])

    def latest_common_stamp(self, target: str, source: str) -> int:
        """tf2's latest common time of the chain (0 when every edge is static)."""
        up_source, up_target = self.chains(strip_frame(target), strip_frame(source))
        stamps = [self._edges[f].latest() for f in up_source[:-1] + up_target[:-1]
                  if not self._edges[f].static]
        return min(stamps) if stamps else 0

    def _from_ancestor(self, chain: list[str], stamp_ns: Optional[int]) -> Pose:
        """Pose of ``chain[0]`` in ``chain[-1]`` (its ancestor)."""
        pos, quat = identity_pose()
        for frame in chain[:-1]:   # child first: T_anc_frame = T_anc_parent * T_parent_frame
            p, q = self._edges[frame].at(stamp_ns, frame)
            pos, quat = pose_compose(p, q, pos, quat)
        return pos, quat

    def lookup(self, target: str, source: str, stamp_ns: Optional[int] = None) -> Pose:
        """Pose of ``source`` in ``target`` at ``stamp_ns`` (tf2's ``lookup_transform``).

        The returned transform maps points from ``source`` into ``target`` (a message with
        ``header.frame_id = target``, ``child_frame_id = source``). ``None`` (or 0) looks up at
        the latest common time. Raises :class:`FrameLookupError`, :class:`ConnectivityError`
        or :class:`ExtrapolationError` with tf2's meaning.
        """
        target, source = strip_frame(target), strip_frame(source)
        if target == source:
            return identity_pose()
        up_source, up_target = self.chains(target, source)
        if not stamp_ns:
            stamp_ns = self.latest_common_stamp(target, source) or None
        common_source = self._from_ancestor(up_source, stamp_ns)
        common_target = self._from_ancestor(up_target, stamp_ns)
        return pose_compose(*pose_invert(*common_target), *common_source)

    def can_transform(self, target: str, source: str, stamp_ns: Optional[int] = None) -> bool:
        """Whether :meth:`lookup` would succeed."""
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True


def parent_conflict(child: str, parent: str, existing_parent: Optional[str],
                    tree_description: str = '') -> Optional[str]:
    """Why publishing ``parent -> child`` would give ``child`` a second parent (None: fine)."""
    if existing_parent is None or strip_frame(existing_parent) == strip_frame(parent):
        return None
    return (f'frame {child!r} already has the parent {existing_parent!r} in TF; publishing '
            f'{parent} -> {child} would give it a second parent (a TF frame has exactly one). '
            + (f'TF now: {tree_description}. ' if tree_description else '')
            + 'Stop the other publisher of that frame, or choose another child frame / '
            'tf_mode')


# ---------------------------------------------------------------------------- pose math

def base_pose(map_camera: Pose, base_camera: Pose) -> Pose:
    """Pose of base in map: ``T_map_base = T_map_camera * T_base_camera^-1``.

    ``base_camera`` is the camera's pose in base (the extrinsics, TF ``base -> camera``).
    """
    return pose_compose(*map_camera, *pose_invert(*base_camera))


def map_to_odom(map_base: Pose, odom_base: Pose) -> Pose:
    """Compute AMCL's ``map -> odom``: ``T_map_odom = T_map_base * T_odom_base^-1``.

    Composed with the odometry's ``odom -> base`` it puts base where the localizer saw it.
    """
    return pose_compose(*map_base, *pose_invert(*odom_base))


def lever_arm_jacobian(map_camera: Pose, base_camera: Pose) -> np.ndarray:
    """d(base pose error) / d(camera pose error), both ``(dx dy dz, rot x y z)`` in map axes.

    Errors are as the covariance defines them: position ``p_est - p`` and rotation vector
    ``log(q_est * q^-1)`` about the fixed map axes. A camera rotation error ``d`` turns the
    whole rigid body, so base turns by the same ``d`` and moves by ``d x r`` where ``r`` is
    the lever arm from the camera to base in map axes: ``J = [[I, -[r]x], [0, I]]``
    (:func:`~camreloc_ros.core.geometry.rigid_shift_jacobian`).
    """
    return rigid_shift_jacobian(_arm(map_camera, base_camera))


def _arm(map_camera: Pose, base_camera: Pose) -> np.ndarray:
    """Return the lever arm camera -> base in map axes."""
    offset = pose_invert(*base_camera)[0]                 # base origin in the camera frame
    return quat_rotate(map_camera[1], offset)


def base_covariance(covariance: np.ndarray, map_camera: Pose, base_camera: Pose) -> np.ndarray:
    """Propagate the camera pose covariance (6x6, map axes) to base: ``J C J^T``.

    First-order propagation through :func:`lever_arm_jacobian`; the axes stay those of the
    map frame, as ROS defines ``PoseWithCovariance`` (the covariance is in the header's
    frame), so AMCL consumers and robot_localization read it as they read AMCL's
    (:func:`~camreloc_ros.core.geometry.shift_covariance`, the one covariance transport).
    """
    return shift_covariance(covariance, _arm(map_camera, base_camera))
