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

"""Scene-coordinate regression (``model.head.name=scr``): per-pixel 3D points, then PnP.

A pose regressor interpolates between training poses (Sattler et al., CVPR 2019); a network
that says *which 3D point each pixel sees* lets geometry (PnP-RANSAC) compute the pose, as
DSAC* and ACE (Brachmann et al., CVPR 2023) do. Here, as in ACE, a small per-pixel MLP
(1x1 convolutions, residual) reads frozen trunk features and outputs the point in the world
frame (metres), relative to the training cameras' mean position; it is trained from poses and
intrinsics alone with a reprojection loss (:mod:`camreloc_ros.core.training.scr`).

The features are the frozen trunk's outputs at the stages named by ``head.scr_stages``,
the deeper ones upsampled to the finest one's grid and concatenated (a hypercolumn). Each
feature cell is tied to a pixel of the *original* image through the project's preprocessing
(shorter side resized, centre crop: :func:`input_box` repeats
:func:`camreloc_ros.core.data.transforms.crop_box`, which ``models`` may not import), so PnP
runs with the camera's own intrinsics at the image's own size.

The pose: poselib's LO-RANSAC P3P with non-linear refinement (pycolmap or OpenCV where
poselib is missing), covariance from the inliers' reprojection Jacobian, inflated by the
share of outliers (a frame with few inliers is one whose coordinates the network is unsure
of).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from camreloc_ros.core.geometry import pnp_covariance, solve_pnp

SCR_DEFAULT_WIDTH = 128


class ScrHead(nn.Module):
    """Per-pixel MLP: ``(B, C, h, w)`` features -> ``(B, 3, h, w)`` normalised coordinates.

    Linear layers applied to the channel axis (the same as 1x1 convolutions), so training
    can feed it a buffer of single pixels ``(N, C)`` at no cost (:meth:`forward_pixels`).
    Outputs are in the model's normalised units: metres = ``out * pos_scale + pos_mean``.
    """

    temporal = False

    def __init__(self, in_channels: int, width: int = SCR_DEFAULT_WIDTH, depth: int = 2):
        super().__init__()
        self.inp = nn.Linear(in_channels, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
            for _ in range(int(depth)))
        self.out = nn.Linear(width, 3)
        with torch.no_grad():   # start near the scene's centre: every point in front of most
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def forward_pixels(self, feat_nc: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` pixel features -> ``(N, 3)`` normalised coordinates."""
        x = self.inp(feat_nc)
        for block in self.blocks:
            x = x + block(x)
        return self.out(F.relu(x))

    def forward(self, fmap_bchw: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, 3, h, w)`` normalised coordinates."""
        return self.forward_pixels(fmap_bchw.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def stage_indices(stage_names: list[str], wanted: list[str]) -> list[int]:
    """Return the indices of the trunk stages named ``wanted`` (finest first), or raise."""
    out = []
    for name in wanted:
        if name not in stage_names:
            raise ValueError(f'model.head.scr_stages: no stage {name!r} in this backbone; '
                             f'valid: {", ".join(stage_names)}')
        out.append(stage_names.index(name))
    if out != sorted(out) or len(set(out)) != len(out):
        raise ValueError(f'model.head.scr_stages must name distinct stages in trunk order, '
                         f'got {wanted}')
    return out


class HyperColumn(nn.Module):
    """Frozen trunk stages up to the deepest wanted one; their outputs concatenated.

    Holds references to the trunk's own stage modules: build it on demand (it is never a
    registered submodule of the model, so the checkpoint stores the trunk once).
    """

    def __init__(self, stages: nn.Sequential, indices: list[int]):
        super().__init__()
        self.stages = nn.Sequential(*list(stages)[:max(indices) + 1])
        self.indices = list(indices)

    def forward(self, images_b3hw: torch.Tensor) -> torch.Tensor:
        """Normalised images -> ``(B, C, h, w)`` features on the finest wanted grid."""
        outs, x = [], images_b3hw
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.indices:
                outs.append(x)
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode='bilinear', align_corners=False)
                            for o in outs[1:]]
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]


# ---------------------------------------------------------------------- pixels and geometry

def input_box(height: int, width: int) -> tuple[int, int, int]:
    """``(y0, x0, side)`` of the centre square the preprocessing keeps (its ``crop_box``)."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def pixel_centres(grid_hw: tuple[int, int], image_hw: tuple[int, int],
                  input_size: int, box: tuple | None = None) -> np.ndarray:
    """``(h*w, 2)`` original-image pixel (x, y) of each feature cell, row-major.

    A cell ``(i, j)`` of an ``h x w`` grid over the ``S x S`` input covers input pixels
    ``[j*S/w, (j+1)*S/w)``; its centre is carried back through the resize and the crop. The
    exact sub-pixel convention does not matter for a network trained by reprojection (it
    learns the point seen at whatever pixel the cell is tied to), only that training and
    inference use the same one, which this function is. ``box`` ``(y0, x0, side)``: another
    square of the image than the centre one (training views).
    """
    h, w = int(grid_hw[0]), int(grid_hw[1])
    y0, x0, side = box if box is not None else input_box(int(image_hw[0]), int(image_hw[1]))
    scale = side / float(input_size)          # original pixels per input pixel
    u_in = (np.arange(w) + 0.5) * (input_size / w)   # continuous input coords (0 = left edge)
    v_in = (np.arange(h) + 0.5) * (input_size / h)
    u = x0 + u_in * scale - 0.5               # continuous -> pixel-centre convention
    v = y0 + v_in * scale - 0.5
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu.ravel(), vv.ravel()], axis=1)


