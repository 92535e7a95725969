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

"""The map's own retrieval descriptor as ONNX: refinement without torch or the checkpoint.

``camreloc map`` stores, next to the training images' global descriptors, the network that
made them (trunk + GeM + L2 norm, exported with a dynamic image size). A refiner that runs
it through ONNX Runtime describes queries exactly as the map's images were described, needs
neither torch nor the ``.pt`` (an ONNX-only robot, or ``model:=x.onnx``), and cannot pair
the map with another trunk by mistake. Preprocessing and batching (:class:`ImageDescriptor`)
are shared with the torch :class:`~camreloc_ros.core.localization.retrieval.GlobalDescriptor`,
whose :class:`~camreloc_ros.core.localization.retrieval.GeMNet` is what gets exported.
"""

from __future__ import annotations

import io
from typing import Sequence
import warnings

import cv2
import numpy as np

from camreloc_ros.core.localization.map_file import (descriptor_conf_problem,
                                                     DESCRIPTOR_INPUT as INPUT,
                                                     DESCRIPTOR_OUTPUT as OUTPUT, MapError)


def descriptor_input(image: np.ndarray, size: int, mean: np.ndarray,
                     std: np.ndarray) -> np.ndarray:
    """RGB uint8 image -> ``(3, H, W)`` float32, shorter side ``size`` (the whole frame)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    h, w = image.shape[:2]
    s = size / min(h, w)
    out = (max(int(round(w * s)), 32), max(int(round(h * s)), 32))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    x = cv2.resize(image, out, interpolation=interp).astype(np.float32) / 255.0
    return ((x.transpose(2, 0, 1) - mean.reshape(3, 1, 1)) / std.reshape(3, 1, 1)).astype(
        np.float32)


class ImageDescriptor:
    """What the torch and the ONNX descriptor share: preprocessing, batching, the output.

    A subclass sets ``size``, ``mean``, ``std`` and ``dim`` and describes one preprocessed
    image (:meth:`_describe`: ``(1, 3, H, W)`` float32 -> ``(C,)``).
    """

    size: int
    mean: np.ndarray
    std: np.ndarray
    dim: int

    def _describe(self, x_13hw: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """One RGB uint8 image -> ``(C,)``; a list of images -> ``(N, C)`` float32."""
        single = isinstance(images, np.ndarray)
        batch = [images] if single else list(images)
        out = [self._describe(descriptor_input(np.asarray(image), self.size, self.mean,
                                               self.std)[None])
               for image in batch]   # images may differ in size: one at a time
        arr = np.stack(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)
        return arr[0] if single else arr


def export_descriptor(describe, opset: int = 17) -> bytes:
    """ONNX bytes of a :class:`GlobalDescriptor`'s network (input ``(1, 3, H, W)``)."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')   # the TorchScript exporter's deprecation/tracer notes
        torch.onnx.export(describe.net.cpu().eval(),
                          (torch.zeros(1, 3, describe.size, describe.size + 32),), buf,
                          dynamo=False, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {2: 'height', 3: 'width'}},
                          opset_version=opset, do_constant_folding=True)
    describe.net.to(describe.device)
    return buf.getvalue()


class OnnxDescriptor(ImageDescriptor):
    """RGB image -> unit-norm descriptor ``(C,)`` by the map's ONNX network (no torch)."""

    def __init__(self, onnx_bytes: bytes, conf: dict, threads: int = 0,
                 what: str = 'map descriptor network'):
        """Build the session; ``what`` names the network (its map) in errors.

        The network is checked to read no file before ONNX Runtime sees it, and ``conf``
        (the map's ``meta.descriptor``) to hold the settings: each a :class:`MapError`.
        """
        import onnxruntime as ort

        from camreloc_ros.core.inference.onnx_format import inference_session

        problem = descriptor_conf_problem(conf)
        if problem is not None:
            raise MapError(f'{what}: {problem}')
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = inference_session(bytes(onnx_bytes), what, opts,
                                         ['CPUExecutionProvider'], MapError)
        self._conf = dict(conf)
        self.size = int(conf['input_shorter_side'])
        self.mean = np.asarray(conf['mean'], np.float32)
        self.std = np.asarray(conf['std'], np.float32)
        self.dim = int(conf['dim'])

    def conf(self) -> dict:
        """Return what identifies these descriptors (as stored in the map)."""
        return dict(self._conf)

    def _describe(self, x_13hw: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: x_13hw})[0][0]
