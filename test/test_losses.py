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

"""Tests of the pose losses and of the differentiable quaternion functions."""

import math

import numpy as np
import pytest
import torch

from camreloc_ros.core import geometry as g
from camreloc_ros.core.training.losses import (
    build_loss, LOSS_DEFAULTS, NHLoss, PoseNetLoss, QEHLoss)

S = math.sqrt(0.5)  # sin(45 deg) = cos(45 deg)
E3 = math.exp(3.0)  # exp(-s) for s = -3

# Hand-made batch of two samples, ground truth at the origin with identity rotation.
#  sample 0: position error (1, 2, 3)  -> L1 = 6, L2 = sqrt(14);
#            rotation 90 deg about z, q_hat = (0, 0, S, S), given unnormalised as
#            (0, 0, 2, 2).
#  sample 1: no position error;
#            rotation 180 deg about x, q_hat = (1, 0, 0, 0), given as (-3, 0, 0, 0).
POS_PRED = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
QUAT_PRED = [[0.0, 0.0, 2.0, 2.0], [-3.0, 0.0, 0.0, 0.0]]
POS_GT = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
QUAT_GT = [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]]

# Position term, batch mean: L1 (6 + 0) / 2 = 3;  L2 (sqrt(14) + 0) / 2.
POS_L1 = 3.0
POS_L2 = math.sqrt(14.0) / 2.0
# PoseNet / NH rotation term, min over the sign of q_hat:
#  sample 0, L1: |0-0| + |0-0| + |0-S| + |1-S| = S + 1 - S = 1   (other sign: 1 + 2S)
#            L2: sqrt(S^2 + (1-S)^2) = sqrt(2 - sqrt(2))
#  sample 1, q_hat = +-(1, 0, 0, 0): L1 |1| + |1| = 2 either sign;  L2 sqrt(2).
QUAT_L1 = (1.0 + 2.0) / 2.0
QUAT_L2 = (math.sqrt(2.0 - math.sqrt(2.0)) + math.sqrt(2.0)) / 2.0
# QEH rotation term, theta = log(q^-1 (x) q_hat) with q = identity so theta = log(q_hat):
#  sample 0: q_v = (0, 0, S), w = S: theta = q_v * atan2(S, S) / S = (0, 0, pi/4)
#            -> L1 = L2 = pi/4 (half of the 90 deg angle).
#  sample 1: q_v = (+-1, 0, 0), w = 0: theta = (+-pi/2, 0, 0) -> L1 = L2 = pi/2.
LOG_L = (math.pi / 4.0 + math.pi / 2.0) / 2.0


def _batch(dtype=torch.float64, requires_grad=False):
    out = [torch.tensor(x, dtype=dtype) for x in (POS_PRED, QUAT_PRED, POS_GT, QUAT_GT)]
    if requires_grad:
        out[0].requires_grad_(True)
        out[1].requires_grad_(True)
    return out


