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

"""Tests of camreloc_ros.core.geometry against scipy's Rotation (also x, y, z, w)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from camreloc_ros.core import geometry as g

N = 1000


def _random_quats(n: int = N, seed: int = 0) -> np.ndarray:
    """Uniform random unit quaternions (normalised Gaussians), arbitrary sign."""
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _random_axes(n: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, 3))
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _quat_axis_angle(axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    half = 0.5 * np.asarray(angles)[..., None]
    return np.concatenate([axes * np.sin(half), np.cos(half)], axis=-1)


def _assert_same_rotation(qa: np.ndarray, qb: np.ndarray, atol: float = 1e-12) -> None:
    """Equal up to the sign of each quaternion (double cover)."""
    qa = np.asarray(qa)
    qb = np.asarray(qb)
    diff = np.minimum(np.abs(qa - qb).max(axis=-1), np.abs(qa + qb).max(axis=-1))
    assert np.all(diff < atol), diff.max()


# Extra hard cases: near identity (1e-8..1e-4 rad), near and at 180 degrees.
SMALL_ANGLES = np.geomspace(1e-8, 1e-4, 9)
NEAR_PI = np.array([np.pi - 1e-6, np.pi - 1e-9, np.pi])


def _hard_quats() -> np.ndarray:
    small = _quat_axis_angle(_random_axes(len(SMALL_ANGLES), 1), SMALL_ANGLES)
    big = _quat_axis_angle(_random_axes(len(NEAR_PI), 2), NEAR_PI)
    axes = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    return np.concatenate([small, big, axes, -axes, [[0, 0, 0, -1.0]]])


ALL_QUATS = np.concatenate([_random_quats(), _hard_quats()])


# ------------------------------------------------------------------------ quaternions

def test_multiply_matches_scipy():
    qa = _random_quats(seed=3)
    qb = ALL_QUATS[:N]
    ours = g.quat_multiply(qa, qb)
    ref = (Rotation.from_quat(qa) * Rotation.from_quat(qb)).as_quat()
    _assert_same_rotation(ours, ref)
    # Hamilton convention: i * j = k, and matrices compose the same way.
    assert np.allclose(g.quat_multiply([1, 0, 0, 0], [0, 1, 0, 0]), [0, 0, 1, 0])
    assert np.allclose(g.quat_to_matrix(ours), g.quat_to_matrix(qa) @ g.quat_to_matrix(qb))


def test_multiply_broadcasts():
    qa = _random_quats(6).reshape(2, 3, 4)
    qb = _random_quats(3, seed=5)
    out = g.quat_multiply(qa, qb)
    assert out.shape == (2, 3, 4)
    assert np.allclose(out[1, 2], g.quat_multiply(qa[1, 2], qb[2]))


def test_conjugate_inverse():
    q = ALL_QUATS
    ident = g.quat_multiply(q, g.quat_conjugate(q))
    assert np.allclose(ident, [0, 0, 0, 1], atol=1e-15)
    scaled = 3.0 * _random_quats(50)
    assert np.allclose(g.quat_multiply(g.quat_inverse(scaled), scaled), [0, 0, 0, 1])
    with pytest.raises(ValueError):
        g.quat_inverse([0, 0, 0, 0])


def test_normalize_unit_and_canonical():
    q = 2.5 * ALL_QUATS
    n = g.quat_normalize(q)
    assert np.allclose(np.linalg.norm(n, axis=-1), 1.0)
    assert np.all(n[:, 3] >= 0.0)
    _assert_same_rotation(n, ALL_QUATS)
    assert np.allclose(g.quat_normalize(-q), n)
    ref = Rotation.from_quat(q).as_quat(canonical=True)
    assert np.allclose(n, ref, atol=1e-15)
    # w == 0: first non-zero of x, y, z is made positive.
    assert np.array_equal(g.quat_normalize([0, -2.0, 0, 0]), [0, 1.0, 0, 0])


@pytest.mark.parametrize('bad', [[0, 0, 0, 0], [np.nan, 0, 0, 1], [np.inf, 0, 0, 1]])
def test_normalize_rejects_bad_norm(bad):
    with pytest.raises(ValueError, match='finite non-zero norm'):
        g.quat_normalize(bad)
    with pytest.raises(ValueError, match='finite non-zero norm'):
        g.quat_normalize([[0, 0, 0, 1.0], bad])


def test_shape_errors():
    with pytest.raises(ValueError, match=r'\[\.\.\., 4\]'):
        g.quat_normalize([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match='3, 3'):
        g.matrix_to_quat(np.eye(4))
    with pytest.raises(ValueError, match='4, 4'):
        g.pose_from_matrix(np.eye(3))


def test_matrix_matches_scipy_and_round_trips():
    q = ALL_QUATS
    mats = g.quat_to_matrix(q)
    assert np.allclose(mats, Rotation.from_quat(q).as_matrix(), atol=1e-15)
    back = g.matrix_to_quat(mats)
    assert np.all(back[:, 3] >= 0.0)
    _assert_same_rotation(back, q, atol=1e-14)
    ref = Rotation.from_matrix(mats).as_quat()
    _assert_same_rotation(back, ref, atol=1e-14)
    assert np.allclose(g.quat_to_matrix(back), mats, atol=1e-14)


def test_matrix_to_quat_exact_half_turns():
    for axis in np.eye(3):
        rot = Rotation.from_rotvec(np.pi * axis).as_matrix()
        _assert_same_rotation(g.matrix_to_quat(rot), np.append(axis, 0.0), atol=1e-15)


def test_rotate_matches_matrix():
    q = ALL_QUATS
    v = np.random.default_rng(7).normal(size=(len(q), 3))
    expected = np.einsum('nij,nj->ni', g.quat_to_matrix(q), v)
    assert np.allclose(g.quat_rotate(q, v), expected, atol=1e-14)


def test_log_exp_round_trip_and_rotvec():
    q = g.quat_normalize(ALL_QUATS)
    log = g.quat_log(q)
    assert log.shape == (len(q), 3)
    # log of a canonical unit quaternion is half the rotation vector.
    assert np.allclose(log, Rotation.from_quat(q).as_rotvec() / 2.0, atol=1e-12, rtol=1e-12)
    _assert_same_rotation(g.quat_exp(log), q, atol=1e-14)
    assert np.allclose(g.quat_exp(log), q, atol=1e-14)
    assert np.allclose(g.rotvec_from_quat(-q), Rotation.from_quat(q).as_rotvec(), atol=1e-12)
    rv = Rotation.from_quat(q).as_rotvec()
    _assert_same_rotation(g.quat_from_rotvec(rv), q, atol=1e-14)


def test_log_near_identity_is_accurate():
    q = _quat_axis_angle(_random_axes(len(SMALL_ANGLES), 9), SMALL_ANGLES)
    log = g.quat_log(q)
    assert np.allclose(np.linalg.norm(log, axis=-1), SMALL_ANGLES / 2.0, rtol=1e-12, atol=0)
    assert np.array_equal(g.quat_log([0, 0, 0, 1.0]), [0, 0, 0])
    assert np.array_equal(g.quat_exp([0, 0, 0]), [0, 0, 0, 1.0])


def test_log_double_cover():
    q = g.quat_normalize(_random_quats(20))
    # log(-q) describes the same rotation the long way round: |log| = pi - |log q|.
    assert np.allclose(np.linalg.norm(g.quat_log(-q), axis=-1),
                       np.pi - np.linalg.norm(g.quat_log(q), axis=-1))
    assert np.allclose(g.quat_exp(g.quat_log(-q)), -q)
    assert np.allclose(g.quat_exp(g.quat_log([0, 0, 0, -1.0])), [0, 0, 0, -1.0])


# ------------------------------------------------------------------------------ poses

def _random_poses(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=5.0, size=(n, 3)), _random_quats(n, seed + 100)


def test_pose_matrix_round_trip():
    t, q = _random_poses(100, 11)
    T = g.matrix_from_pose(t, q)
    assert T.shape == (100, 4, 4)
    assert np.allclose(T[:, 3], [0, 0, 0, 1])
    t2, q2 = g.pose_from_matrix(T)
    assert np.allclose(t2, t)
    _assert_same_rotation(q2, q, atol=1e-14)
    assert all(g.check_rigid(m) is None for m in T)


def test_pose_compose_and_invert():
    t1, q1 = _random_poses(100, 12)
    t2, q2 = _random_poses(100, 13)
    t, q = g.pose_compose(t1, q1, t2, q2)
    expected = g.matrix_from_pose(t1, q1) @ g.matrix_from_pose(t2, q2)
    assert np.allclose(g.matrix_from_pose(t, q), expected, atol=1e-12)
    ti, qi = g.pose_invert(t1, q1)
    T = g.matrix_from_pose(t1, q1)
    assert np.allclose(T @ g.matrix_from_pose(ti, qi), np.eye(4), atol=1e-12)
    assert np.allclose(g.matrix_from_pose(ti, qi), np.linalg.inv(T), atol=1e-12)
    tc, qc = g.pose_compose(t1, q1, ti, qi)
    assert np.allclose(tc, 0.0, atol=1e-12)
    assert np.allclose(qc, [0, 0, 0, 1], atol=1e-12)


def test_check_rigid_catches_each_defect():
    T = g.matrix_from_pose([1.0, 2.0, 3.0], _random_quats(1, 21)[0])
    assert g.check_rigid(T) is None
    assert g.check_rigid(T.tolist()) is None
    assert 'shape' in g.check_rigid(T[:3])
    assert 'numeric' in g.check_rigid([['a'] * 4] * 4)
    for val in (np.nan, np.inf):
        bad = T.copy()
        bad[1, 2] = val
        assert 'NaN or inf' in g.check_rigid(bad)
    bad = T.copy()
    bad[3, 0] = 0.5
    assert 'last row' in g.check_rigid(bad)
    bad = T.copy()
    bad[:3, :3] *= 1.01
    assert 'orthonormal' in g.check_rigid(bad)
    bad = T.copy()
    bad[:3, 0] *= -1.0  # reflection: orthonormal but det = -1
    assert 'determinant' in g.check_rigid(bad)
    small = T.copy()
    small[:3, :3] *= 1.0 + 1e-5  # within the default tolerance
    assert g.check_rigid(small) is None
    assert g.check_rigid(small, atol=1e-8) is not None


# ----------------------------------------------------------------------------- errors

def test_position_error():
    assert g.position_error([1.0, 2.0, 2.0], [0.0, 0.0, 0.0]) == pytest.approx(3.0)
    a = np.random.default_rng(1).normal(size=(10, 3))
    assert np.allclose(g.position_error(a, a), 0.0)


def test_orientation_error_matches_scipy():
    qa = ALL_QUATS
    qb = np.concatenate([_random_quats(seed=31), _random_quats(len(qa) - N, seed=32)])
    ours = g.orientation_error_deg(qa, qb)
    ref = np.degrees((Rotation.from_quat(qb).inv() * Rotation.from_quat(qa)).magnitude())
    assert np.allclose(ours, ref, atol=1e-6, rtol=0)
    # Symmetric, invariant to either sign, and to scale (inputs need not be unit).
    assert np.allclose(g.orientation_error_deg(qb, qa), ours, atol=1e-9)
    assert np.allclose(g.orientation_error_deg(-qa, qb), ours, atol=1e-9)
    assert np.allclose(g.orientation_error_deg(qa, -4.0 * qb), ours, atol=1e-9)
    assert np.all((ours >= 0.0) & (ours <= 180.0))


def test_orientation_error_near_identity_is_accurate():
    base = _random_quats(len(SMALL_ANGLES), 41)
    delta = _quat_axis_angle(_random_axes(len(SMALL_ANGLES), 42), SMALL_ANGLES)
    q_hat = g.quat_multiply(base, delta)
    err = g.orientation_error_deg(q_hat, base)
    # Relative accuracy even for 1e-8 rad (~5.7e-7 deg); a naive 2*acos(|<q, q_hat>|)
    # rounds cos(theta/2) = 1 - theta^2/8 to 1 and reports 0 below ~3e-8 rad.
    assert np.allclose(err, np.degrees(SMALL_ANGLES), rtol=1e-6, atol=0)
    ref = np.degrees((Rotation.from_quat(base).inv() * Rotation.from_quat(q_hat)).magnitude())
    assert np.allclose(err, ref, rtol=1e-6, atol=0)
    assert g.orientation_error_deg([0, 0, 0, 1.0], [0, 0, 0, -1.0]) == 0.0


def test_orientation_error_near_half_turn():
    base = _random_quats(len(NEAR_PI), 43)
    delta = _quat_axis_angle(_random_axes(len(NEAR_PI), 44), NEAR_PI)
    err = g.orientation_error_deg(g.quat_multiply(base, delta), base)
    assert np.allclose(err, np.degrees(NEAR_PI), atol=1e-9, rtol=0)


# ----------------------------------------------------------------------- interpolation

def test_slerp_endpoints_and_midpoint():
    q0 = _random_quats(50, 51)
    q1 = _random_quats(50, 52)
    _assert_same_rotation(g.slerp(q0, q1, 0.0), q0, atol=1e-14)
    _assert_same_rotation(g.slerp(q0, q1, 1.0), q1, atol=1e-14)
    mid = g.slerp(q0, q1, 0.5)
    total = g.orientation_error_deg(q0, q1)
    assert np.allclose(g.orientation_error_deg(mid, q0), total / 2.0, atol=1e-9)
    assert np.allclose(g.orientation_error_deg(mid, q1), total / 2.0, atol=1e-9)
    # Shortest path regardless of the sign of q1.
    _assert_same_rotation(g.slerp(q0, -q1, 0.5), mid, atol=1e-14)
    # Per-element alpha broadcasts.
    alphas = np.linspace(0.0, 1.0, 50)
    out = g.slerp(q0, q1, alphas)
    assert np.allclose(g.orientation_error_deg(out, q0), alphas * total, atol=1e-9)


def test_slerp_matches_scipy():
    from scipy.spatial.transform import Slerp
    q0, q1 = _random_quats(2, 53)
    alphas = np.linspace(0.0, 1.0, 11)
    ref = Slerp([0.0, 1.0], Rotation.from_quat([q0, q1]))(alphas).as_quat()
    _assert_same_rotation(g.slerp(q0, q1, alphas), ref, atol=1e-12)


def test_slerp_tiny_angle():
    q0 = _random_quats(1, 54)[0]
    q1 = g.quat_multiply(q0, _quat_axis_angle(np.array([0.0, 0.0, 1.0]), 1e-9))
    mid = g.slerp(q0, q1, 0.5)
    assert np.all(np.isfinite(mid))
    assert g.orientation_error_deg(mid, q0) == pytest.approx(np.degrees(0.5e-9), rel=1e-5)


def test_interpolate_pose():
    t0, q0 = np.zeros(3), np.array([0, 0, 0, 1.0])
    t1, q1 = np.array([2.0, 4.0, -6.0]), _quat_axis_angle(np.array([0, 0, 1.0]), np.pi / 2)
    t, q = g.interpolate_pose(t0, q0, t1, q1, 0.25)
    assert np.allclose(t, [0.5, 1.0, -1.5])
    _assert_same_rotation(q, _quat_axis_angle(np.array([0, 0, 1.0]), np.pi / 8))
    ts, qs = g.interpolate_pose(t0, q0, t1, q1, np.array([0.0, 1.0]))
    assert np.allclose(ts, [t0, t1])
    _assert_same_rotation(qs, np.stack([q0, q1]))
