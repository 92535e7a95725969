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
evaluation tools compute for the same image, whichever backend runs the network (eager torch
or ONNX Runtime, :mod:`camreloc_ros.core.inference.runtimes`). Single-frame heads run image -> pose
in one backend call. For temporal (GRU) models the CNN runs once per frame and its pooled
features go into a ring buffer; the head runs over the last N features and the newest frame's
pose is returned (causal windows, the same rule offline and live). The scene-coordinate head
(``scr``) runs image -> per-pixel world points, and the pose comes from PnP-RANSAC on them
with the camera's intrinsics (:meth:`InferenceEngine.set_intrinsics`; by default the
training camera the checkpoint records, scaled to the image's size).
torch is imported by the torch backend only, so an ONNX Runtime engine runs without it.
"""

from __future__ import annotations

from dataclasses import dataclass
import itertools
from pathlib import Path
import sys
from typing import Callable, Iterable, Iterator, TYPE_CHECKING

import numpy as np

from camreloc_ros.core.data.split import causal_window_groups
from camreloc_ros.core.data.transforms import Preprocessor
from camreloc_ros.core.inference.runtimes import (make_runtime, resolve_device, Runtime, RUNTIMES,
                                                  TorchRuntime)

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import torch

    from camreloc_ros.core.models.pose_model import PoseModel

__all__ = ['InferenceEngine', 'Prediction', 'covariance_from_var', 'covariance_scales',
           'resolve_device', 'RUNTIMES']
HEAD_CHUNK = 256   # temporal windows per head call offline


@dataclass
class Prediction:
    """One frame's pose: camera-to-world position (m), quaternion (x, y, z, w), covariance."""

    position: np.ndarray        # (3,)
    quaternion: np.ndarray      # (4,) x, y, z, w; unit, w >= 0
    covariance: np.ndarray      # (6, 6) x y z, rot x y z; m² and rad²
    window: int = 1             # frames the temporal head saw (1 for single-frame heads)


def covariance_from_var(var_6: np.ndarray, scales: tuple[float, float] = (1.0, 1.0)
                        ) -> np.ndarray:
    """Diagonal 6x6 covariance from the model's six variances (kept strictly positive).

    ``scales`` (position, rotation) multiply the two blocks: the checkpoint's calibration
    (:func:`covariance_scales`), without which the variances are the training errors'.
    """
    factor_6 = np.repeat(np.asarray(scales, np.float64), 3)
    return np.diag(np.maximum(np.asarray(var_6, np.float64) * factor_6, 1e-12))


def covariance_scales(extra: dict | None) -> tuple[float, float]:
    """(position, rotation) variance scales a checkpoint (or its ONNX export) carries.

    Training fits them on validation frames (``extra['covariance_calibration']``,
    :func:`camreloc_ros.core.training.trainer.covariance_calibration`); a checkpoint written
    before that, or one whose entry is unusable, gets (1, 1): its variances as the head
    predicts them.
    """
    calib = (extra or {}).get('covariance_calibration')
    if not isinstance(calib, dict):
        return 1.0, 1.0
    out = []
    for key in ('position_scale', 'rotation_scale'):
        v = calib.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) \
            and v > 0
        out.append(float(v) if ok else 1.0)
    return out[0], out[1]


