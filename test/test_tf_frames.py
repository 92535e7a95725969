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

"""core/robot/tf_tree.py: the TF tree (tf2 semantics) and the REP 105 pose math, ROS-free.

Transforms are checked against 4x4 matrix products; the covariance propagated to base_link
against a Monte-Carlo propagation (camera poses sampled from the covariance, mapped through
the extrinsics, the base poses' sample covariance).
"""

import numpy as np
import pytest

from camreloc_ros.core.robot.tf_tree import (base_covariance, base_pose, ConnectivityError,
                                             ExtrapolationError, FrameLookupError, map_to_odom,
                                             parent_conflict, TransformTree)
from camreloc_ros.core.geometry import (matrix_from_pose, pose_from_matrix, quat_exp,
                                        quat_from_rotvec, quat_log, quat_multiply, quat_normalize)

NS = 1_000_000_000


def random_pose(rng: np.random.Generator, scale: float = 1.0):
    """A random rigid transform (position, quaternion)."""
    return rng.normal(size=3) * scale, quat_normalize(rng.normal(size=4))


def assert_pose(got, expected, atol: float = 1e-9) -> None:
    """Two poses are the same transform (quaternion sign-invariant)."""
    np.testing.assert_allclose(matrix_from_pose(*got), matrix_from_pose(*expected), atol=atol)


# ---------------------------------------------------------------------------- the tree

def test_lookup_composes_a_chain_like_matrices():
    """map -> odom -> base -> camera and a sibling: any pair equals the matrix product."""
    rng = np.random.default_rng(0)
    edges = {('map', 'odom'): random_pose(rng), ('odom', 'base_link'): random_pose(rng),
             ('base_link', 'camera'): random_pose(rng), ('base_link', 'imu'): random_pose(rng)}
    tree = TransformTree()
    for (parent, child), (p, q) in edges.items():
        tree.add(parent, child, 5 * NS, p, q, static=parent == 'base_link')
    m = {k: matrix_from_pose(*v) for k, v in edges.items()}
    in_map = {'map': np.eye(4), 'odom': m['map', 'odom']}
    in_map['base_link'] = in_map['odom'] @ m['odom', 'base_link']
    in_map['camera'] = in_map['base_link'] @ m['base_link', 'camera']
    in_map['imu'] = in_map['base_link'] @ m['base_link', 'imu']
    for target in in_map:
        for source in in_map:
            expected = np.linalg.inv(in_map[target]) @ in_map[source]
            assert_pose(tree.lookup(target, source, 5 * NS), pose_from_matrix(expected))
    assert_pose(tree.lookup('/base_link', 'camera'), edges['base_link', 'camera'])


