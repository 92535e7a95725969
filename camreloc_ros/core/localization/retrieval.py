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

"""Global image descriptors from the pose model's own trunk, for image retrieval.

The trunk that regresses the pose already describes the image: GeM pooling (p = 3,
Radenović et al.) over its last feature map, L2-normalised, ranks the training images by
visual similarity at the cost of one CNN pass. The whole frame is used (shorter side
resized to the network input size, no centre crop), so nothing at the image borders is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.io import atomic_output, cache_folder, content_digest
from camreloc_ros.core.localization.descriptor_onnx import ImageDescriptor
from camreloc_ros.core.models.pose_model import PoseModel

logger = logging.getLogger('camreloc_ros')


class GeMNet(torch.nn.Module):
    """The descriptor network: the pose model's trunk, GeM pooling, L2 norm.

    What :class:`GlobalDescriptor` runs and what a map stores as ONNX
    (:func:`~camreloc_ros.core.localization.descriptor_onnx.export_descriptor`): one definition.
    """

    def __init__(self, backbone: torch.nn.Module, p: float):
        super().__init__()
        self.backbone = backbone
        self.p = float(p)

    def forward(self, images_b3hw: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(B, 3, H, W)`` -> unit-norm descriptors ``(B, C)``."""
        fmap = self.backbone(images_b3hw).float()
        gem = fmap.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
        return torch.nn.functional.normalize(gem, dim=1)


class GlobalDescriptor(ImageDescriptor):
    """RGB image -> unit-norm GeM descriptor ``(C,)`` of the pose model's trunk output."""

    def __init__(self, model: PoseModel, p: float = 3.0, device: str = 'cpu'):
        self.device = torch.device(device)
        self.net = GeMNet(model.backbone, p).eval().to(self.device)
        self.backbone = self.net.backbone
        spec = model.spec
        self.size = int(spec.input_size)
        self.mean = np.asarray(spec.mean, np.float32)
        self.std = np.asarray(spec.std, np.float32)
        self.p = self.net.p
        self.dim = int(model.backbone.out_channels)

    @classmethod
    def from_checkpoint(cls, checkpoint, p: float = 3.0, device: str = 'cpu'
                        ) -> 'GlobalDescriptor':
        """Build the descriptor of a checkpoint's (``.pt``) trunk."""
        return cls(PoseModel.from_checkpoint(checkpoint), p, device)

    def conf(self) -> dict:
        """Return what identifies these descriptors (stored in the map)."""
        return {'pooling': 'gem', 'p': self.p, 'input_shorter_side': self.size,
                'backbone': self.backbone.name, 'dim': self.dim,
                'mean': self.mean.tolist(), 'std': self.std.tolist()}

    @torch.no_grad()
    def _describe(self, x_13hw: np.ndarray) -> np.ndarray:
        return self.net(torch.from_numpy(x_13hw).to(self.device))[0].cpu().numpy()


def describe_files(describe: GlobalDescriptor, paths: Sequence[str | Path],
                   cache_dir: str | Path | None = None) -> np.ndarray:
    """Descriptors ``(N, C)`` of image files, cached under ``retrieval/`` of the cache root.

    Every evaluation of a checkpoint describes the same training images again; the cache makes
    the second one free. The key covers the trunk's weights, the descriptor settings and each
    file's path, size and modification time, so a retrained trunk or a changed image misses.
    A cache that cannot be written is skipped, never an error.
    """
    key = hashlib.sha256(json.dumps(describe.conf(), sort_keys=True).encode())
    key.update(content_digest(describe.backbone.state_dict()).encode())
    for path in paths:
        st = Path(path).stat()
        key.update(f'{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
    file = Path(cache_dir or cache_folder('retrieval')) / f'{key.hexdigest()[:40]}.npy'
    if file.is_file():
        try:
            cached = np.load(file, allow_pickle=False)
            if cached.shape == (len(paths), describe.dim):
                return cached
        except (OSError, ValueError):
            pass                                  # damaged: described again below
    out = np.stack([describe(read_rgb(p)) for p in paths]) if len(paths) else \
        np.zeros((0, describe.dim), np.float32)
    try:
        with atomic_output(file) as tmp, open(tmp, 'wb') as fh:
            np.save(fh, out, allow_pickle=False)
    except OSError as exc:
        logger.debug('retrieval cache not written (%s)', exc)
    return out