class InferenceEngine:
    """Preprocess, run the CNN once per frame, run the head, decode a :class:`Prediction`.

    ``model`` is a :class:`PoseModel` (run by ``runtime``: ``torch`` or ``onnx``, the latter
    exported in memory) or a ready :class:`~camreloc_ros.core.inference.runtimes.Runtime`.
    ``precision`` is the CNN's: ``fp32``; ``fp16`` and ``bf16`` (torch on CUDA); ``bf16``
    (torch on a CPU with native bf16); ``int8`` (ONNX Runtime on the CPU, calibrated on the
    training frames of the dataset at ``calibration``). Another combination is an error
    (:mod:`camreloc_ros.core.inference.precision`); the head always runs in float32.
    """

    def __init__(self, model: PoseModel | Runtime, device: str = 'cpu',
                 threads: int | None = None, max_gap: float = 1.0, runtime: str = 'torch',
                 precision: str = 'fp32', calibration: str | Path | None = None):
        if isinstance(model, Runtime):
            self.runtime = model
        else:
            self.runtime = make_runtime(model, runtime, device, precision, threads,
                                        calibration=calibration)
        backend = self.runtime
        self.model: PoseModel | None = backend.model if isinstance(backend, TorchRuntime) \
            else None
        self.device = backend.device
        pre = backend.preprocessing
        self.pre = Preprocessor(pre['size'], pre['mean'], pre['std'])
        self.window = backend.window
        # the checkpoint's calibration: .pt extra or the ONNX metadata's copy of it
        self.covariance_scales = covariance_scales(backend.extra)
        self.scr = self.conf['head']['name'] == 'scr'
        if self.scr and not hasattr(backend, 'coordinates'):
            raise ValueError('the scene-coordinate head (scr) runs with runtime torch only '
                             '(its ONNX export is not implemented yet)')
        self._intrinsics: tuple | None = None   # (K, width, height) set by set_intrinsics
        self.last_inliers = 0                    # scr: PnP inliers of the latest frame
        # scr: the live calibration, a callable returning an Intrinsics or None (the node's
        # camera_info); it wins over set_intrinsics and the training camera while it has one
        self.camera: Callable[[], object] | None = None
        self.max_gap = float(max_gap)
        self._input = backend.input_buffer(1)
        # mirrored ring buffer of per-frame features: every window is one contiguous view
        self._ring: np.ndarray | None = None
        self._count = 0
        self._next = 0
        self._last_stamp: float | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, runtime: str = 'torch', device: str = 'cpu',
                        threads: int | None = None, max_gap: float = 1.0,
                        precision: str = 'fp32', cache_dir: str | Path | None = None,
                        calibration: str | Path | None = None) -> 'InferenceEngine':
        """Load a checkpoint (``.pt``) or an exported ``.onnx`` and wrap it.

        ``runtime='onnx'`` with a checkpoint exports it once to ``cache_dir`` (default
        ``~/.cache/camreloc_ros/onnx``), keyed by the checkpoint's hash; with ``precision
        'int8'`` it is quantized once there too, on the training frames of ``calibration``.
        """
        backend = make_runtime(path, runtime, device, precision, threads, cache_dir,
                               calibration)
        return cls(backend, max_gap=max_gap)

    @property
    def temporal(self) -> bool:
        """Whether the model keeps a window of past frames."""
        return self.runtime.temporal

    @property
    def conf(self) -> dict:
        """The model config (from the checkpoint or the ONNX metadata)."""
        return self.runtime.conf

    @property
    def checkpoint_extra(self) -> dict:
        """What training stored with the model (data split, history), if anything."""
        return self.runtime.extra

    def describe(self) -> str:
        """Model, device and backend, for logs and diagnostics."""
        conf = self.conf
        return (f'{conf["backbone"]["name"]}+{conf["head"]["name"]} on {self.device.type} '
                f'({self.runtime.describe()})')

    def reset(self) -> None:
        """Forget the temporal window (time gap, ``~/reset``)."""
        self._count = 0
        self._next = 0
        self._last_stamp = None

    def set_intrinsics(self, K: np.ndarray | None, width: int = 0, height: int = 0) -> None:
        """Use the camera ``K`` (3x3, pixels of ``width`` x ``height`` images) for PnP (scr).

        None goes back to the training camera of the checkpoint. Pose heads ignore it.
        """
        if K is None:
            self._intrinsics = None
            return
        K = np.asarray(K, np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 \
                or int(width) <= 0 or int(height) <= 0:
            raise ValueError(f'intrinsics: expected a 3x3 camera matrix with fx, fy > 0 and '
                             f'an image size, got {K.tolist()} at {width}x{height}')
        self._intrinsics = (K, int(width), int(height))

    def camera_matrix(self, width: int, height: int) -> np.ndarray:
        """K for an image of ``width`` x ``height``: the set intrinsics or the training camera."""
        live = self.camera() if self.camera is not None else None
        if live is not None:
            K, w0, h0 = live.matrix(), live.width, live.height
        elif self._intrinsics is not None:
            K, w0, h0 = self._intrinsics
        else:
            from camreloc_ros.core.robot.camera import training_camera

            cam = training_camera(self.checkpoint_extra)
            if not cam or 'fx' not in cam:
                raise ValueError('the scr head needs the camera intrinsics: the checkpoint '
                                 'records none; call set_intrinsics (camera_info, K.txt)')
            w0, h0 = cam['width'], cam['height']
            K = np.array([[cam['fx'], 0.0, cam.get('cx', w0 / 2.0)],
                          [0.0, cam['fy'], cam.get('cy', h0 / 2.0)], [0.0, 0.0, 1.0]])
        S = np.diag([width / float(w0), height / float(h0), 1.0])
        return S @ K

    def _scr_prediction(self, coords_3hw: np.ndarray, image_hw: tuple) -> Prediction:
        """PnP-RANSAC on one frame's scene coordinates -> its pose and covariance."""
        from camreloc_ros.core.geometry import matrix_to_quat
        from camreloc_ros.core.models.scr import pixel_centres, pose_from_coordinates

        h, w = int(image_hw[0]), int(image_hw[1])
        hconf = self.conf['head']
        xy = pixel_centres(coords_3hw.shape[1:], (h, w), self.pre.size)
        pose = pose_from_coordinates(coords_3hw.reshape(3, -1).T, xy, self.camera_matrix(w, h),
                                     (h, w), hconf['scr_ransac_px'],
                                     hconf['scr_ransac_iterations'], hconf['scr_min_inliers'])
        factor = np.sqrt(np.repeat(np.asarray(self.covariance_scales, np.float64), 3))
        cov = pose.covariance * np.outer(factor, factor)
        self.last_inliers = pose.inliers
        return Prediction(pose.centre.astype(np.float64),
                          matrix_to_quat(pose.R_c2w).astype(np.float64), cov, 1)

    def features(self, images_b3hw: np.ndarray) -> np.ndarray:
        """Normalised ``(B, 3, S, S)`` float32 -> pooled per-frame features ``(B, C)``."""
        return self.runtime.features(images_b3hw)

    def head(self, feat: np.ndarray | torch.Tensor) -> dict:
        """Pooled features ``(B, C)`` or ``(B, T, C)`` -> decoded ``pos``, ``quat``, ``var``."""
        torch = sys.modules.get('torch')   # a torch tensor implies torch is loaded
        if torch is not None and isinstance(feat, torch.Tensor):
            feat = feat.detach().float().cpu().numpy()
        return self.runtime.head(feat)

    def _push(self, feat_c: np.ndarray) -> np.ndarray:
        """Add a frame's features; return the window ``(1, n, C)`` ending with it (a view)."""
        w = self.window
        if self._ring is None or self._ring.shape[2] != feat_c.shape[0]:
            self._ring = np.zeros((1, 2 * w, feat_c.shape[0]), np.float32)
        pos = self._next
        self._ring[0, pos] = feat_c
        self._ring[0, pos + w] = feat_c
        self._next = (pos + 1) % w
        self._count = min(self._count + 1, w)
        end = pos + w + 1
        return self._ring[:, end - self._count:end]

    def predict(self, image: np.ndarray, stamp: float | None = None,
                order: str = 'rgb') -> Prediction:
        """One ``uint8 (H, W, 3)`` frame -> its pose (temporal models use the window).

        ``order='bgr'`` takes a BGR frame as it is (e.g. a bgr8 message's zero-copy view):
        the preprocessor swaps the small resized planes instead of the whole frame.
        """
        self.pre(image, out=self._input[0], order=order)
        if self.scr:
            return self._scr_prediction(self.runtime.coordinates(self._input)[0], image.shape[:2])
        if not self.temporal:
            return self._prediction(self.runtime.pose(self._input), 0, 1)
        feat_1c = self.runtime.features(self._input)
        if self._time_gap(self._last_stamp, stamp):
            self._count = 0
        self._last_stamp = stamp
        window = self._push(feat_1c[0])
        out = self.runtime.head(window)
        return self._prediction({k: v[0] for k, v in out.items()}, -1, window.shape[1])

    def _time_gap(self, previous: float | None, stamp: float | None) -> bool:
        """Whether ``stamp`` restarts the window: time went back or jumped over ``max_gap``."""
        if previous is None or stamp is None:
            return False
        return stamp < previous or stamp - previous > self.max_gap

    def _prediction(self, out: dict, i: int, window: int) -> Prediction:
        return Prediction(out['pos'][i].astype(np.float64), out['quat'][i].astype(np.float64),
                          covariance_from_var(out['var'][i], self.covariance_scales), window)

    def predict_frames(self, images: Iterable, breaks: Iterable[bool] | None = None,
                       stamps: Iterable[float | None] | None = None,
                       batch_size: int = 16) -> list[Prediction]:
        """Offline: stream frames through the batched CNN and the same causal windows as live.

        ``images`` is any iterable (no length needed) of RGB uint8 arrays or callables
        returning one; only ``batch_size`` of them are decoded and held at a time. ``breaks``
        (one bool per frame, e.g. :func:`~camreloc_ros.core.data.split.frame_breaks`) restart
        the temporal window where true, and ``stamps`` (seconds or None) where time goes back
        or jumps over ``max_gap``, exactly as :meth:`predict`. Single-frame heads run image ->
        pose per batch; temporal heads run the CNN per batch and the head over up to
        ``HEAD_CHUNK`` windows of one length per call.
        """
        if int(batch_size) < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        frames = _frames(images, breaks, stamps)
        batch = self.runtime.input_buffer(int(batch_size))
        preds: list[Prediction] = []
        windows = _CausalWindows(self) if self.temporal else None
        previous = None   # the previous frame's stamp
        while chunk := list(itertools.islice(frames, int(batch_size))):
            sizes = []
            for j, (img, _, _) in enumerate(chunk):
                img = img() if callable(img) else img
                sizes.append(img.shape[:2])
                self.pre(img, out=batch[j])
            if self.scr:
                coords = self.runtime.coordinates(batch[:len(chunk)])
                preds += [self._scr_prediction(c, hw) for c, hw in zip(coords, sizes)]
                continue
            if windows is None:
                out = self.runtime.pose(batch[:len(chunk)])
                preds += [self._prediction(out, i, 1) for i in range(len(chunk))]
                continue
            restarts = []
            for _, restart, stamp in chunk:
                restarts.append(bool(restart) or self._time_gap(previous, stamp))
                previous = stamp
            windows.add(self.runtime.features(batch[:len(chunk)]), restarts)
            if windows.pending >= HEAD_CHUNK:
                preds += windows.flush()
        if windows is not None:
            preds += windows.flush()
        return preds


_MISSING = object()


def _frames(images: Iterable, breaks: Iterable[bool] | None,
            stamps: Iterable[float | None] | None) -> Iterator[tuple]:
    """``(image, restart, stamp)`` per frame; ``breaks`` and ``stamps`` as long as ``images``."""
    given = [(name, values) for name, values in
             (('images', images), ('breaks', breaks), ('stamps', stamps)) if values is not None]
    for k, row in enumerate(itertools.zip_longest(*(v for _, v in given), fillvalue=_MISSING)):
        short = ', '.join(name for (name, _), v in zip(given, row) if v is _MISSING)
        if short:
            raise ValueError(f'{short} ended after {k} frames; expected one entry per frame '
                             f'in each of {", ".join(name for name, _ in given)}')
        values = dict(zip((name for name, _ in given), row))
        yield values['images'], values.get('breaks', False), values.get('stamps')


class _CausalWindows:
    """Per-frame features in, the pose of each frame's causal window out, in frame order.

    Holds the frames not yet given a pose plus at most ``window - 1`` earlier frames of the
    current run (the history the next windows reach back to), never the whole sequence.
    """

    def __init__(self, engine: InferenceEngine):
        self.engine = engine
        self.history: np.ndarray | None = None   # (h, C) frames of the run before the pending
        self.feats: list[np.ndarray] = []
        self.restarts: list[bool] = []

    @property
    def pending(self) -> int:
        """Frames waiting for their pose."""
        return len(self.restarts)

    def add(self, feat_nc: np.ndarray, restarts: list[bool]) -> None:
        """Queue a batch's features; ``restarts[i]`` starts a new window run at frame i."""
        self.feats.append(np.asarray(feat_nc, np.float32))
        self.restarts += restarts

    def flush(self) -> list[Prediction]:
        """Poses of every pending frame; keep the history the next frames need."""
        if not self.restarts:
            return []
        engine = self.engine
        h = 0 if self.history is None else len(self.history)
        feats = np.concatenate(([self.history] if h else []) + self.feats)
        # the history starts its run; with none, the first pending frame starts one
        flags = [True] + [False] * (h - 1) + self.restarts if h else [True] + self.restarts[1:]
        preds: list[Prediction | None] = [None] * len(self.restarts)
        for idx, gather in causal_window_groups(flags, engine.window, HEAD_CHUNK, first=h):
            out = engine.runtime.head(feats[gather])
            last = {k: v[:, -1] for k, v in out.items()}
            for g, i in enumerate(idx):
                preds[i - h] = engine._prediction(last, g, gather.shape[1])
        run_start = max(i for i, f in enumerate(flags) if f)
        keep = max(run_start, len(flags) - (engine.window - 1))
        self.history = feats[keep:].copy()
        self.feats, self.restarts = [], []
        return preds
