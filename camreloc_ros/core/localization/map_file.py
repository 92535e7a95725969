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

"""The localization map file: one versioned ``.npz`` with a JSON header, never pickled.

Arrays (all plain dtypes, read with ``np.load(allow_pickle=False)``):

* ``meta``: UTF-8 JSON as uint8 (format, version, checkpoint sha256, dataset fingerprint,
  split, how 3D points were made, feature and descriptor settings, build statistics)
* ``names`` (N,) str; ``poses_c2w`` (N, 4, 4); ``K`` (N, 3, 3); ``image_size`` (N, 2) w, h
* ``global_desc`` (N, D) float32, unit norm
* ``kp_offsets`` (N + 1,): keypoints of image i are rows ``kp_offsets[i]:kp_offsets[i+1]`` of
  ``kp_xy`` (M, 2) float32, ``kp_desc`` (M, 128) uint8 and ``kp_point`` (M,) int32
* ``points`` (P, 3) world coordinates (m); ``point_error`` (P,) mean reprojection error (px)
* optional ``descriptor_onnx`` (uint8 bytes): the network that made ``global_desc`` (trunk +
  GeM) as ONNX, so a refiner describes queries identically without torch
  (:mod:`camreloc_ros.core.localization.descriptor_onnx`); maps written before it lack it

Only keypoints with a 3D point are stored: the query is matched against exactly those.
The map is tied to the checkpoint whose trunk made ``global_desc`` (its sha256) and to the
training frames (names and poses); a mismatch is a :class:`MapError`, never a wrong pose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import json
import os
from pathlib import Path
import tempfile
import zipfile

import numpy as np

MAP_FORMAT = 'camreloc_ros.localization_map'
MAP_VERSION = 1
ARRAYS = ('names', 'poses_c2w', 'K', 'image_size', 'global_desc', 'kp_offsets', 'kp_xy',
          'kp_desc', 'kp_point', 'points', 'point_error')


class MapError(ValueError):
    """A map file that is missing, corrupt, of another version, or paired wrongly."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (ties a map to its checkpoint)."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def frames_fingerprint(names, poses_c2w) -> str:
    """Hash of frame names and poses (mm): the same training frames give the same value."""
    h = hashlib.sha256()
    for name, pose in zip(names, np.asarray(poses_c2w, np.float64)):
        h.update(str(name).encode('utf-8') + b'\0')
        h.update(np.round(pose[:3] * 1000.0).astype(np.int64).tobytes())
    return h.hexdigest()


