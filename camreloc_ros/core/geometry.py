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

"""Rigid-body geometry for camera relocalization (ROS-free).

Convention (used everywhere in camreloc_ros):

* A quaternion is an array ``[..., 4]`` in ROS / scipy order ``(x, y, z, w)``;
  ``w`` is the scalar part.  Products are Hamilton products
  (``i*j = k``), so ``quat_multiply(q1, q2)`` rotates by ``q2`` first, then ``q1``,
  exactly like ``R(q1) @ R(q2)``.
* A pose ``(t, q)`` is the camera-to-world transform: a point ``p_c`` in the camera
  frame maps to ``p_w = R(q) @ p_c + t``; ``t`` is the camera centre in the world.
* ``q`` and ``-q`` are the same rotation (double cover).  Functions that produce a
  rotation (``quat_normalize``, ``matrix_to_quat``, ``pose_*``, ``slerp``,
  ``quat_from_rotvec``) return unit quaternions with a canonical sign: ``w > 0``, or
  when ``w == 0`` the first non-zero of ``x, y, z`` is positive (scipy's canonical
  form).  Algebraic ones (``quat_multiply``, ``quat_conjugate``, ``quat_exp``,
  ``quat_log``) keep signs as they are; error metrics are sign-invariant.
* Angles are radians unless a name says ``_deg``.

The numpy functions work in float64 and are vectorised over leading dimensions.
The ``torch_*`` functions are the differentiable counterparts used by the losses;
torch is imported lazily so that dataset tools can use this module without it.

About 580 lines: one module for every quaternion, pose and covariance helper (numpy and torch
share ``_hamilton``), so each convention above has exactly one implementation. That includes
robust PnP (``solve_pnp``: poselib, pycolmap or OpenCV, imported lazily) and its covariance
(``pnp_covariance``): every pose from 2D-3D points (the refiner, the tracker, the
scene-coordinate head) is solved and scored by the same code.
"""

from __future__ import annotations

from typing import Optional, Tuple, TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

ArrayLike = Union[np.ndarray, list, tuple, float]

__all__ = [
    'quat_multiply', 'quat_conjugate', 'quat_inverse', 'quat_normalize', 'quat_log',
    'quat_exp', 'quat_rotate', 'quat_to_matrix', 'matrix_to_quat', 'rotvec_from_quat',
    'quat_from_rotvec', 'pose_from_matrix', 'matrix_from_pose', 'pose_compose',
    'pose_invert', 'skew', 'rigid_shift_jacobian', 'shift_covariance', 'check_rigid',
    'QUAT_NORM_TOL', 'unit_quat_problem', 'position_error',
    'orientation_error_deg', 'orientation_error_rad', 'slerp', 'interpolate_pose',
    'torch_quat_multiply', 'torch_quat_conjugate', 'torch_quat_normalize', 'torch_quat_log',
    'torch_quat_error_log',
]

IDENTITY_QUAT = np.array([0.0, 0.0, 0.0, 1.0])
# A stored quaternion further than this from unit length is a data error, not rounding.
QUAT_NORM_TOL = 1e-2


# --------------------------------------------------------------------------- helpers

