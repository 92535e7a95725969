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
* points, each stored once (:mod:`~camreloc_ros.core.localization.tracks`): ``points`` (P, 3)
  float32 in a local frame whose origin in the world is ``origin`` (3,) float64 (in memory,
  :attr:`LocalizationMap.points` is float64 world coordinates); ``point_desc`` (P, 128)
  uint8, one quantized RootSIFT per point; ``point_error`` (P,) mean reprojection error (px)
* visibility: ``obs_offsets`` (N + 1,): image i sees points ``obs_point[a:b]`` (int32) at
  pixels ``obs_xy[a:b]`` (float32), ``a, b = obs_offsets[i], obs_offsets[i + 1]``
* optional ``descriptor_onnx`` (uint8 bytes): the network that made ``global_desc`` (trunk +
  GeM) as ONNX, so a refiner describes queries identically without torch
  (:mod:`camreloc_ros.core.localization.descriptor_onnx`)

Version 2 (the compact map) replaced version 1's one point and descriptor per keypoint
(``kp_*`` arrays); a version-1 map is refused with the command that rebuilds it.

``meta.covariance_calibration`` (optional, :mod:`~camreloc_ros.core.localization.calibration`):
per kind (``refined``, ``tracked``) the scales of the position and rotation blocks that make
the PnP covariance match errors measured at build; applied by
:meth:`LocalizationMap.calibrated_covariance`. Maps without it load, uncalibrated (a warning).

Only points are matched: a query's keypoints against the points its candidate images see.
The map is tied to a scene frame (``meta.scene_frame``: the coordinate frame of the dataset
or reconstruction it was built from) and to its training frames (names and poses): a network
trained in another frame is a :class:`MapError`, never a wrong pose, while one retrained in
the same frame pairs (:meth:`LocalizationMap.check_pairing`). Maps and checkpoints without a
frame id pair by the checkpoint's sha256 only. ``meta.sessions`` lists the recordings
``camreloc map --extend`` registered into the map after it was built.

A map is data from strangers as much as a checkpoint is. :func:`load_map` checks all of it
when it is opened, before any network runs: the zip CRCs, the content digest
``meta.content_sha256`` (:func:`~camreloc_ros.core.io.content_digest`, the checkpoints' one,
over every array and the rest of the header), every array's dtype and shape, the cameras
(focal lengths and image sizes > 0), the descriptor settings, and the descriptor network (an
ONNX model that reads no file:
:func:`~camreloc_ros.core.inference.onnx_format.check_self_contained`). Maps written before
the digest existed (same version 1) load with a warning that damage cannot be detected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import logging
import os
from pathlib import Path
import warnings
import zipfile

import numpy as np

from camreloc_ros.core.data.split import frames_fingerprint  # noqa: F401 - its old home
from camreloc_ros.core.inference.onnx_format import check_self_contained
from camreloc_ros.core.io import atomic_output, clean_stale_temps, content_digest

logger = logging.getLogger('camreloc_ros')

MAP_FORMAT = 'camreloc_ros.localization_map'
MAP_VERSION = 2
ARRAYS = ('names', 'poses_c2w', 'K', 'image_size', 'global_desc', 'origin', 'points',
          'point_desc', 'point_error', 'obs_offsets', 'obs_point', 'obs_xy')
DIGEST_KEY = 'content_sha256'   # in meta: content_digest of everything else in the file
# dtype kinds each array may have (numpy ``dtype.kind``), and the word the error uses
DTYPES = {'names': ('U', 'str'), 'poses_c2w': ('f', 'float'), 'K': ('f', 'float'),
          'image_size': ('iu', 'int'), 'global_desc': ('f', 'float'), 'origin': ('f', 'float'),
          'points': ('f', 'float'), 'point_desc': ('u', 'uint8'),
          'point_error': ('f', 'float'), 'obs_offsets': ('iu', 'int'),
          'obs_point': ('iu', 'int'), 'obs_xy': ('f', 'float'),
          'meta': ('u', 'uint8'), 'descriptor_onnx': ('u', 'uint8')}
# the stored descriptor network's interface: (1, 3, H, W) float32 -> (1, D) unit norm
DESCRIPTOR_INPUT, DESCRIPTOR_OUTPUT = 'image', 'descriptor'
# meta.descriptor: what a refiner needs to describe queries as the map's images were
DESCRIPTOR_KEYS = ('input_shorter_side', 'mean', 'std', 'dim')
# meta entries read as mappings (pairing, refiner settings)
META_DICTS = ('checkpoint', 'dataset', 'conf', 'stats', 'descriptor', 'covariance_calibration',
              'scene_frame')