def _random_batch(n=64, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    pos_pred = torch.randn(n, 3, generator=gen, dtype=dtype)
    quat_pred = torch.randn(n, 4, generator=gen, dtype=dtype)
    pos_gt = torch.randn(n, 3, generator=gen, dtype=dtype)
    quat_gt = torch.randn(n, 4, generator=gen, dtype=dtype)
    quat_gt = quat_gt / quat_gt.norm(dim=-1, keepdim=True)
    return pos_pred, quat_pred, pos_gt, quat_gt


# ------------------------------------------------------------------- hand-computed values

@pytest.mark.parametrize('p, pos, rot', [(1, POS_L1, QUAT_L1), (2, POS_L2, QUAT_L2)])
def test_posenet_hand_values(p, pos, rot):
    loss, parts = PoseNetLoss(beta=500.0, p=p)(*_batch())
    assert parts['pos'] == pytest.approx(pos, rel=1e-12)
    assert parts['rot'] == pytest.approx(rot, rel=1e-12)
    assert loss.item() == pytest.approx(pos + 500.0 * rot, rel=1e-12)
    assert set(parts) == {'pos', 'rot'}


@pytest.mark.parametrize('p, pos, rot', [(1, POS_L1, QUAT_L1), (2, POS_L2, QUAT_L2)])
def test_nh_hand_values(p, pos, rot):
    # s = 0: L = L_pos + L_rot.
    loss, parts = NHLoss(s_pos_init=0.0, s_rot_init=0.0, p=p)(*_batch())
    assert loss.item() == pytest.approx(pos + rot, rel=1e-6)
    # s_pos = 0, s_rot = -3: L = L_pos + 0 + L_rot * e^3 - 3.
    loss, parts = NHLoss(p=p)(*_batch())
    assert loss.item() == pytest.approx(pos + rot * E3 - 3.0, rel=1e-6)
    assert parts['pos'] == pytest.approx(pos, rel=1e-12)
    assert parts['rot'] == pytest.approx(rot, rel=1e-12)
    assert parts['s_pos'] == 0.0 and parts['s_rot'] == -3.0
    # s_pos = 1, s_rot = 2: L = L_pos e^-1 + 1 + L_rot e^-2 + 2.
    loss, _ = NHLoss(s_pos_init=1.0, s_rot_init=2.0, p=p)(*_batch())
    expected = pos * math.exp(-1.0) + 1.0 + rot * math.exp(-2.0) + 2.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize('p, pos', [(1, POS_L1), (2, POS_L2)])
def test_qeh_hand_values(p, pos):
    loss, parts = QEHLoss(s_pos_init=0.0, s_rot_init=0.0, p=p)(*_batch())
    assert loss.item() == pytest.approx(pos + LOG_L, rel=1e-6)
    loss, parts = QEHLoss(p=p)(*_batch())
    assert loss.item() == pytest.approx(pos + LOG_L * E3 - 3.0, rel=1e-6)
    assert parts['rot'] == pytest.approx(LOG_L, rel=1e-12)
    assert set(parts) == {'pos', 'rot', 's_pos', 's_rot'}


def test_qeh_single_90deg_about_z():
    # Only sample 0: |log| L1 = |0| + |0| + |pi/4| = pi/4.
    pos = torch.zeros(1, 3, dtype=torch.float64)
    q_hat = torch.tensor([[0.0, 0.0, S, S]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    _, parts = QEHLoss()(pos, q_hat, pos, q)
    assert parts['rot'] == pytest.approx(math.pi / 4.0, rel=1e-14)
    assert parts['pos'] == 0.0


def test_qeh_rot_term_is_half_angle_for_random_rotations():
    pos_pred, quat_pred, pos_gt, quat_gt = _random_batch(200, seed=4)
    loss = QEHLoss(p=2)
    theta = loss.rotation_term(quat_pred, quat_gt).numpy()
    angle = np.radians(g.orientation_error_deg(quat_pred.numpy(), quat_gt.numpy()))
    assert np.allclose(theta, angle / 2.0, atol=1e-12)


# ----------------------------------------------------------------------------- invariance

@pytest.mark.parametrize('p', [1, 2])
def test_qeh_invariant_to_quaternion_sign(p):
    pos_pred, quat_pred, pos_gt, quat_gt = _random_batch(seed=1)
    loss = QEHLoss(p=p)
    ref, _ = loss(pos_pred, quat_pred, pos_gt, quat_gt)
    for qp, qg in ((-quat_pred, quat_gt), (quat_pred, -quat_gt), (-quat_pred, -quat_gt)):
        val, _ = loss(pos_pred, qp, pos_gt, qg)
        assert torch.equal(val, ref)
    # Also invariant to the scale of the prediction.
    val, _ = loss(pos_pred, 7.0 * quat_pred, pos_gt, quat_gt)
    assert val.item() == pytest.approx(ref.item(), rel=1e-12)


@pytest.mark.parametrize('cls', [PoseNetLoss, NHLoss])
def test_min_form_invariant_to_quaternion_sign(cls):
    pos_pred, quat_pred, pos_gt, quat_gt = _random_batch(seed=2)
    loss = cls()
    ref, _ = loss(pos_pred, quat_pred, pos_gt, quat_gt)
    for qp, qg in ((-quat_pred, quat_gt), (quat_pred, -quat_gt)):
        val, _ = loss(pos_pred, qp, pos_gt, qg)
        assert torch.equal(val, ref)


# ------------------------------------------------------------------------------ gradients

@pytest.mark.parametrize('name', ['posenet', 'nh', 'qeh'])
@pytest.mark.parametrize('p', [1, 2])
@pytest.mark.parametrize('sign', [1.0, -1.0])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_gradients_finite_at_zero_error(name, p, sign, dtype):
    _, _, pos_gt, quat_gt = _random_batch(8, seed=3, dtype=dtype)
    pos_pred = pos_gt.clone().requires_grad_(True)
    quat_pred = (sign * quat_gt).clone().requires_grad_(True)
    loss_fn = build_loss(name, p=p)
    loss, parts = loss_fn(pos_pred, quat_pred, pos_gt, quat_gt)
    loss.backward()
    assert parts['pos'] == 0.0
    assert parts['rot'] == pytest.approx(0.0, abs=1e-6)
    for grad in [pos_pred.grad, quat_pred.grad] + [x.grad for x in loss_fn.parameters()]:
        assert grad is not None and torch.all(torch.isfinite(grad))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_qeh_gradient_finite_at_identity(dtype):
    q = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=dtype)
    for pred in (q.clone(), -q.clone()):
        pred.requires_grad_(True)
        g.torch_quat_error_log(q, pred).sum().backward()
        assert torch.all(torch.isfinite(pred.grad))


def test_learned_weights_receive_gradients():
    for cls in (NHLoss, QEHLoss):
        loss_fn = cls()
        batch = _batch(requires_grad=True)
        loss, parts = loss_fn(*batch)
        loss.backward()
        # dL/ds = 1 - L_term * exp(-s).
        assert loss_fn.s_pos.grad.item() == pytest.approx(1.0 - parts['pos'], rel=1e-6)
        assert loss_fn.s_rot.grad.item() == pytest.approx(1.0 - parts['rot'] * E3, rel=1e-5)
        assert len(list(loss_fn.parameters())) == 2
    assert len(list(PoseNetLoss().parameters())) == 0


def test_qeh_loss_gradcheck_away_from_zero():
    pos_pred, quat_pred, pos_gt, quat_gt = _random_batch(6, seed=5)
    loss_fn = QEHLoss(p=2).double()
    quat_pred.requires_grad_(True)
    pos_pred.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: loss_fn(a, b, pos_gt, quat_gt)[0], (pos_pred, quat_pred))


# ---------------------------------------------------------------- torch quaternion funcs

def test_torch_functions_match_numpy():
    q1 = g.quat_normalize(np.random.default_rng(6).normal(size=(100, 4)))
    q2 = np.random.default_rng(7).normal(size=(100, 4))
    q2 = q2 / np.linalg.norm(q2, axis=-1, keepdims=True)  # any sign, w < 0 included
    t1, t2 = torch.from_numpy(q1), torch.from_numpy(q2)
    assert np.allclose(g.torch_quat_multiply(t1, t2).numpy(), g.quat_multiply(q1, q2))
    assert np.allclose(g.torch_quat_conjugate(t2).numpy(), g.quat_conjugate(q2))
    assert np.allclose(g.torch_quat_log(t2).numpy(), g.quat_log(q2), atol=1e-12)
    # error log = log of canonical relative rotation, i.e. half the rotation vector.
    rel = g.quat_normalize(g.quat_multiply(g.quat_conjugate(q1), q2))
    assert np.allclose(g.torch_quat_error_log(t1, t2).numpy(), g.quat_log(rel), atol=1e-12)


def test_torch_quat_log_gradcheck():
    q = torch.randn(20, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    q = q / q.norm(dim=-1, keepdim=True)  # both signs of w, away from |q_v| = 0
    q.requires_grad_(True)
    assert torch.autograd.gradcheck(g.torch_quat_log, (q,))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_torch_quat_log_jacobian_at_identity(dtype):
    # d log(q) / d q at q = (0, 0, 0, 1) is [I_3 | 0]: finite and exact.
    q = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype)
    jac = torch.autograd.functional.jacobian(g.torch_quat_log, q)
    expected = torch.cat([torch.eye(3, dtype=dtype), torch.zeros(3, 1, dtype=dtype)], dim=1)
    assert torch.allclose(jac, expected)
    # Near identity the series branch agrees with the closed form.
    v = torch.tensor([1e-9, -2e-9, 3e-9], dtype=torch.float64)
    qq = torch.cat([v, torch.sqrt(1.0 - (v * v).sum()).reshape(1)])
    assert torch.allclose(g.torch_quat_log(qq), v, rtol=1e-12, atol=0)
    # w < 0 is fine too (away from q = -1).
    qn = torch.tensor([0.3, -0.2, 0.1, -0.9], dtype=dtype, requires_grad=True)
    g.torch_quat_log(qn).sum().backward()
    assert torch.all(torch.isfinite(qn.grad))


# ------------------------------------------------------------------------------ factory

def test_build_loss_names_and_conf():
    assert isinstance(build_loss('PoseNet'), PoseNetLoss)
    assert isinstance(build_loss('BETA', beta=250.0), PoseNetLoss)
    assert build_loss('beta', beta=250.0).beta == 250.0
    assert isinstance(build_loss('nh'), NHLoss)
    qeh = build_loss('QEH', s_rot_init=-2.0, p=2)
    assert isinstance(qeh, QEHLoss) and qeh.p == 2 and qeh.s_rot.item() == -2.0
    assert set(LOSS_DEFAULTS) == {'posenet', 'nh', 'qeh'}
    assert LOSS_DEFAULTS['posenet'] == {'beta': 500.0, 'p': 1}
    assert LOSS_DEFAULTS['qeh'] == {'s_pos_init': 0.0, 's_rot_init': -3.0, 'p': 1}


def test_build_loss_errors():
    with pytest.raises(ValueError, match='posenet.*qeh|qeh.*posenet'):
        build_loss('geodesic')
    with pytest.raises(ValueError, match='s_rot_init'):
        build_loss('qeh', s_rot=-3.0)
    with pytest.raises(ValueError, match='beta'):
        build_loss('posenet', gamma=1.0)
    with pytest.raises(ValueError, match='1 or 2'):
        build_loss('nh', p=3)
    with pytest.raises(ValueError, match='beta'):
        PoseNetLoss(beta=-1.0)


def test_shape_errors():
    pos_pred, quat_pred, pos_gt, quat_gt = _random_batch(4)
    with pytest.raises(ValueError, match=r'\[B, 4\]'):
        QEHLoss()(pos_pred, quat_pred[:, :3], pos_gt, quat_gt)
    with pytest.raises(ValueError, match=r'\[B, 3\]'):
        PoseNetLoss()(pos_pred[:2], quat_pred, pos_gt, quat_gt)