def _quat(q: ArrayLike, name: str = 'q') -> np.ndarray:
    """Return ``q`` as float64 with a trailing axis of 4, or raise ValueError."""
    arr = np.asarray(q, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 4:
        raise ValueError(
            f'{name}: expected quaternion array of shape [..., 4] (x, y, z, w), '
            f'got shape {arr.shape}')
    return arr


def _vec3(v: ArrayLike, name: str = 'v') -> np.ndarray:
    """Return ``v`` as float64 with a trailing axis of 3, or raise ValueError."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 3:
        raise ValueError(f'{name}: expected array of shape [..., 3], got shape {arr.shape}')
    return arr


def _unit(q: np.ndarray, name: str = 'q') -> np.ndarray:
    """Scale ``q`` to unit norm keeping its sign; raise on zero/NaN/inf norm."""
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    bad = ~np.isfinite(n) | (n == 0.0)
    if np.any(bad):
        raise ValueError(
            f'{name}: expected quaternion(s) (x, y, z, w) with finite non-zero norm, '
            f'got norm {n[bad].ravel()[:3].tolist()} in {int(bad.sum())} element(s)')
    return q / n


def _canonical_sign(q: np.ndarray) -> np.ndarray:
    """Flip ``q`` so that ``w > 0``, or (w == 0) the first non-zero of x, y, z is > 0.

    Same rule as ``scipy.spatial.transform.Rotation.as_quat(canonical=True)``.
    """
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    key = np.where(w != 0.0, w, np.where(x != 0.0, x, np.where(y != 0.0, y, z)))
    return np.where((key < 0.0)[..., None], -q, q)


# ------------------------------------------------------------------------ quaternions

def quat_multiply(q1: ArrayLike, q2: ArrayLike) -> np.ndarray:
    """Hamilton product ``q1 ⊗ q2`` (rotate by q2, then q1); broadcasts."""
    a = _quat(q1, 'q1')
    b = _quat(q2, 'q2')
    return np.stack(_hamilton(np.moveaxis(a, -1, 0), np.moveaxis(b, -1, 0)), axis=-1)


def _hamilton(a, b) -> list:
    """Components (x, y, z, w) of ``a ⊗ b`` from their components: numpy or torch alike."""
    x1, y1, z1, w1 = a
    x2, y2, z2, w2 = b
    return [w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2]


def quat_conjugate(q: ArrayLike) -> np.ndarray:
    """Conjugate ``(-x, -y, -z, w)``: the inverse rotation for unit quaternions."""
    arr = _quat(q)
    return np.concatenate([-arr[..., :3], arr[..., 3:]], axis=-1)


def quat_inverse(q: ArrayLike) -> np.ndarray:
    """Multiplicative inverse ``conj(q) / |q|^2`` (works for non-unit q)."""
    arr = _quat(q)
    n2 = np.sum(arr * arr, axis=-1, keepdims=True)
    if np.any(~np.isfinite(n2) | (n2 == 0.0)):
        raise ValueError('quat_inverse: expected quaternion(s) with finite non-zero norm')
    return quat_conjugate(arr) / n2


def quat_normalize(q: ArrayLike) -> np.ndarray:
    """Unit-norm quaternion with canonical sign (w >= 0), so equal rotations compare equal.

    Raises ValueError on zero, NaN or infinite norm: such a quaternion is no rotation.
    """
    return _canonical_sign(_unit(_quat(q)))


def quat_log(q: ArrayLike) -> np.ndarray:
    """Logarithm of a unit quaternion, ``[..., 3]``: axis * half-angle.

    ``log q = q_v * atan2(|q_v|, w) / |q_v|``; the input is scaled to unit norm but its
    sign is kept, so ``log(-q) != log(q)`` (double cover).  Near ``|q_v| = 0`` the
    factor uses the series ``(1 - |q_v|^2 / (3 w^2)) / w``.  For ``q = -1`` (a 2*pi
    turn) the axis is undefined and ``(pi, 0, 0)`` is returned, so ``exp(log q) = q``.
    """
    u = _unit(_quat(q))
    v = u[..., :3]
    w = u[..., 3]
    n2 = np.sum(v * v, axis=-1)
    n = np.sqrt(n2)
    small = (n < 1e-8) & (w > 0.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        general = np.arctan2(n, w) / np.where(n == 0.0, 1.0, n)
        series = (1.0 - n2 / (3.0 * w * w)) / w
    factor = np.where(small, series, general)
    out = v * factor[..., None]
    minus_one = (n == 0.0) & (w < 0.0)
    if np.any(minus_one):
        out = np.where(minus_one[..., None], np.array([np.pi, 0.0, 0.0]), out)
    return out


def quat_exp(v: ArrayLike) -> np.ndarray:
    """Exponential of a pure quaternion ``v`` ``[..., 3]``: ``(sin|v| v/|v|, cos|v|)``.

    Inverse of :func:`quat_log` (for |v| <= pi); a rotation vector r maps to exp(r / 2).
    """
    arr = _vec3(v)
    theta = np.linalg.norm(arr, axis=-1)
    sinc = np.sinc(theta / np.pi)  # sin(theta)/theta, exact 1 at 0
    return np.concatenate([arr * sinc[..., None], np.cos(theta)[..., None]], axis=-1)


def rotvec_from_quat(q: ArrayLike) -> np.ndarray:
    """Rotation vector (axis * angle, angle in [0, pi]) of a quaternion; sign-agnostic."""
    return 2.0 * quat_log(quat_normalize(q))


def quat_from_rotvec(r: ArrayLike) -> np.ndarray:
    """Canonical unit quaternion of a rotation vector (axis * angle)."""
    return _canonical_sign(quat_exp(0.5 * _vec3(r, 'r')))


def quat_rotate(q: ArrayLike, v: ArrayLike) -> np.ndarray:
    """Rotate 3-vectors ``v`` by quaternions ``q`` (``R(q) @ v``); broadcasts."""
    u = _unit(_quat(q))
    vec = _vec3(v)
    qv = u[..., :3]
    w = u[..., 3:]
    tt = 2.0 * np.cross(qv, vec)
    return vec + w * tt + np.cross(qv, tt)


def quat_to_matrix(q: ArrayLike) -> np.ndarray:
    """Rotation matrix ``[..., 3, 3]`` of (normalised) quaternions."""
    u = _unit(_quat(q))
    x, y, z, w = np.moveaxis(u, -1, 0)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        [1.0 - 2.0 * (yy + zz), 2.0 * (xy - wz), 2.0 * (xz + wy)],
        [2.0 * (xy + wz), 1.0 - 2.0 * (xx + zz), 2.0 * (yz - wx)],
        [2.0 * (xz - wy), 2.0 * (yz + wx), 1.0 - 2.0 * (xx + yy)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quat(R: ArrayLike) -> np.ndarray:  # noqa: N803 - R is the usual name
    """Canonical unit quaternion of rotation matrices ``[..., 3, 3]``.

    Shepperd's method: picks the largest of (trace, R00, R11, R22) as pivot so the
    square root and the divisions stay well conditioned for every angle (incl. 180°).
    """
    m = np.asarray(R, dtype=np.float64)
    if m.ndim < 2 or m.shape[-2:] != (3, 3):
        raise ValueError(f'R: expected array of shape [..., 3, 3], got shape {m.shape}')
    r00, r01, r02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    r10, r11, r12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    r20, r21, r22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    trace = r00 + r11 + r22
    pivots = np.stack([r00, r11, r22, trace], axis=-1)
    choice = np.argmax(pivots, axis=-1)
    # 4 * (pivot component)^2 for each candidate.
    s = np.sqrt(np.maximum(1.0 + 2.0 * pivots - trace[..., None], 0.0)) * 2.0
    s = np.where(s == 0.0, 1.0, s)
    sx, sy, sz, sw = np.moveaxis(s, -1, 0)
    cand = np.stack([
        np.stack([0.25 * sx, (r01 + r10) / sx, (r02 + r20) / sx, (r21 - r12) / sx], -1),
        np.stack([(r01 + r10) / sy, 0.25 * sy, (r12 + r21) / sy, (r02 - r20) / sy], -1),
        np.stack([(r02 + r20) / sz, (r12 + r21) / sz, 0.25 * sz, (r10 - r01) / sz], -1),
        np.stack([(r21 - r12) / sw, (r02 - r20) / sw, (r10 - r01) / sw, 0.25 * sw], -1),
    ], axis=-2)
    q = np.take_along_axis(cand, choice[..., None, None], axis=-2)[..., 0, :]
    return quat_normalize(q)


# ------------------------------------------------------------------------------ poses

def pose_from_matrix(T: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """Split homogeneous transforms ``[..., 4, 4]`` into ``(t [..., 3], q [..., 4])``.

    Does not validate rigidity; use :func:`check_rigid` on untrusted input first.
    """
    m = np.asarray(T, dtype=np.float64)
    if m.ndim < 2 or m.shape[-2:] != (4, 4):
        raise ValueError(f'T: expected array of shape [..., 4, 4], got shape {m.shape}')
    return m[..., :3, 3].copy(), matrix_to_quat(m[..., :3, :3])


def matrix_from_pose(t: ArrayLike, q: ArrayLike) -> np.ndarray:
    """Homogeneous transform ``[..., 4, 4]`` from translation and quaternion."""
    tv = _vec3(t, 't')
    rot = quat_to_matrix(q)
    shape = np.broadcast_shapes(tv.shape[:-1], rot.shape[:-2])
    out = np.zeros(shape + (4, 4))
    out[..., :3, :3] = rot
    out[..., :3, 3] = tv
    out[..., 3, 3] = 1.0
    return out


def pose_compose(t1: ArrayLike, q1: ArrayLike, t2: ArrayLike,
                 q2: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Pose of ``T1 @ T2``: ``(t1 + R1 t2, q1 ⊗ q2)``, quaternion canonical."""
    t = _vec3(t1, 't1') + quat_rotate(q1, t2)
    return t, quat_normalize(quat_multiply(q1, q2))


def pose_invert(t: ArrayLike, q: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Pose of ``T^-1``: ``(-R^T t, q^-1)``, quaternion canonical."""
    qi = quat_conjugate(_unit(_quat(q)))
    return -quat_rotate(qi, t), quat_normalize(qi)


def skew(v: ArrayLike) -> np.ndarray:
    """Return the cross-product matrix ``[v]x`` of a 3-vector (``[v]x @ b == v x b``)."""
    x, y, z = _vec3(v)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def rigid_shift_jacobian(arm: ArrayLike) -> np.ndarray:
    """``d(error at p + arm) / d(error at p)`` on one rigid body: ``[[I, -[arm]x], [0, I]]``.

    Errors as a ROS pose covariance defines them, in fixed (world) axes: position
    ``p_est - p`` and rotation vector ``log(q_est * q^-1)``. A rotation error ``d`` turns the
    whole body, so a point ``arm`` away (world axes) moves by ``d x arm`` and turns by ``d``.
    """
    jac = np.eye(6)
    jac[:3, 3:] = -skew(arm)
    return jac


def shift_covariance(covariance: ArrayLike, arm: ArrayLike) -> np.ndarray:
    """Carry a 6x6 pose covariance (fixed axes) to the body point ``arm`` away: ``J C J^T``.

    The one first-order covariance transport through a rigid transform: the camera's
    covariance to ``base_link`` (the lever arm of the extrinsics) and a refined pose's to the
    frames after it (the motion since) both go through it. Axes stay the fixed frame's, as
    ROS defines ``PoseWithCovariance``; the result is symmetrised against rounding.
    """
    jac = rigid_shift_jacobian(arm)
    out = jac @ np.asarray(covariance, np.float64) @ jac.T
    return 0.5 * (out + out.T)


def check_rigid(T: ArrayLike, atol: float = 1e-3) -> Optional[str]:  # noqa: N803
    """Say what, if anything, keeps ``T`` from being a 4x4 rigid transform.

    Returns a human-readable message (for dataset readers to report with the file
    name), or None when ``T`` is a finite 4x4 matrix with last row [0, 0, 0, 1] and an
    orthonormal rotation block of determinant +1, all within ``atol``.
    """
    try:
        m = np.asarray(T, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return f'not a numeric matrix ({exc})'
    if m.shape != (4, 4):
        return f'expected a 4x4 matrix, got shape {m.shape}'
    if not np.all(np.isfinite(m)):
        return 'matrix contains NaN or inf'
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=atol):
        return f'last row is {m[3].tolist()}, expected [0, 0, 0, 1]'
    rot = m[:3, :3]
    dev = float(np.max(np.abs(rot.T @ rot - np.eye(3))))
    if dev > atol:
        return f'rotation block is not orthonormal (max |R^T R - I| = {dev:.3g} > {atol:g})'
    det = float(np.linalg.det(rot))
    if abs(det - 1.0) > atol:
        return f'rotation block has determinant {det:.6g}, expected +1 (reflection?)'
    return None


def unit_quat_problem(q: ArrayLike) -> Optional[str]:
    """Say why ``q`` is no unit quaternion within :data:`QUAT_NORM_TOL` (None when it is).

    Ground truth read from files and bags is checked with this before it is normalised: a
    norm far from 1 (or NaN) means broken data, not rounding.
    """
    norm = float(np.linalg.norm(np.asarray(q, dtype=np.float64)))
    if abs(norm - 1.0) <= QUAT_NORM_TOL:
        return None
    return f'quaternion has norm {norm:.6g}; expected a unit quaternion'


# ----------------------------------------------------------------------------- errors

def position_error(t_hat: ArrayLike, t: ArrayLike) -> np.ndarray:
    """Euclidean distance between positions (metres), over the last axis."""
    return np.linalg.norm(_vec3(t_hat, 't_hat') - _vec3(t, 't'), axis=-1)


def orientation_error_rad(q_hat: ArrayLike, q: ArrayLike) -> np.ndarray:
    """Angle (radians, in [0, pi]) of the rotation between ``q`` and ``q_hat``.

    ``2 * atan2(|r_v|, |r_w|)`` with ``r = q^-1 ⊗ q_hat``: equal to ``2 acos|<q, q_hat>|``
    but accurate near 0 and 180 degrees; invariant to the sign of either quaternion.
    """
    r = quat_multiply(quat_conjugate(_unit(_quat(q, 'q'), 'q')),
                      _unit(_quat(q_hat, 'q_hat'), 'q_hat'))
    return 2.0 * np.arctan2(np.linalg.norm(r[..., :3], axis=-1), np.abs(r[..., 3]))


def orientation_error_deg(q_hat: ArrayLike, q: ArrayLike) -> np.ndarray:
    """Angle in degrees between two orientations; see :func:`orientation_error_rad`."""
    return np.degrees(orientation_error_rad(q_hat, q))


# ----------------------------------------------------------------------- interpolation

def slerp(q0: ArrayLike, q1: ArrayLike, alpha: ArrayLike) -> np.ndarray:
    """Spherical linear interpolation along the shortest arc; ``alpha`` in [0, 1].

    Computed as ``q0 ⊗ exp(alpha * log(q0^-1 ⊗ q1))`` with the relative rotation
    flipped to ``w >= 0``, which is stable for tiny and large angles alike.
    Returns canonical unit quaternions; broadcasts over leading dims and ``alpha``.
    """
    a = _unit(_quat(q0, 'q0'), 'q0')
    b = _unit(_quat(q1, 'q1'), 'q1')
    rel = _canonical_sign(quat_multiply(quat_conjugate(a), b))
    step = np.asarray(alpha, dtype=np.float64)[..., None] * quat_log(rel)
    return quat_normalize(quat_multiply(a, quat_exp(step)))


def interpolate_pose(t0: ArrayLike, q0: ArrayLike, t1: ArrayLike, q1: ArrayLike,
                     alpha: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Interpolate poses: linear in position, slerp in orientation (shortest path).

    Used to get ground truth at image stamps between two trajectory samples.
    """
    al = np.asarray(alpha, dtype=np.float64)
    a0 = _vec3(t0, 't0')
    t = a0 + al[..., None] * (_vec3(t1, 't1') - a0)
    return t, slerp(q0, q1, al)


# ------------------------------------------------------------------------------ torch

def torch_quat_multiply(q1: 'torch.Tensor', q2: 'torch.Tensor') -> 'torch.Tensor':
    """Differentiable Hamilton product ``q1 ⊗ q2`` of ``[..., 4]`` (x, y, z, w) tensors."""
    import torch
    return torch.stack(_hamilton(q1.unbind(-1), q2.unbind(-1)), dim=-1)


def torch_quat_conjugate(q: 'torch.Tensor') -> 'torch.Tensor':
    """Differentiable conjugate ``(-x, -y, -z, w)``."""
    import torch
    return torch.cat([-q[..., :3], q[..., 3:]], dim=-1)


def torch_quat_normalize(q: 'torch.Tensor', eps: float = 1e-12) -> 'torch.Tensor':
    """Scale to unit norm (sign kept); the norm is clamped at ``eps`` so grads stay finite."""
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def torch_quat_log(q: 'torch.Tensor') -> 'torch.Tensor':
    """Differentiable quaternion log ``[..., 3]`` (axis * half-angle) of unit quaternions.

    ``q_v * atan2(|q_v|, w) / |q_v|``.  Gradients are finite everywhere: where
    ``|q_v|^2 < eps * w^2`` and ``w > eps`` the factor is the series
    ``1/w - |q_v|^2 / (3 w^3)`` (exact gradient ``I / w`` at zero rotation), and the
    square root never sees 0 (double-``where`` trick).  Sign-sensitive: near
    ``q = -1`` the log is near ``pi * axis`` with an undefined axis, so its gradient
    is huge there; use :func:`torch_quat_error_log` for a sign-invariant error.
    """
    import torch
    eps = torch.finfo(q.dtype).eps
    tiny = torch.finfo(q.dtype).tiny
    v = q[..., :3]
    w = q[..., 3]
    n2 = (v * v).sum(dim=-1)
    small = (n2 < eps * w * w) & (w > eps)
    one = torch.ones_like(n2)
    n = torch.sqrt(torch.where(small, one, n2).clamp_min(tiny))
    general = torch.atan2(n, w) / n
    ws = torch.where(small, w, one)
    series = (1.0 - n2 / (3.0 * ws * ws)) / ws
    factor = torch.where(small, series, general)
    return v * factor.unsqueeze(-1)


def torch_quat_error_log(q_gt: 'torch.Tensor', q_pred: 'torch.Tensor') -> 'torch.Tensor':
    """Rotation error ``log(q_gt^-1 ⊗ q_pred)`` ``[..., 3]``, invariant to the sign of both.

    Both quaternions are normalised (``q_pred`` need not be unit); the relative
    quaternion is flipped to ``w >= 0`` before the log so that ``q`` and ``-q`` give
    the same error and its norm is half the rotation angle, in [0, pi/2].
    """
    import torch
    rel = torch_quat_multiply(torch_quat_conjugate(torch_quat_normalize(q_gt)),
                              torch_quat_normalize(q_pred))
    return torch_quat_log(torch.where(rel[..., 3:] < 0, -rel, rel))


def project_points(R_c2w: np.ndarray, C: np.ndarray, K: np.ndarray,
                   X_n3: np.ndarray) -> np.ndarray:
    """Pixels ``(N, 2)`` of world points ``X_n3`` in a pinhole camera at ``R_c2w``, ``C``."""
    xc = (X_n3 - C) @ R_c2w
    return (xc[:, :2] / xc[:, 2:3]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]


def pnp_covariance(R_c2w: np.ndarray, C: np.ndarray, K: np.ndarray, X_n3: np.ndarray,
                   x_n2: np.ndarray, min_sigma_px: float = 0.5) -> np.ndarray:
    """6x6 covariance of (camera position, rotation about world axes) from PnP inliers.

    Gauss-Newton approximation ``sigma^2 (J^T J)^-1`` at the solution, with the Jacobian of
    the pixel residuals taken numerically for ``C + dp`` and ``exp(dtheta) R`` (the
    network's covariance convention) and ``sigma`` the residual RMS (at least
    ``min_sigma_px``). One estimate for every pose that comes from 2D-3D inliers: the
    refiner's, the tracker's and the scene-coordinate head's, so their covariances compare.
    """
    r0 = (project_points(R_c2w, C, K, X_n3) - x_n2).ravel()
    dof = max(r0.size - 6, 1)
    sigma2 = max(float(r0 @ r0) / dof, min_sigma_px ** 2)
    J = np.empty((r0.size, 6))
    h = 1e-6
    for k in range(6):
        d = np.zeros(3)
        d[k % 3] = h
        if k < 3:
            plus = project_points(R_c2w, C + d, K, X_n3)
            minus = project_points(R_c2w, C - d, K, X_n3)
        else:
            plus = project_points(quat_to_matrix(quat_from_rotvec(d)) @ R_c2w, C, K, X_n3)
            minus = project_points(quat_to_matrix(quat_from_rotvec(-d)) @ R_c2w, C, K, X_n3)
        J[:, k] = (plus - minus).ravel() / (2 * h)
    try:
        cov = sigma2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return np.diag([1e6] * 3 + [1e3] * 3)
    return 0.5 * (cov + cov.T)


SOLVERS = ('auto', 'poselib', 'pycolmap', 'opencv')


def available_solver(name: str = 'auto') -> str:
    """Resolve ``auto``: poselib if installed, else pycolmap, else OpenCV (always there).

    poselib and pycolmap have no wheels for every robot (no aarch64 CPython 3.12 wheels at
    the pinned versions); OpenCV's USAC scored within a few millimetres of them here.
    """
    if name != 'auto':
        return name
    import importlib.util
    for module in ('poselib', 'pycolmap'):
        if importlib.util.find_spec(module) is not None:
            return module
    return 'opencv'


def solve_pnp(x: np.ndarray, X: np.ndarray, K: np.ndarray, size: tuple[int, int],
              solver: str = 'poselib', threshold_px: float = 8.0,
              seed: int = 0, iterations: int = 10000
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Robust absolute pose -> (R_c2w, camera centre, inlier mask), or None on failure."""
    x = np.ascontiguousarray(x, np.float64)
    X = np.ascontiguousarray(X, np.float64)
    solver = available_solver(solver)
    w, h = int(size[0]), int(size[1])
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if solver == 'poselib':
        import poselib
        cam = {'model': 'PINHOLE', 'width': w, 'height': h, 'params': [fx, fy, cx, cy]}
        pose, info = poselib.estimate_absolute_pose(
            x, X, cam, {'max_reproj_error': float(threshold_px), 'seed': int(seed),
                        'max_iterations': int(iterations)}, {})
        mask = np.asarray(info['inliers'], bool)
        R_w2c, t = np.asarray(pose.R), np.asarray(pose.t)
    elif solver == 'pycolmap':
        import pycolmap
        cam = pycolmap.Camera(model='PINHOLE', width=w, height=h, params=[fx, fy, cx, cy])
        opts = pycolmap.AbsolutePoseEstimationOptions()
        opts.ransac.max_error = float(threshold_px)
        opts.ransac.random_seed = int(seed)
        opts.ransac.max_num_trials = int(iterations)
        res = pycolmap.estimate_and_refine_absolute_pose(x, X, cam, opts)
        if res is None:
            return None
        R_w2c = np.asarray(res['cam_from_world'].rotation.matrix())
        t = np.asarray(res['cam_from_world'].translation)
        mask = np.asarray(res['inlier_mask'], bool)
    elif solver == 'opencv':
        import cv2
        params = cv2.UsacParams()
        params.threshold = float(threshold_px)
        params.confidence = 0.9999
        params.maxIterations = int(iterations)
        params.sampler = cv2.SAMPLING_UNIFORM
        params.score = cv2.SCORE_METHOD_MAGSAC
        params.loMethod = cv2.LOCAL_OPTIM_SIGMA
        params.randomGeneratorState = int(seed)
        try:   # the USAC overload: (ok, K, rvec, tvec, inliers) in OpenCV 5, 4 values before
            *head, rvec, tvec, inl = cv2.solvePnPRansac(X, x, K, None, params=params)
        except cv2.error:
            return None
        ok = bool(head[0])
        if not ok or inl is None:
            return None
        mask = np.zeros(len(x), bool)
        mask[inl.ravel()] = True
        rvec, tvec = cv2.solvePnPRefineLM(X[mask], x[mask], K, None, rvec, tvec)
        R_w2c, t = cv2.Rodrigues(rvec)[0], tvec.ravel()
    else:
        raise ValueError(f'unknown PnP solver {solver!r}; valid: {", ".join(SOLVERS)}')
    if mask.shape != (len(x),) or not np.all(np.isfinite(R_w2c)) or not np.all(np.isfinite(t)):
        return None
    return R_w2c.T, -R_w2c.T @ t, mask