CALIBRATION_KEY = 'covariance_calibration'
# kinds of pose a map calibrates (core.localization.calibration fits them at build)
KINDS = ('refined', 'tracked')
SCALE_KEYS = ('position_scale', 'rotation_scale')
WHAT_A_MAP_IS = 'a camreloc map is an .npz (zip) archive of plain arrays written by `camreloc map`'


def scale_covariance(cov_66: np.ndarray, position_scale: float = 1.0,
                     rotation_scale: float = 1.0) -> np.ndarray:
    """Scale the position block by ``position_scale``, the rotation block by ``rotation_scale``.

    The cross blocks get ``sqrt(ps * rs)``: the matrix is ``D Sigma D`` with
    ``D = diag(sqrt(ps) I3, sqrt(rs) I3)``, so it stays positive definite.
    """
    d = np.sqrt(np.r_[[float(position_scale)] * 3, [float(rotation_scale)] * 3])
    return np.asarray(cov_66, np.float64) * np.outer(d, d)


def calibration_problem(calib) -> str | None:
    """Why a stored ``covariance_calibration`` entry is unusable (None when it is fine)."""
    if not isinstance(calib, dict):
        return 'it is no mapping'
    for kind in KINDS:
        entry = calib.get(kind)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            return f'{kind} is no mapping'
        if not any(key in entry for key in SCALE_KEYS):
            continue                       # not calibrated (``skipped`` says why)
        for key in SCALE_KEYS:
            v = entry.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) \
                    or v <= 0:
                return f'{kind}.{key} is {v!r}; expected a finite number > 0'
    return None


class MapError(ValueError):
    """A map file that is missing, corrupt, of another version, or paired wrongly."""


