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

"""Pose heads on pooled CNN features: Regressor, Spatial-LSTM and Temporal-GRU.

Each head returns position (normalised units), an unnormalised quaternion (x, y, z, w) and six
log-variances (x y z, rotation about x y z) from a small variance branch. The variance branch
reads *detached* hidden features and is trained on detached errors, so it can never change
the pose the network learns; it only learns how wrong that pose tends to be.

Why the variance has a second part (:class:`DistanceVariance`): the branch learns the
*training* errors, and with one trainable trunk stage its ranking did not carry over to unseen
frames (Spearman -0.35 on the HoloLens test blocks, docs/accuracy.md). How far a frame's
pooled features lie from the nearest training frame's is what a regressor that interpolates
between training views cannot hide; at evaluation the log-variance of each block becomes
``gamma * learned + alpha + beta * log(distance)``, with ``(alpha, beta, gamma)`` fitted by the
trainer on validation frames. While training, and for models that never had it fitted
(``memory`` all zero, coefficients zero), the learned branch alone speaks.
"""

import torch
from torch import nn

MAX_MEMORY = 4096   # training frames kept for the distance (evenly spaced beyond it)


class DistanceVariance(nn.Module):
    """Log-variance correction from the feature distance to the nearest training frame.

    ``memory`` (M, C): unit-norm pooled features of training frames; ``coef`` (3, 2): per block
    (position, rotation) ``alpha``, ``beta`` and ``gamma - 1``. Both are buffers, saved with the
    weights and exported to ONNX (one matrix product and a max per frame). Checkpoints written
    before it load with the neutral values (see ``_load_from_state_dict``).
    """

    def __init__(self, in_features: int):
        super().__init__()
        self.register_buffer('memory', torch.zeros(1, in_features))
        self.register_buffer('coef', torch.zeros(3, 2))

    @property
    def fitted(self) -> bool:
        """Whether a memory and coefficients were set (:meth:`set_memory`, :meth:`set_coef`)."""
        return bool(self.coef.abs().sum() > 0)

    def reset(self) -> None:
        """Back to neutral (the learned branch alone), with the same buffer shapes on every rank.

        The trainer resets it before each epoch: the memory's length differs from the neutral
        one, and DistributedDataParallel broadcasts buffers of equal shapes only.
        """
        self.memory = torch.zeros(1, self.memory.shape[1], device=self.coef.device)
        self.coef = torch.zeros(3, 2, device=self.coef.device)

    def set_memory(self, feat_mc: torch.Tensor) -> None:
        """Keep the training frames' pooled features (at most ``MAX_MEMORY``, evenly spaced)."""
        feat_mc = feat_mc.detach().float()
        if len(feat_mc) > MAX_MEMORY:
            idx = torch.linspace(0, len(feat_mc) - 1, MAX_MEMORY).round().long()
            feat_mc = feat_mc[idx.to(feat_mc.device)]
        self.memory = nn.functional.normalize(feat_mc, dim=-1).to(self.coef.device)

    def set_coef(self, coef_32) -> None:
        """Set ``(alpha, beta, gamma - 1)`` of the position and the rotation block."""
        self.coef = torch.as_tensor(coef_32, dtype=torch.float32,
                                    device=self.coef.device).reshape(3, 2).clone()

    def log_distance(self, feat: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` features -> ``(..., 1)`` log of 1 - the best cosine to the memory."""
        sim = nn.functional.normalize(feat.detach().float(), dim=-1) @ self.memory.t()
        return torch.log((1.0 - sim.max(dim=-1, keepdim=True).values).clamp_min(1e-6))

    def forward(self, feat: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Combine the learned ``logvar`` (..., 6) with the distance of ``feat`` (..., C)."""
        ld = self.log_distance(feat)
        alpha = self.coef[0].repeat_interleave(3)
        beta = self.coef[1].repeat_interleave(3)
        gamma = 1.0 + self.coef[2].repeat_interleave(3)
        return gamma * logvar + alpha + beta * ld

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Load older checkpoints (no buffers: neutral) and memories of any length."""
        for name in ('memory', 'coef'):
            key = prefix + name
            if key not in state_dict:
                state_dict[key] = getattr(self, name).clone()
            elif name == 'memory':
                self.memory = torch.zeros_like(state_dict[key], device=self.coef.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def _outputs(width: int) -> nn.ModuleDict:
    quat = nn.Linear(width, 4)
    with torch.no_grad():  # start at the identity rotation: a sane first guess
        quat.weight.mul_(0.01)
        quat.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    logvar = nn.Linear(width, 6)
    nn.init.zeros_(logvar.weight)
    nn.init.zeros_(logvar.bias)
    return nn.ModuleDict({'pos': nn.Linear(width, 3), 'quat': quat, 'logvar': logvar})


def _apply(out: nn.ModuleDict, hidden: torch.Tensor, dist: DistanceVariance | None = None,
           feat: torch.Tensor | None = None) -> dict:
    logvar = out['logvar'](hidden.detach())
    if dist is not None and not dist.training:   # training fits the learned branch alone
        logvar = dist(feat, logvar)
    return {'pos_norm': out['pos'](hidden), 'quat_raw': out['quat'](hidden), 'logvar': logvar}


class RegressorHead(nn.Module):
    """PoseNet: FC -> ReLU -> dropout -> position (3) and quaternion (4)."""

    temporal = False

    def __init__(self, in_features: int, width: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(inplace=True),
                                nn.Dropout(dropout))
        self.out = _outputs(width)
        self.dist = DistanceVariance(in_features)

    def forward(self, feat_bc: torch.Tensor) -> dict:
        """``(B, C)`` pooled features -> dict of ``(B, 3)``, ``(B, 4)``, ``(B, 6)``."""
        return _apply(self.out, self.fc(feat_bc), self.dist, feat_bc)


class SpatialLSTMHead(nn.Module):
    """Walch et al.: FC to a grid, LSTMs scan it in four directions, states concatenated."""

    temporal = False

    def __init__(self, in_features: int, width: int = 2048, grid: tuple = (32, 64),
                 hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        rows, cols = int(grid[0]), int(grid[1])
        if rows * cols != width:
            raise ValueError(f'spatial-LSTM grid {rows}x{cols} must hold width {width}')
        self.rows, self.cols = rows, cols
        self.fc = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(inplace=True))
        self.lstm_rows = nn.LSTM(cols, hidden, batch_first=True, bidirectional=True)
        self.lstm_cols = nn.LSTM(rows, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)
        self.out = _outputs(4 * hidden)
        self.dist = DistanceVariance(in_features)

    def forward(self, feat_bc: torch.Tensor) -> dict:
        """``(B, C)`` -> grid ``(B, rows, cols)`` -> four final LSTM states ``(B, 4*hidden)``."""
        grid_brc = self.fc(feat_bc).view(-1, self.rows, self.cols)
        _, (h_rows, _) = self.lstm_rows(grid_brc)                 # top-down and bottom-up
        _, (h_cols, _) = self.lstm_cols(grid_brc.transpose(1, 2))  # left-right and back
        hidden = torch.cat([h_rows[0], h_rows[1], h_cols[0], h_cols[1]], dim=1)
        return _apply(self.out, self.drop(hidden), self.dist, feat_bc)


class TemporalGRUHead(nn.Module):
    """VidLoc-style: a bidirectional GRU over T frames' features, a pose per frame."""

    temporal = True

    def __init__(self, in_features: int, width: int = 1024, hidden: int = 256,
                 dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(inplace=True),
                                nn.Dropout(dropout))
        self.gru = nn.GRU(width, hidden, batch_first=True, bidirectional=True)
        self.out = _outputs(2 * hidden)
        self.dist = DistanceVariance(in_features)

    def forward(self, feat_btc: torch.Tensor) -> dict:
        """``(B, T, C)`` per-frame features -> dict of ``(B, T, 3)``, ``(B, T, 4)``, ..."""
        seq_btw = self.fc(feat_btc)
        hidden_bth, _ = self.gru(seq_btw)
        return _apply(self.out, hidden_bth, self.dist, feat_btc)


HEADS = {'regressor': RegressorHead, 'lstm': SpatialLSTMHead, 'gru': TemporalGRUHead}


def build_head(conf: dict, in_features: int) -> nn.Module:
    """Create the head named in ``conf['name']`` with its sizes from ``conf``."""
    name = conf['name']
    if name == 'regressor':
        return RegressorHead(in_features, conf['width'], conf['dropout'])
    if name == 'lstm':
        return SpatialLSTMHead(in_features, conf['width'], tuple(conf['lstm_grid']),
                               conf['lstm_hidden'], conf['dropout'])
    if name == 'gru':
        return TemporalGRUHead(in_features, conf['width'], conf['gru_hidden'], conf['dropout'])
    raise ValueError(f'unknown head {name!r}; valid: {", ".join(HEADS)}')
