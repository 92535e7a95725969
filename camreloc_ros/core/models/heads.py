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
"""

import torch
from torch import nn


def _outputs(width: int) -> nn.ModuleDict:
    quat = nn.Linear(width, 4)
    with torch.no_grad():  # start at the identity rotation: a sane first guess
        quat.weight.mul_(0.01)
        quat.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    logvar = nn.Linear(width, 6)
    nn.init.zeros_(logvar.weight)
    nn.init.zeros_(logvar.bias)
    return nn.ModuleDict({'pos': nn.Linear(width, 3), 'quat': quat, 'logvar': logvar})


def _apply(out: nn.ModuleDict, hidden: torch.Tensor) -> dict:
    return {'pos_norm': out['pos'](hidden), 'quat_raw': out['quat'](hidden),
            'logvar': out['logvar'](hidden.detach())}


class RegressorHead(nn.Module):
    """PoseNet: FC -> ReLU -> dropout -> position (3) and quaternion (4)."""

    temporal = False

    def __init__(self, in_features: int, width: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(inplace=True),
                                nn.Dropout(dropout))
        self.out = _outputs(width)

    def forward(self, feat_bc: torch.Tensor) -> dict:
        """``(B, C)`` pooled features -> dict of ``(B, 3)``, ``(B, 4)``, ``(B, 6)``."""
        return _apply(self.out, self.fc(feat_bc))


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

    def forward(self, feat_bc: torch.Tensor) -> dict:
        """``(B, C)`` -> grid ``(B, rows, cols)`` -> four final LSTM states ``(B, 4*hidden)``."""
        grid_brc = self.fc(feat_bc).view(-1, self.rows, self.cols)
        _, (h_rows, _) = self.lstm_rows(grid_brc)                 # top-down and bottom-up
        _, (h_cols, _) = self.lstm_cols(grid_brc.transpose(1, 2))  # left-right and back
        hidden = torch.cat([h_rows[0], h_rows[1], h_cols[0], h_cols[1]], dim=1)
        return _apply(self.out, self.drop(hidden))


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

    def forward(self, feat_btc: torch.Tensor) -> dict:
        """``(B, T, C)`` per-frame features -> dict of ``(B, T, 3)``, ``(B, T, 4)``, ..."""
        seq_btw = self.fc(feat_btc)
        hidden_bth, _ = self.gru(seq_btw)
        return _apply(self.out, hidden_bth)


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
