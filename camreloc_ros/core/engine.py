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

"""The inference engine shared by the live node, offline evaluation and bag tools.

One code path from an RGB frame to a pose, so that a pose published live equals the pose the
evaluation tools compute for the same image. For temporal (GRU) models the CNN runs once per
frame and its pooled features go into a ring buffer; the head runs over the last N features and
the newest frame's pose is returned (causal windows, the same rule offline and live).
"""

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from camreloc_ros.core.data.transforms import Preprocessor
from camreloc_ros.core.models.pose_model import PoseModel


@dataclass
class Prediction:
    """One frame's pose: camera-to-world position (m), quaternion (x, y, z, w), covariance."""

    position: np.ndarray        # (3,)
    quaternion: np.ndarray      # (4,) x, y, z, w; unit, w >= 0
    covariance: np.ndarray      # (6, 6) x y z, rot x y z; m² and rad²
    window: int = 1             # frames the temporal head saw (1 for single-frame heads)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'device {device!r} requested but CUDA is not available here')
    if device != 'cpu' and not device.startswith('cuda'):
        raise ValueError(f'device must be auto, cpu or cuda[:N], got {device!r}')
    return torch.device(device)


def covariance_from_var(var_6: np.ndarray) -> np.ndarray:
    """Diagonal 6x6 covariance from the model's six variances (kept strictly positive)."""
    return np.diag(np.maximum(np.asarray(var_6, np.float64), 1e-12))


class InferenceEngine:
    """Preprocess, run the CNN once per frame, run the head, decode a :class:`Prediction`."""

    def __init__(self, model: PoseModel, device: str = 'cpu', fp16: bool = False,
                 threads: int | None = None, max_gap: float = 1.0):
        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.fp16 = bool(fp16) and self.device.type == 'cuda'
        if self.device.type == 'cpu':
            self.model = self.model.to(memory_format=torch.channels_last)
        spec = model.spec
        self.pre = Preprocessor(spec.input_size, spec.mean, spec.std)
        self.window = model.window
        self.max_gap = float(max_gap)
        self._buffer: deque = deque(maxlen=self.window)
        self._last_stamp: float | None = None
        self._input = np.empty((1, 3, spec.input_size, spec.input_size), np.float32)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> 'InferenceEngine':
        """Load a checkpoint and wrap it."""
        return cls(PoseModel.from_checkpoint(path), **kwargs)

    @property
    def temporal(self) -> bool:
        """Whether the model keeps a window of past frames."""
        return self.model.temporal

    def describe(self) -> str:
        """Model and device, for logs and diagnostics."""
        conf = self.model.conf
        return (f'{conf["backbone"]["name"]}+{conf["head"]["name"]} on {self.device.type}'
                f'{" fp16" if self.fp16 else ""}')

    def reset(self) -> None:
        """Forget the temporal window (time gap, ``~/reset``)."""
        self._buffer.clear()
        self._last_stamp = None

    @torch.inference_mode()
    def features(self, images_b3hw: np.ndarray) -> torch.Tensor:
        """Normalised ``(B, 3, S, S)`` float32 -> pooled per-frame features ``(B, C)``."""
        x = torch.from_numpy(images_b3hw).to(self.device, non_blocking=True)
        if self.device.type == 'cpu':
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast('cuda', dtype=torch.float16, enabled=self.fp16):
            return self.model.features(x).float()

    @torch.inference_mode()
    def head(self, feat: torch.Tensor) -> dict:
        """Pooled features ``(B, C)`` or ``(B, T, C)`` -> decoded outputs as numpy."""
        out = self.model.head_forward(feat)
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def predict(self, image: np.ndarray, stamp: float | None = None) -> Prediction:
        """One RGB ``uint8 (H, W, 3)`` frame -> its pose (temporal models use the window)."""
        self.pre(image, out=self._input[0])
        feat_1c = self.features(self._input)
        if not self.temporal:
            return self._prediction(self.head(feat_1c), 0, 1)
        if stamp is not None and self._last_stamp is not None:
            if stamp < self._last_stamp or stamp - self._last_stamp > self.max_gap:
                self._buffer.clear()
        self._last_stamp = stamp
        self._buffer.append(feat_1c[0])
        window = torch.stack(list(self._buffer))[None]
        out = self.head(window)
        return self._prediction({k: v[0] for k, v in out.items()}, -1, len(self._buffer))

    def _window_breaks(self, i: int, sequence_ids: list | None, stamps: list | None) -> bool:
        if sequence_ids is not None and sequence_ids[i] != sequence_ids[i - 1]:
            return True
        if stamps is None or stamps[i] is None or stamps[i - 1] is None:
            return False
        return stamps[i] < stamps[i - 1] or stamps[i] - stamps[i - 1] > self.max_gap

    @staticmethod
    def _prediction(out: dict, i: int, window: int) -> Prediction:
        return Prediction(out['pos'][i].astype(np.float64), out['quat'][i].astype(np.float64),
                          covariance_from_var(out['var'][i]), window)

    def predict_frames(self, images: list, batch_size: int = 16,
                       sequence_ids: list | None = None,
                       stamps: list | None = None) -> list[Prediction]:
        """Offline: batched CNN over a frame list, then the same causal windows as live.

        ``images`` are RGB uint8 arrays (or callables returning one, to stream from disk).
        ``sequence_ids`` (one per frame) restart the temporal window at sequence changes, and
        ``stamps`` (seconds) at time gaps larger than ``max_gap``, exactly as :meth:`predict`.
        """
        feats = []
        size = self.pre.size
        batch = np.empty((batch_size, 3, size, size), np.float32)
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            for j, img in enumerate(chunk):
                self.pre(img() if callable(img) else img, out=batch[j])
            feats.append(self.features(batch[:len(chunk)]))
        if not feats:
            return []
        feat_nc = torch.cat(feats)
        if not self.temporal:
            out = self.head(feat_nc)
            return [self._prediction(out, i, 1) for i in range(len(images))]
        preds = []
        start = 0
        for i in range(len(images)):
            if i > 0 and self._window_breaks(i, sequence_ids, stamps):
                start = i
            lo = max(start, i - self.window + 1)
            out = self.head(feat_nc[lo:i + 1][None])
            preds.append(self._prediction({k: v[0] for k, v in out.items()}, -1, i + 1 - lo))
        return preds
