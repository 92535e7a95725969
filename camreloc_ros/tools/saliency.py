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

"""``camreloc saliency CKPT IMAGES...``: which pixels the pose depends on.

The thesis' saliency maps ``|∇_I f(I; θ)|``: the gradient of the sum of the network's pose
outputs (normalised position and unit quaternion) with respect to the preprocessed input
image, absolute value, maximum over colour channels, scaled to [0, 1]. Bright regions are
the ones a small change of which moves the predicted pose most; a model that looks at
moving people or at the image border instead of the static scene shows it here.

Each output PNG is the network's input crop (left) beside the map overlaid on it (right),
``S x 2S`` pixels for input size ``S``. Temporal (GRU) models get a window of one frame.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.data.transforms import Preprocessor, read_rgb
from camreloc_ros.core.inference.engine import resolve_device
from camreloc_ros.tools.common import (atomic_write_bytes, collect_images, default_out_dir,
                                       require_file, tool_logging)

if TYPE_CHECKING:  # pragma: no cover - annotations only; torch loads when a model does
    import torch

    from camreloc_ros.core.models.pose_model import PoseModel

logger = logging.getLogger('camreloc_ros')

default_conf = {
    'device': 'auto',
    'overlay': 0.7,      # heatmap weight at the most salient pixels (right-hand image)
}


def saliency_map(model: PoseModel, image_chw: np.ndarray,
                 device: torch.device | str = 'cpu') -> np.ndarray:
    """``(S, S)`` saliency in [0, 1] of one preprocessed ``(3, S, S)`` image.

    ``|d(sum of pos_norm and quat outputs) / d input|``, maximum over colour channels.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image_chw, np.float32))[None].to(device)
    x.requires_grad_(True)
    # cuDNN has no RNN backward in eval mode; the native GRU kernels do.
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=not model.temporal):
        feat = model.features(x)
        if model.temporal:
            feat = feat[:, None]              # a window of one frame
        out = model.head_forward(feat)
        target = out['pos_norm'].sum() + out['quat'].sum()
        (grad,) = torch.autograd.grad(target, x)
    sal = grad[0].abs().amax(dim=0).float().cpu().numpy()
    # Raw gradients are spiky: scale by the 99th percentile (not the single maximum) and
    # clip, so the map shows regions rather than a few isolated pixels.
    peak = float(np.percentile(sal, 99.0)) or float(sal.max())
    return np.clip(sal / peak, 0.0, 1.0) if peak > 0 else sal


def render(resized_rgb: np.ndarray, sal: np.ndarray, overlay: float = 0.7) -> np.ndarray:
    """Input crop beside the heatmap blended in by saliency, as BGR ``(S, 2S, 3)`` for cv2.

    The blend weight grows with the saliency (up to ``overlay``), so unimportant regions
    keep the original image and the important ones turn red.
    """
    bgr = cv2.cvtColor(resized_rgb, cv2.COLOR_RGB2BGR)
    heat = cv2.applyColorMap(np.clip(sal * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (float(overlay) * np.clip(sal, 0.0, 1.0))[..., None]
    mixed = (bgr * (1.0 - alpha) + heat * alpha).round().astype(np.uint8)
    return np.concatenate([bgr, mixed], axis=1)


def _unique_names(images: list[Path]) -> list[str]:
    """Output stems; images with the same name from different folders get ``_2``, ``_3``."""
    seen: dict[str, int] = {}
    names = []
    for p in images:
        seen[p.stem] = seen.get(p.stem, 0) + 1
        names.append(p.stem if seen[p.stem] == 1 else f'{p.stem}_{seen[p.stem]}')
    return names


def main(conf: dict, paths: dict) -> Path:
    """Write ``<name>_saliency.png`` per image into ``paths['out']``; return that folder.

    ``paths``: ``checkpoint``, ``images`` (files and/or folders), optional ``out``
    (default ``<checkpoint dir>/saliency``).
    """
    from camreloc_ros.core.models.pose_model import PoseModel

    conf = merge_conf(default_conf, conf)
    tool_logging()
    ckpt = require_file(paths['checkpoint'], 'checkpoint')
    images = collect_images(paths['images'])
    out = Path(paths.get('out') or default_out_dir(ckpt, 'saliency'))
    device = resolve_device(conf['device'])
    model = PoseModel.from_checkpoint(ckpt).to(device).eval()
    spec = model.spec
    pre = Preprocessor(spec.input_size, spec.mean, spec.std)
    out.mkdir(parents=True, exist_ok=True)
    for path, name in zip(images, _unique_names(images)):
        resized = pre.resized(read_rgb(path))
        sal = saliency_map(model, pre.normalize(resized), device)
        ok, png = cv2.imencode('.png', render(resized, sal, float(conf['overlay'])))
        if not ok:
            raise RuntimeError(f'could not encode the saliency map of {path}')
        atomic_write_bytes(out / f'{name}_saliency.png', png.tobytes())
    logger.info(f'wrote {len(images)} saliency map(s) to {out}')
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc saliency``."""
    parser.add_argument('checkpoint', type=Path, help='checkpoint file (.pt)')
    parser.add_argument('images', type=Path, nargs='+', help='image files or folders')
    parser.add_argument('--out', type=Path, default=None,
                        help='output folder (default: <checkpoint dir>/saliency)')
    parser.add_argument('--device', default=default_conf['device'], help='auto, cpu or cuda[:N]')


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    return main({'device': args.device},
                {'checkpoint': args.checkpoint, 'images': args.images, 'out': args.out})