@dataclass
class LocalizationMap:
    """In-memory map (see the module docstring for the arrays)."""

    names: list
    poses_c2w: np.ndarray
    K: np.ndarray                   # noqa: N815 - the usual name
    image_size: np.ndarray
    global_desc: np.ndarray
    points: np.ndarray              # (P, 3) float64 world (float32 local + origin on disk)
    point_desc: np.ndarray          # (P, 128) uint8 quantized RootSIFT
    point_error: np.ndarray
    obs_offsets: np.ndarray
    obs_point: np.ndarray
    obs_xy: np.ndarray
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    descriptor_onnx: bytes | None = None

    def __len__(self) -> int:
        return len(self.names)

    def image_observations(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``(n, 2)`` where image i sees its points, and their ids ``(n,)``."""
        a, b = int(self.obs_offsets[i]), int(self.obs_offsets[i + 1])
        return self.obs_xy[a:b], self.obs_point[a:b]

    def image_points(self, images) -> np.ndarray:
        """Sorted ids of the points any of ``images`` (map indices) sees: match candidates."""
        ids = [self.obs_point[int(self.obs_offsets[i]):int(self.obs_offsets[i + 1])]
               for i in images]
        return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int32)

    def point_roots(self, ids: np.ndarray) -> np.ndarray:
        """Unit-norm float32 RootSIFT ``(n, 128)`` of points ``ids`` (what matching uses)."""
        from camreloc_ros.core.localization.tracks import dequantize_root
        return dequantize_root(self.point_desc[ids])

    def visibility(self) -> np.ndarray:
        """Count the map images that see each point ``(P,)``."""
        return np.bincount(self.obs_point, minlength=len(self.points))

    def check_pairing(self, checkpoint_sha256: str | None = None,
                      train_fingerprint: str | None = None, checkpoint: str = '',
                      data: str = '', scene_frame: dict | None = None) -> None:
        """Raise :class:`MapError` unless the map belongs to this network / these frames.

        A map carries its own descriptor network, so it belongs to a scene frame, not to one
        checkpoint: when both the map and the network name theirs (``meta.scene_frame``, the
        checkpoint's ``extra['scene_frame']``: :func:`~camreloc_ros.core.data.split.scene_frame`)
        a network retrained on the same frame pairs (an info line says the checkpoint is not
        the one the map was built with) and one of another frame is refused, naming both.
        Without an id on either side (files written before it existed), or a map without its
        descriptor network (whose retrieval needs the very trunk that built it), only the
        checkpoint the map was built with pairs (its sha256).
        ``train_fingerprint`` (the evaluation's check): the map holds exactly these training
        frames, so no held-out frame is in it.
        """
        where = f'map {self.path}' if self.path else 'map'
        ck = self.meta.get('checkpoint', {})
        if checkpoint_sha256 is not None and ck.get('sha256') != checkpoint_sha256:
            self._check_frame(checkpoint_sha256, checkpoint, scene_frame, where, ck)
        added = sum(int(s.get('registered', 0)) for s in self.meta.get('sessions') or []
                    if isinstance(s, dict))
        if train_fingerprint is not None and added:
            raise MapError(f'{where} was extended with {added} images of other recordings '
                           '(`camreloc map --extend`); they may be held-out frames of '
                           f'{data or "this dataset"}, so it cannot score them honestly: '
                           'evaluate with the map before --extend')
        ds = self.meta.get('dataset', {})
        if train_fingerprint is not None and ds.get('fingerprint') != train_fingerprint:
            raise MapError(f'{where} was built from other training frames ({ds.get("root")}, '
                           f'{ds.get("format")}, {ds.get("frames")} frames) than the ones of '
                           f'{data or "this dataset"}; rebuild it with `camreloc map --data '
                           f'{data or "DIR"} ...`')

    def _check_frame(self, checkpoint_sha256: str, checkpoint: str, scene_frame: dict | None,
                     where: str, ck: dict) -> None:
        """Pair another checkpoint than the map's by scene frame, or refuse it (MapError)."""
        name = checkpoint or 'given'
        mine = self.meta.get('scene_frame')
        map_id = mine.get('id') if isinstance(mine, dict) else None
        net_id = scene_frame.get('id') if isinstance(scene_frame, dict) else None
        if map_id and net_id and self.descriptor_onnx is not None:
            if map_id == net_id:
                logger.info(f'{where} was built with checkpoint {ck.get("path")} '
                            f'(sha256 {str(ck.get("sha256"))[:12]}), not {name} (sha256 '
                            f'{checkpoint_sha256[:12]}); both were trained in scene frame '
                            f'{map_id[:12]} ({mine.get("source")}), so the map pairs')
                return
            raise MapError(
                f'{where} belongs to scene frame {map_id[:12]} ({mine.get("source")}, '
                f'{mine.get("frames")} frames) but checkpoint {name} was trained in scene '
                f'frame {net_id[:12]} ({scene_frame.get("source")}, '
                f'{scene_frame.get("frames")} frames): its poses are in another coordinate '
                f'frame; use a network trained on {mine.get("source")}, or build a map for '
                f'this one with `camreloc map --model {checkpoint or "CKPT"} --data '
                f'{scene_frame.get("source") or "DIR"} ...`')
        same = checkpoint and str(Path(checkpoint).resolve()) == ck.get('path')
        why = ('the checkpoint file changed since the map was built (stale map)' if same
               else f'it was built for checkpoint {ck.get("path")}')
        lacking = ('the map holds no descriptor network' if self.descriptor_onnx is None
                   else 'the map names no scene frame (built before maps had one)'
                   if not map_id else 'the checkpoint names no scene frame (trained before '
                   'checkpoints had one)' if not net_id else '')
        raise MapError(f'{where} does not belong to checkpoint {name} '
                       f'(sha256 {checkpoint_sha256[:12]}, map expects '
                       f'{str(ck.get("sha256"))[:12]}): {why}, and {lacking}, so only that '
                       f'checkpoint pairs with it; rebuild it with '
                       f'`camreloc map --model {checkpoint or "CKPT"} ...`')

    def covariance_scales(self, kind: str) -> tuple[float, float] | None:
        """Calibrated (position, rotation) scales of ``kind``, or None when uncalibrated."""
        if kind not in KINDS:
            raise ValueError(f'unknown pose kind {kind!r}; valid: {", ".join(KINDS)}')
        entry = (self.meta.get(CALIBRATION_KEY) or {}).get(kind) or {}
        if 'position_scale' not in entry or 'rotation_scale' not in entry:
            return None
        return float(entry['position_scale']), float(entry['rotation_scale'])

    def calibrated_covariance(self, kind: str, cov_66: np.ndarray) -> np.ndarray:
        """Return the covariance a ``kind`` ('refined' or 'tracked') pose should publish.

        The PnP covariance ignores the map points' own errors and is far too small (0.6 mm
        claimed for 1 cm errors); the map's calibration scales it so 95 % of the errors
        measured at build fall in its 95 % ellipsoid. A map built without calibration returns
        ``cov_66`` unchanged and warns once per map and kind.
        """
        scales = self.covariance_scales(kind)
        if scales is None:
            warned = self.__dict__.setdefault('_uncalibrated_warned', set())
            if kind not in warned:
                warned.add(kind)
                why = ((self.meta.get(CALIBRATION_KEY) or {}).get(kind) or {}).get(
                    'skipped') or (self.meta.get(CALIBRATION_KEY) or {}).get('skipped')
                logger.warning(
                    f'map {self.path or ""} has no covariance calibration for {kind} poses'
                    + (f' ({why})' if why else ' (built by an older camreloc_ros or with '
                       'calibration.enabled false)')
                    + ': their covariance is the raw PnP one, typically 10-100x too small; '
                    'rebuild the map with `camreloc map ... --overwrite` (calibration on)')
            return np.asarray(cov_66, np.float64)
        return scale_covariance(cov_66, *scales)

    def describe(self) -> str:
        """One line for logs."""
        m = self.meta
        return (f'{len(self)} images, {len(self.points)} points '
                f'({m.get("points_from", "?")}), {len(self.obs_point)} observations')


def map_digest(arrays: dict, meta: dict) -> str:
    """Content digest of a map file: every array and the header without the digest itself."""
    header = json.loads(json.dumps({k: v for k, v in meta.items() if k != DIGEST_KEY}))
    return content_digest({'meta': header,
                           **{k: arrays[k] for k in sorted(arrays) if k != 'meta'}})


def descriptor_conf_problem(conf, dim: int | None = None) -> str | None:
    """Why ``meta.descriptor`` cannot describe queries (or None): keys, types, ``dim``."""
    if not isinstance(conf, dict):
        return 'meta.descriptor is missing' if conf is None else 'meta.descriptor is no mapping'
    missing = [k for k in DESCRIPTOR_KEYS if k not in conf]
    if missing:
        return f'meta.descriptor lacks {", ".join(missing)}'
    size, d = conf['input_shorter_side'], conf['dim']
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return f'meta.descriptor has input_shorter_side {size!r}; expected an integer > 0'
    if not isinstance(d, int) or isinstance(d, bool) or d < 1 or (dim is not None and d != dim):
        return (f'meta.descriptor has dim {d!r}, but global_desc has {dim} columns'
                if dim is not None else f'meta.descriptor has dim {d!r}')
    for key in ('mean', 'std'):
        v = conf[key]
        ok = isinstance(v, list) and len(v) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
            for x in v)
        if not ok or (key == 'std' and min(v) <= 0):
            return f'meta.descriptor has {key} {v!r}; expected 3 finite numbers' + (
                ' > 0' if key == 'std' else '')
    return None


def save_map(lmap: LocalizationMap, path: str | Path) -> Path:
    """Write an uncompressed npz with its content digest, atomically.

    Through the project's one writer (:func:`~camreloc_ros.core.io.atomic_output`): the file
    gets the user's umask, a full disk is an error naming ``path``, and the temporaries of
    killed saves in the same folder are removed first (only those of dead processes).
    """
    path = Path(path)
    clean_stale_temps(path.parent)
    meta = {k: v for k, v in lmap.meta.items() if k != DIGEST_KEY}
    meta.update(format=MAP_FORMAT, version=MAP_VERSION)
    arrays = {k: np.asarray(getattr(lmap, k)) for k in ARRAYS if k != 'origin'}
    points = np.asarray(lmap.points, np.float64).reshape(-1, 3)
    origin = np.round(points.mean(axis=0), 3) if len(points) else np.zeros(3)
    arrays['origin'] = origin
    arrays['points'] = (points - origin).astype(np.float32)
    arrays['point_desc'] = np.asarray(lmap.point_desc, np.uint8)
    arrays['point_error'] = np.asarray(lmap.point_error, np.float32)
    arrays['obs_offsets'] = np.asarray(lmap.obs_offsets, np.int64)
    arrays['obs_point'] = np.asarray(lmap.obs_point, np.int32)
    arrays['obs_xy'] = np.asarray(lmap.obs_xy, np.float32)
    arrays['global_desc'] = np.asarray(lmap.global_desc, np.float32)
    arrays['names'] = np.asarray([str(n) for n in lmap.names], dtype=np.str_)
    if lmap.descriptor_onnx is not None:
        arrays['descriptor_onnx'] = np.frombuffer(bytes(lmap.descriptor_onnx), np.uint8)
    meta[DIGEST_KEY] = map_digest(arrays, meta)
    arrays['meta'] = np.frombuffer(json.dumps(meta).encode('utf-8'), np.uint8)
    with atomic_output(path) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
    lmap.meta = meta
    lmap.path = path
    return path


def _expect(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise MapError(f'map {path} is corrupt: {what}')


def _read_arrays(path: Path) -> dict:
    """Read the map's arrays (only the known ones); every reader error a :class:`MapError`."""
    if not zipfile.is_zipfile(path):
        raise MapError(f'map {path} is not a readable .npz file: {WHAT_A_MAP_IS}, and this '
                       'file is not a zip archive')
    wanted = set(ARRAYS) | {'meta', 'descriptor_onnx'}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if k in wanted}
    except ValueError as exc:
        if 'pickle' in str(exc):
            raise MapError(f'map {path} is not a readable .npz file: it holds Python objects '
                           f'(pickled data), which a map never has; nothing in it was run. '
                           f'{WHAT_A_MAP_IS}') from None
        raise MapError(f'map {path} is not a readable .npz file ({exc})') from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise MapError(f'map {path} is not a readable .npz file ({exc})') from None


def _check_dtypes(data: dict, path: Path) -> None:
    for key, arr in data.items():
        kinds, word = DTYPES[key]
        ok = arr.dtype.kind in kinds and (word != 'uint8' or arr.dtype == np.uint8)
        _expect(ok, path, f'{key} has dtype {arr.dtype}, expected {word}')


def _check_cameras(data: dict, path: Path) -> None:
    """Focal lengths and image sizes > 0: a map whose camera cannot project refines nothing."""
    names, K, size = data['names'], data['K'], data['image_size']
    bad = np.flatnonzero((K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0))
    if len(bad):
        i = bad[0]
        raise MapError(f'map {path} is corrupt: image {i} ({names[i]}) has focal length fx '
                       f'{K[i, 0, 0]:g}, fy {K[i, 1, 1]:g} in K; expected both > 0')
    bad = np.flatnonzero((size <= 0).any(axis=1))
    if len(bad):
        i = bad[0]
        raise MapError(f'map {path} is corrupt: image {i} ({names[i]}) has image_size '
                       f'{size[i, 0]}x{size[i, 1]}; expected a width and height > 0')


def _check_descriptor(data: dict, meta: dict, path: Path) -> bytes | None:
    """meta.descriptor and the embedded network: ONNX that reads no file, image -> descriptor."""
    problem = descriptor_conf_problem(meta.get('descriptor'), data['global_desc'].shape[1])
    _expect(problem is None, path, str(problem))
    onnx = data.get('descriptor_onnx')
    if onnx is None:
        return None
    _expect(onnx.ndim == 1, path, 'descriptor_onnx is not a byte array')
    proto = check_self_contained(onnx.tobytes(), f'map {path}: its descriptor network',
                                 MapError)
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    _expect(DESCRIPTOR_INPUT in inputs and DESCRIPTOR_OUTPUT in outputs, path,
            f'its descriptor network has inputs {inputs} and outputs {outputs}; expected '
            f'{DESCRIPTOR_INPUT!r} -> {DESCRIPTOR_OUTPUT!r}')
    return onnx.tobytes()


def load_map(path: str | Path) -> LocalizationMap:
    """Read and validate a whole map file; every problem is a :class:`MapError` naming it.

    All checks run here, when the map is opened (see the module docstring), so a tool or
    the node fails before any network pass, with the file's name.
    """
    path = Path(path)
    if not path.is_file():
        raise MapError(f'map {path} does not exist or is not a file (build one with '
                       '`camreloc map`)')
    if path.stat().st_size == 0:
        raise MapError(f'map {path} is empty (0 bytes); expected a camreloc map .npz')
    data = _read_arrays(path)
    if 'meta' not in data:
        raise MapError(f'map {path} has no meta header; {WHAT_A_MAP_IS}')
    try:
        meta = json.loads(bytes(data['meta'].astype(np.uint8)).decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MapError(f'map {path} has an unreadable meta header ({exc})') from None
    if not isinstance(meta, dict) or meta.get('format') != MAP_FORMAT:
        raise MapError(f'map {path} is not a camreloc localization map '
                       f'(format {meta.get("format") if isinstance(meta, dict) else None!r})')
    if meta.get('version') != MAP_VERSION:
        why = (' (version 1 stored a point and a descriptor per keypoint; version 2 stores '
               'each point once)' if meta.get('version') == 1 else '')
        raise MapError(f'map {path} has version {meta.get("version")}; this camreloc_ros '
                       f'reads version {MAP_VERSION}{why}: rebuild it with '
                       f'`{rebuild_command(meta, path)}`')
    missing = [k for k in ARRAYS if k not in data]
    _expect(not missing, path, f'missing arrays {", ".join(missing)}')
    _check_dtypes(data, path)
    wrong = [k for k in META_DICTS if k in meta and not isinstance(meta[k], dict)]
    _expect(not wrong, path, f'meta.{", meta.".join(wrong)} is not a mapping')
    _expect(isinstance(meta.get('sessions', []), list), path, 'meta.sessions is not a list')
    n = len(data['names'])
    m = len(data['obs_point'])
    p = len(data['points'])
    _expect(data['names'].ndim == 1 and n > 0, path, 'no images')
    _expect(data['poses_c2w'].shape == (n, 4, 4), path, 'poses_c2w shape')
    _expect(data['K'].shape == (n, 3, 3), path, 'K shape')
    _expect(data['image_size'].shape == (n, 2), path, 'image_size shape')
    _expect(data['global_desc'].ndim == 2 and len(data['global_desc']) == n, path,
            'global_desc shape')
    off = data['obs_offsets']
    _expect(off.shape == (n + 1,) and off[0] == 0 and off[-1] == m
            and bool(np.all(np.diff(off) >= 0)), path, 'obs_offsets')
    _expect(data['obs_xy'].shape == (m, 2) and data['obs_point'].shape == (m,), path,
            'observation arrays')
    _expect(data['points'].shape == (p, 3) and data['point_error'].shape == (p,)
            and data['point_desc'].shape == (p, 128), path, 'points shape')
    _expect(data['origin'].shape == (3,), path, 'origin shape')
    _expect(m == 0 or (int(data['obs_point'].min()) >= 0 and int(data['obs_point'].max()) < p),
            path, 'obs_point out of range')
    for k in ('poses_c2w', 'K', 'global_desc', 'obs_xy', 'points', 'origin'):
        _expect(bool(np.all(np.isfinite(data[k]))), path, f'{k} has NaN or inf')
    _check_cameras(data, path)
    if CALIBRATION_KEY in meta:
        problem = calibration_problem(meta[CALIBRATION_KEY])
        _expect(problem is None, path, f'meta.{CALIBRATION_KEY}: {problem}')
    # the digest after the checks that name what is wrong, before the network is parsed
    expected = meta.get(DIGEST_KEY)
    if expected is None:   # written before maps had a digest: damage cannot be detected
        warnings.warn(f'map {path} has no content digest (an older camreloc_ros wrote it), '
                      'so damage on disk cannot be detected; rebuild it with `camreloc map` '
                      'to add one', stacklevel=2)
    elif map_digest(data, meta) != expected:
        raise MapError(f'map {path} is damaged or was edited: its arrays do not match the '
                       'content digest stored when it was written; rebuild it with '
                       '`camreloc map`')
    onnx = _check_descriptor(data, meta, path)
    points = data['points'].astype(np.float64) + data['origin'].astype(np.float64)
    return LocalizationMap(names=[str(s) for s in data['names']],
                           **{k: data[k] for k in ARRAYS if k not in ('names', 'origin',
                                                                      'points')},
                           points=points, meta=meta, path=path, descriptor_onnx=onnx)


def rebuild_command(meta: dict, path: Path | str) -> str:
    """Return the ``camreloc map`` command that rebuilds a map, from what its header says."""
    ck = meta.get('checkpoint') if isinstance(meta.get('checkpoint'), dict) else {}
    ds = meta.get('dataset') if isinstance(meta.get('dataset'), dict) else {}
    return (f'camreloc map --model {ck.get("path") or "CKPT"} --data {ds.get("root") or "DIR"}'
            f' --out {path} --overwrite')
