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

"""Pose regression losses: PoseNet (beta), Naive Homoscedastic (NH), Quaternion Error (QEH).

References: Kendall et al., ICCV 2015 (PoseNet, weighted loss with beta) and CVPR 2017
(homoscedastic uncertainty weighting); Zurad 2017 (quaternion-error loss, QEH).

Every loss is an ``nn.Module`` whose ``forward(pos_pred, quat_pred, pos_gt, quat_gt)``
takes ``[B, 3]`` positions and ``[B, 4]`` quaternions in (x, y, z, w) order (see
:mod:`camreloc_ros.core.geometry`) and returns ``(loss, parts)``: a scalar tensor and a
dict of plain floats for logging (``pos``, ``rot`` and, for learned weighting,
``s_pos``, ``s_rot``).  Per-sample terms use the p-norm (p = 1, the thesis default,
or 2) and are averaged over the batch.  The predicted quaternion is always
normalised inside; the ground truth is normalised too (harmless when already unit).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import torch
from torch import nn

from camreloc_ros.core.geometry import torch_quat_error_log, torch_quat_normalize

__all__ = ['PoseNetLoss', 'NHLoss', 'QEHLoss', 'build_loss', 'LOSS_DEFAULTS', 'LOSS_NAMES']

LossOutput = Tuple[torch.Tensor, Dict[str, float]]


def _check_p(p: Any) -> int:
    """Validate the norm order; only L1 and L2 are meaningful here."""
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f'p: expected 1 or 2 (norm order), got {p!r}')
    return int(p)


def _check_inputs(pos_pred: torch.Tensor, quat_pred: torch.Tensor, pos_gt: torch.Tensor,
                  quat_gt: torch.Tensor) -> None:
    """Raise ValueError with the offending shapes when inputs do not match [B,3]/[B,4]."""
    if (pos_pred.shape[-1:] != (3,) or pos_gt.shape != pos_pred.shape
            or quat_pred.shape[-1:] != (4,) or quat_gt.shape != quat_pred.shape
            or pos_pred.shape[:-1] != quat_pred.shape[:-1]):
        raise ValueError(
            'expected pos_pred, pos_gt of shape [B, 3] and quat_pred, quat_gt of shape '
            f'[B, 4]; got {tuple(pos_pred.shape)}, {tuple(quat_pred.shape)}, '
            f'{tuple(pos_gt.shape)}, {tuple(quat_gt.shape)}')


def _pnorm(x: torch.Tensor, p: int) -> torch.Tensor:
    """Per-sample p-norm over the last axis (gradient 0, not NaN, at x = 0)."""
    if p == 1:
        return x.abs().sum(dim=-1)
    return torch.linalg.vector_norm(x, ord=2, dim=-1)


def position_term(pos_pred: torch.Tensor, pos_gt: torch.Tensor, p: int) -> torch.Tensor:
    """Per-sample ``||x - x_hat||_p``."""
    return _pnorm(pos_gt - pos_pred, p)


def quat_distance_term(quat_pred: torch.Tensor, quat_gt: torch.Tensor,
                       p: int) -> torch.Tensor:
    """Per-sample ``min(||q - q_hat/|q_hat| ||_p, ||q + q_hat/|q_hat| ||_p)``.

    Kendall's term compares quaternion components directly, which penalises a
    prediction of ``-q`` although it is the same rotation; taking the minimum over
    the two signs of ``q`` makes the term fair to the double cover.
    """
    qn = torch_quat_normalize(quat_pred)
    qg = torch_quat_normalize(quat_gt)
    return torch.minimum(_pnorm(qg - qn, p), _pnorm(qg + qn, p))


def quat_log_term(quat_pred: torch.Tensor, quat_gt: torch.Tensor, p: int) -> torch.Tensor:
    """Per-sample ``||log(q^-1 ⊗ q_hat/|q_hat|)||_p`` (sign-invariant, see geometry)."""
    return _pnorm(torch_quat_error_log(quat_gt, quat_pred), p)


class PoseNetLoss(nn.Module):
    """PoseNet loss ``L = ||x - x_hat||_p + beta * ||q - q_hat/|q_hat| ||_p``.

    ``beta`` balances metres against quaternion units (Kendall 2015 suggests 120 to 750
    indoors, 250 to 2000 outdoors).  The rotation term is the minimum over ``q`` and
    ``-q`` (see :func:`quat_distance_term`).
    """

    def __init__(self, beta: float = 500.0, p: int = 1) -> None:
        super().__init__()
        beta = float(beta)
        if not math.isfinite(beta) or beta < 0.0:
            raise ValueError(f'beta: expected a finite number >= 0, got {beta!r}')
        self.beta = beta
        self.p = _check_p(p)

    def forward(self, pos_pred: torch.Tensor, quat_pred: torch.Tensor,
                pos_gt: torch.Tensor, quat_gt: torch.Tensor) -> LossOutput:
        """Return ``(loss, {'pos', 'rot'})`` with batch-mean terms."""
        _check_inputs(pos_pred, quat_pred, pos_gt, quat_gt)
        l_pos = position_term(pos_pred, pos_gt, self.p).mean()
        l_rot = quat_distance_term(quat_pred, quat_gt, self.p).mean()
        loss = l_pos + self.beta * l_rot
        return loss, {'pos': float(l_pos.detach()), 'rot': float(l_rot.detach())}

    def extra_repr(self) -> str:
        """Show hyper-parameters when the module is printed."""
        return f'beta={self.beta}, p={self.p}'


class _HomoscedasticLoss(nn.Module):
    """``L = L_pos e^{-s_pos} + s_pos + L_rot e^{-s_rot} + s_rot`` with learned s = log sigma^2.

    Learning ``s`` instead of sigma keeps the weights positive and the optimisation
    stable (Kendall 2017); subclasses define the rotation term.
    """

    def __init__(self, s_pos_init: float = 0.0, s_rot_init: float = -3.0, p: int = 1) -> None:
        super().__init__()
        for name, val in (('s_pos_init', s_pos_init), ('s_rot_init', s_rot_init)):
            if not math.isfinite(float(val)):
                raise ValueError(f'{name}: expected a finite number, got {val!r}')
        self.p = _check_p(p)
        self.s_pos = nn.Parameter(torch.tensor(float(s_pos_init)))
        self.s_rot = nn.Parameter(torch.tensor(float(s_rot_init)))

    def rotation_term(self, quat_pred: torch.Tensor, quat_gt: torch.Tensor) -> torch.Tensor:
        """Per-sample rotation loss; implemented by subclasses."""
        raise NotImplementedError

    def forward(self, pos_pred: torch.Tensor, quat_pred: torch.Tensor,
                pos_gt: torch.Tensor, quat_gt: torch.Tensor) -> LossOutput:
        """Return ``(loss, {'pos', 'rot', 's_pos', 's_rot'})`` with batch-mean terms."""
        _check_inputs(pos_pred, quat_pred, pos_gt, quat_gt)
        l_pos = position_term(pos_pred, pos_gt, self.p).mean()
        l_rot = self.rotation_term(quat_pred, quat_gt).mean()
        loss = (l_pos * torch.exp(-self.s_pos) + self.s_pos
                + l_rot * torch.exp(-self.s_rot) + self.s_rot)
        parts = {
            'pos': float(l_pos.detach()),
            'rot': float(l_rot.detach()),
            's_pos': float(self.s_pos.detach()),
            's_rot': float(self.s_rot.detach()),
        }
        return loss, parts

    def extra_repr(self) -> str:
        """Show the norm order when the module is printed."""
        return f'p={self.p}'


class NHLoss(_HomoscedasticLoss):
    """Naive Homoscedastic loss: homoscedastic weighting of PoseNet's two terms.

    ``L_rot = min(||q - q_hat/|q_hat| ||_p, ||q + q_hat/|q_hat| ||_p)`` as in
    :class:`PoseNetLoss`.
    """

    def rotation_term(self, quat_pred: torch.Tensor, quat_gt: torch.Tensor) -> torch.Tensor:
        """Per-sample quaternion component distance (sign-fair)."""
        return quat_distance_term(quat_pred, quat_gt, self.p)


class QEHLoss(_HomoscedasticLoss):
    """Quaternion Error Homoscedastic loss (Zurad 2017).

    ``L_rot = ||log(q^-1 ⊗ q_hat/|q_hat|)||_p``: a 3-vector whose norm is half the
    rotation angle between prediction and ground truth.  Invariant to the sign of
    either quaternion; gradients are finite at zero error.
    """

    def rotation_term(self, quat_pred: torch.Tensor, quat_gt: torch.Tensor) -> torch.Tensor:
        """Per-sample p-norm of the quaternion log error."""
        return quat_log_term(quat_pred, quat_gt, self.p)


LOSS_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'posenet': {'beta': 500.0, 'p': 1},
    'nh': {'s_pos_init': 0.0, 's_rot_init': -3.0, 'p': 1},
    'qeh': {'s_pos_init': 0.0, 's_rot_init': -3.0, 'p': 1},
}

_LOSS_CLASSES = {'posenet': PoseNetLoss, 'nh': NHLoss, 'qeh': QEHLoss}
_ALIASES = {'beta': 'posenet'}
LOSS_NAMES = tuple(sorted(set(_LOSS_CLASSES) | set(_ALIASES)))


def build_loss(name: str, **conf: Any) -> nn.Module:
    """Build a loss by name ('posenet' or 'beta', 'nh', 'qeh'; case-insensitive).

    ``conf`` overrides :data:`LOSS_DEFAULTS`; unknown names or keys raise ValueError
    listing the valid ones, so config typos fail loudly instead of being ignored.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _LOSS_CLASSES:
        raise ValueError(f'unknown loss {name!r}; valid names: {", ".join(LOSS_NAMES)}')
    defaults = LOSS_DEFAULTS[key]
    unknown = sorted(set(conf) - set(defaults))
    if unknown:
        raise ValueError(f'unknown option(s) {unknown} for loss {key!r}; '
                         f'valid options: {", ".join(sorted(defaults))}')
    return _LOSS_CLASSES[key](**{**defaults, **conf})