@dataclass
class LocalizationMap:
    """In-memory map (see the module docstring for the arrays)."""

    names: list
    poses_c2w: np.ndarray
    K: np.ndarray                   # noqa: N815 - the usual name
    image_size: np.ndarray
    global_desc: np.ndarray
    kp_offsets: np.ndarray
    kp_xy: np.ndarray
    kp_desc: np.ndarray
    kp_point: np.ndarray
    points: np.ndarray
    point_error: np.ndarray
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    descriptor_onnx: bytes | None = None

    def __len__(self) -> int:
        return len(self.names)

    def image_keypoints(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keypoints ``(n, 2)``, descriptors ``(n, 128)`` and 3D points ``(n, 3)`` of image i."""
        a, b = int(self.kp_offsets[i]), int(self.kp_offsets[i + 1])
        return self.kp_xy[a:b], self.kp_desc[a:b], self.points[self.kp_point[a:b]]

    def check_pairing(self, checkpoint_sha256: str | None = None,
                      train_fingerprint: str | None = None, checkpoint: str = '',
                      data: str = '') -> None:
        """Raise :class:`MapError` unless the map was built for this checkpoint / these frames."""
        where = f'map {self.path}' if self.path else 'map'
        ck = self.meta.get('checkpoint', {})
        if checkpoint_sha256 is not None and ck.get('sha256') != checkpoint_sha256:
            same = checkpoint and str(Path(checkpoint).resolve()) == ck.get('path')
            why = ('the checkpoint file changed since the map was built (stale map)' if same
                   else f'it was built for checkpoint {ck.get("path")}')
            raise MapError(f'{where} does not belong to checkpoint {checkpoint or "given"} '
                           f'(sha256 {checkpoint_sha256[:12]}, map expects '
                           f'{str(ck.get("sha256"))[:12]}): {why}; rebuild it with '
                           f'`camreloc map --model {checkpoint or "CKPT"} ...`')
        ds = self.meta.get('dataset', {})
        if train_fingerprint is not None and ds.get('fingerprint') != train_fingerprint:
            raise MapError(f'{where} was built from other training frames ({ds.get("root")}, '
                           f'{ds.get("format")}, {ds.get("frames")} frames) than the ones of '
                           f'{data or "this dataset"}; rebuild it with `camreloc map --data '
                           f'{data or "DIR"} ...`')

    def describe(self) -> str:
        """One line for logs."""
        m = self.meta
        return (f'{len(self)} images, {len(self.points)} points '
                f'({m.get("points_from", "?")}), {len(self.kp_xy)} keypoints')


def save_map(lmap: LocalizationMap, path: str | Path) -> Path:
    """Write atomically (temporary file beside ``path`` + rename), uncompressed npz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(lmap.meta, format=MAP_FORMAT, version=MAP_VERSION)
    arrays = {k: np.asarray(getattr(lmap, k)) for k in ARRAYS}
    arrays['names'] = np.asarray([str(n) for n in lmap.names], dtype=np.str_)
    arrays['meta'] = np.frombuffer(json.dumps(meta).encode('utf-8'), np.uint8)
    if lmap.descriptor_onnx is not None:
        arrays['descriptor_onnx'] = np.frombuffer(bytes(lmap.descriptor_onnx), np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.npz', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    lmap.meta = meta
    lmap.path = path
    return path


def _expect(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise MapError(f'map {path} is corrupt: {what}')


def load_map(path: str | Path) -> LocalizationMap:
    """Read and validate a map file; every problem is a :class:`MapError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MapError(f'map {path} does not exist or is not a file (build one with '
                       '`camreloc map`)')
    if path.stat().st_size == 0:
        raise MapError(f'map {path} is empty (0 bytes); expected a camreloc map .npz')
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise MapError(f'map {path} is not a readable .npz file ({exc})') from None
    if 'meta' not in data:
        raise MapError(f'map {path} has no meta header; expected a camreloc map .npz')
    try:
        meta = json.loads(bytes(data['meta'].astype(np.uint8)).decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MapError(f'map {path} has an unreadable meta header ({exc})') from None
    if not isinstance(meta, dict) or meta.get('format') != MAP_FORMAT:
        raise MapError(f'map {path} is not a camreloc localization map '
                       f'(format {meta.get("format") if isinstance(meta, dict) else None!r})')
    if meta.get('version') != MAP_VERSION:
        raise MapError(f'map {path} has version {meta.get("version")}; this camreloc_ros '
                       f'reads version {MAP_VERSION}: rebuild it with `camreloc map`')
    missing = [k for k in ARRAYS if k not in data]
    _expect(not missing, path, f'missing arrays {", ".join(missing)}')
    n = len(data['names'])
    m = len(data['kp_xy'])
    p = len(data['points'])
    _expect(n > 0, path, 'no images')
    _expect(data['poses_c2w'].shape == (n, 4, 4), path, 'poses_c2w shape')
    _expect(data['K'].shape == (n, 3, 3), path, 'K shape')
    _expect(data['image_size'].shape == (n, 2), path, 'image_size shape')
    _expect(data['global_desc'].ndim == 2 and len(data['global_desc']) == n, path,
            'global_desc shape')
    off = data['kp_offsets']
    _expect(off.shape == (n + 1,) and off[0] == 0 and off[-1] == m
            and bool(np.all(np.diff(off) >= 0)), path, 'kp_offsets')
    _expect(data['kp_xy'].shape == (m, 2) and data['kp_desc'].shape == (m, 128)
            and data['kp_desc'].dtype == np.uint8 and data['kp_point'].shape == (m,), path,
            'keypoint arrays')
    _expect(data['points'].shape == (p, 3) and data['point_error'].shape == (p,), path,
            'points shape')
    _expect(m == 0 or (int(data['kp_point'].min()) >= 0 and int(data['kp_point'].max()) < p),
            path, 'kp_point out of range')
    for k in ('poses_c2w', 'K', 'global_desc', 'kp_xy', 'points'):
        _expect(bool(np.all(np.isfinite(data[k]))), path, f'{k} has NaN or inf')
    onnx = data.get('descriptor_onnx')
    _expect(onnx is None or (onnx.dtype == np.uint8 and onnx.ndim == 1), path,
            'descriptor_onnx is not a byte array')
    return LocalizationMap(names=[str(s) for s in data['names']],
                           **{k: data[k] for k in ARRAYS if k != 'names'}, meta=meta, path=path,
                           descriptor_onnx=None if onnx is None else onnx.tobytes())