def test_dynamic_edges_interpolate_and_refuse_to_extrapolate():
    """Between samples: linear position, slerp; outside: ExtrapolationError (past / future)."""
    tree = TransformTree()
    q0 = np.array([0.0, 0.0, 0.0, 1.0])
    q1 = quat_from_rotvec([0.0, 0.0, 0.8])
    tree.add('odom', 'base_link', 10 * NS, [0.0, 0.0, 0.0], q0)
    tree.add('odom', 'base_link', 12 * NS, [2.0, -4.0, 0.0], q1)
    tree.add('base_link', 'camera', 0, [0.1, 0.0, 0.5], q0, static=True)
    p, q = tree.lookup('odom', 'base_link', int(10.5 * NS))
    np.testing.assert_allclose(p, [0.5, -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(quat_log(q), [0.0, 0.0, 0.1], atol=1e-12)   # a quarter of 0.8
    p, _ = tree.lookup('odom', 'camera', 11 * NS)     # the static edge holds at any time
    np.testing.assert_allclose(p, [1.0 + 0.1 * np.cos(0.4), -2.0 + 0.1 * np.sin(0.4), 0.5],
                               atol=1e-12)
    with pytest.raises(ExtrapolationError, match='into the past') as past:
        tree.lookup('odom', 'camera', 9 * NS)
    assert not past.value.future
    with pytest.raises(ExtrapolationError, match='into the future') as future:
        tree.lookup('odom', 'base_link', 13 * NS)
    assert future.value.future
    assert tree.latest_common_stamp('odom', 'camera') == 12 * NS
    assert_pose(tree.lookup('odom', 'base_link'), ([2.0, -4.0, 0.0], q1))   # None: latest
    assert tree.can_transform('camera', 'odom', 12 * NS)
    assert not tree.can_transform('camera', 'odom', 12 * NS + 1)


def test_unknown_and_disconnected_frames():
    """tf2's LookupException and ConnectivityException, naming the frames."""
    tree = TransformTree()
    tree.add('map', 'odom', 0, [0, 0, 0], [0, 0, 0, 1], static=True)
    tree.add('world', 'robot', 0, [0, 0, 0], [0, 0, 0, 1], static=True)
    with pytest.raises(FrameLookupError, match="'camera' does not exist"):
        tree.lookup('map', 'camera', 0)
    with pytest.raises(ConnectivityError, match="'map' and 'robot'"):
        tree.lookup('map', 'robot', 0)
    with pytest.raises(ValueError, match='two frame ids'):
        tree.add('', 'x', 0, [0, 0, 0], [0, 0, 0, 1])


def test_cache_time_and_second_parents():
    """Samples older than the cache time go; a new parent replaces the edge and is recorded."""
    tree = TransformTree(cache_ns=2 * NS)
    for s in range(6):
        tree.add('odom', 'base_link', s * NS, [s, 0, 0], [0, 0, 0, 1])
    with pytest.raises(ExtrapolationError):
        tree.lookup('odom', 'base_link', 2 * NS)
    np.testing.assert_allclose(tree.lookup('odom', 'base_link', int(3.5 * NS))[0], [3.5, 0, 0])
    assert tree.parent('base_link') == 'odom' and tree.reparented == {}
    tree.add('map', 'base_link', 6 * NS, [0, 0, 0], [0, 0, 0, 1])
    assert tree.parent('base_link') == 'map'
    assert tree.reparented == {'base_link': {'odom', 'map'}}
    assert parent_conflict('odom', 'map', None) is None
    assert parent_conflict('odom', 'map', 'map') is None
    text = parent_conflict('odom', 'map', 'world', 'world -> odom')
    assert "frame 'odom' already has the parent 'world'" in text
    assert 'second parent' in text and 'world -> odom' in text


# ---------------------------------------------------------------------------- pose math

def test_base_pose_and_map_to_odom_close_the_loop():
    """T_map_base * T_base_camera is the camera pose; T_map_odom * T_odom_base is T_map_base."""
    rng = np.random.default_rng(1)
    map_base, base_camera, odom_base = (random_pose(rng) for _ in range(3))
    m = matrix_from_pose
    map_camera = pose_from_matrix(m(*map_base) @ m(*base_camera))
    got = base_pose(map_camera, base_camera)
    assert_pose(got, map_base)
    map_odom = map_to_odom(got, odom_base)
    assert_pose(pose_from_matrix(m(*map_odom) @ m(*odom_base)), map_base)


def sample_base_errors(covariance: np.ndarray, map_camera, base_camera, n: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Monte Carlo: camera errors ~ N(0, C), the base pose errors they cause (n, 6)."""
    errors = rng.multivariate_normal(np.zeros(6), covariance, size=n)
    position, quaternion = map_camera
    cam_p = position + errors[:, :3]
    cam_q = quat_multiply(quat_exp(errors[:, 3:] / 2.0), quaternion)    # log(q' q^-1) = e
    base_p, base_q = base_pose((cam_p, cam_q), base_camera)
    true_p, true_q = base_pose(map_camera, base_camera)
    rot = 2.0 * quat_log(quat_multiply(base_q, np.array([-1, -1, -1, 1]) * true_q))
    return np.concatenate([base_p - true_p, rot], axis=1)


@pytest.mark.parametrize('full', [False, True], ids=['diagonal', 'correlated'])
def test_covariance_propagates_like_sampled_poses(full):
    """J C J^T equals the sample covariance of base poses from sampled camera poses."""
    rng = np.random.default_rng(2)
    map_camera = random_pose(rng, 3.0)
    base_camera = (np.array([0.35, -0.1, 0.6]), quat_from_rotvec([-1.2, 0.1, -1.5]))
    std = np.array([0.05, 0.08, 0.03, 0.02, 0.04, 0.03])
    covariance = np.diag(std ** 2)
    if full:
        a = rng.normal(size=(6, 6)) * std[:, None]
        covariance = 0.5 * covariance + 0.5 * a @ a.T / 6
    predicted = base_covariance(covariance, map_camera, base_camera)
    sampled = np.cov(sample_base_errors(covariance, map_camera, base_camera, 200_000, rng).T)
    scale = np.sqrt(np.outer(np.diag(predicted), np.diag(predicted)))
    np.testing.assert_allclose(predicted / scale, sampled / scale, atol=0.02)
    # the lever arm matters: the unpropagated camera covariance is far off
    assert np.max(np.abs(covariance - sampled) / scale) > 0.2
    # rotation block unchanged (a rigid body turns as one), position block grown
    np.testing.assert_allclose(predicted[3:, 3:], covariance[3:, 3:], atol=1e-15)
    assert np.trace(predicted[:3, :3]) > np.trace(covariance[:3, :3])


def test_covariance_at_the_camera_is_unchanged():
    """Identity extrinsics: the covariance is the camera's."""
    rng = np.random.default_rng(3)
    cov = np.diag([1e-2, 2e-2, 3e-2, 1e-3, 2e-3, 3e-3])
    identity = (np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
    np.testing.assert_allclose(base_covariance(cov, random_pose(rng), identity), cov)
    # a pure rotation between camera and base: no lever arm, no change either
    rotated = (np.zeros(3), quat_from_rotvec([0.3, -1.0, 2.0]))
    np.testing.assert_allclose(base_covariance(cov, random_pose(rng), rotated), cov,
                               atol=1e-15)