@dataclass
class ScrPose:
    """A pose from scene coordinates: camera-to-world rotation and centre, inliers."""

    R_c2w: np.ndarray
    centre: np.ndarray
    covariance: np.ndarray      # (6, 6) position (m²), rotation about world axes (rad²)
    inliers: int
    points: int

    @property
    def ok(self) -> bool:
        """Whether PnP found a pose (else the pose is the scene centre, identity rotation)."""
        return self.inliers > 0


FAILED_COVARIANCE = np.diag([1e6] * 3 + [1e3] * 3)


def pose_from_coordinates(coords_n3: np.ndarray, xy_n2: np.ndarray, K: np.ndarray,
                          image_hw: tuple[int, int], threshold_px: float = 10.0,
                          iterations: int = 1000, min_inliers: int = 6,
                          seed: int = 0) -> ScrPose:
    """PnP-RANSAC from per-pixel scene coordinates -> :class:`ScrPose`.

    ``coords_n3``: world points (metres) seen at original-image pixels ``xy_n2`` of a camera
    with intrinsics ``K`` at ``image_hw``. Fewer than ``min_inliers`` inliers: a failed pose
    (``inliers == 0``) with a huge covariance, never a guess presented as a pose.
    The covariance is the inliers' Gauss-Newton estimate times ``points / inliers``: the
    Jacobian alone trusts a pose supported by a few lucky points as much as one supported by
    every pixel.
    """
    X = np.ascontiguousarray(coords_n3, np.float64)
    x = np.ascontiguousarray(xy_n2, np.float64)
    finite = np.all(np.isfinite(X), axis=1)
    X, x = X[finite], x[finite]
    size = (int(image_hw[1]), int(image_hw[0]))
    res = solve_pnp(x, X, np.asarray(K, np.float64), size, 'auto', threshold_px, seed,
                    iterations) if len(X) >= 4 else None
    if res is not None:
        R_c2w, C, mask = res
        if mask.sum() >= min_inliers:
            cov = pnp_covariance(R_c2w, C, K, X[mask], x[mask], min_sigma_px=1.0)
            cov = cov * (len(X) / float(mask.sum()))
            return ScrPose(R_c2w, C, cov, int(mask.sum()), len(X))
    centre = np.nanmean(X, axis=0) if len(X) else np.zeros(3)
    return ScrPose(np.eye(3), centre, FAILED_COVARIANCE.copy(), 0, len(X))
