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

"""A localization map's points from a reconstruction: the SfM tracks, no re-triangulation.

``camreloc map --reconstruction DIR`` builds the map of a ``camreloc reconstruct`` output
from its COLMAP model: each 3D point of the model is one map point, seen by the map images
of its track. The map's descriptors must be the refiner's own (OpenCV SIFT, what queries
are described with), so each track observation is tied to the OpenCV keypoint of the map
image within ``max_px`` of the pixel COLMAP's SIFT found it at; observations with none
nearby are dropped, and so are points left without any. Only the map's frames count: a
point seen only by held-out frames never enters the map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from camreloc_ros.core.sfm.pipeline import colmap


def reconstruction_observations(rec_dir: str | Path, frames: Sequence, keypoints: Sequence,
                                max_px: float = 1.5) -> tuple[list, np.ndarray, np.ndarray,
                                                              dict]:
    """Per-frame ``(kp_idx, point_idx)``, points ``(P, 3)``, errors ``(P,)`` and statistics.

    ``frames`` are the map's frames (their names are the model's image names without the
    extension, as ``reconstruct`` writes the posed dataset); ``keypoints[i]`` the OpenCV
    keypoints ``(n, 2)`` of frame ``i``. Raises ValueError naming the folder when it holds no
    model or a frame is not in it.
    """
    from scipy.spatial import cKDTree
    rec_dir = Path(rec_dir)
    if not (rec_dir / 'points3D.bin').is_file() and not (rec_dir / 'points3D.txt').is_file():
        raise ValueError(f'{rec_dir} holds no COLMAP model (points3D.bin): expected the '
                         '`reconstruction/` folder that `camreloc reconstruct` writes')
    rec = colmap().Reconstruction(str(rec_dir))
    by_name = {Path(im.name).stem: im for im in rec.images.values()}
    missing = [f.name for f in frames if f.name not in by_name]
    if missing:
        raise ValueError(f'{len(missing)} map frames are not in the model {rec_dir} (the '
                         f'first: {missing[0]}): build the map from the dataset that '
                         '`camreloc reconstruct` wrote beside it')
    raw = []          # (frame, kp index, model point id) per kept observation
    seen = dropped = 0
    for i, (f, xy) in enumerate(zip(frames, keypoints)):
        obs = [(p.xy, p.point3D_id) for p in by_name[f.name].points2D if p.has_point3D()]
        seen += len(obs)
        if not obs or len(xy) == 0:
            dropped += len(obs)
            continue
        uv = np.array([o[0] for o in obs], np.float64)
        ids = np.array([o[1] for o in obs], np.int64)
        dist, kp = cKDTree(np.asarray(xy, np.float64)).query(uv, distance_upper_bound=max_px)
        ok = np.isfinite(dist)
        dropped += int((~ok).sum())
        # one keypoint per point and image, one point per keypoint: the nearest pairs
        order = np.argsort(dist[ok], kind='stable')
        kp_ok, id_ok = kp[ok][order], ids[ok][order]
        _, first_kp = np.unique(kp_ok, return_index=True)
        keep = np.zeros(len(kp_ok), bool)
        keep[first_kp] = True
        _, first_id = np.unique(id_ok, return_index=True)
        keep2 = np.zeros(len(kp_ok), bool)
        keep2[first_id] = True
        sel = keep & keep2
        dropped += int((~sel).sum())
        raw.append((np.full(int(sel.sum()), i), kp_ok[sel], id_ok[sel]))
    img = np.concatenate([r[0] for r in raw]) if raw else np.zeros(0, np.int64)
    kp = np.concatenate([r[1] for r in raw]) if raw else np.zeros(0, np.int64)
    pid = np.concatenate([r[2] for r in raw]) if raw else np.zeros(0, np.int64)
    model_ids, point = np.unique(pid, return_inverse=True)
    xyz = np.array([rec.points3D[int(k)].xyz for k in model_ids], np.float64).reshape(-1, 3)
    err = np.array([rec.points3D[int(k)].error for k in model_ids], np.float32)
    per_image = []
    for i in range(len(frames)):
        sel = img == i
        order = np.argsort(kp[sel])
        per_image.append((kp[sel][order], point[sel][order]))
    views = np.bincount(point, minlength=len(model_ids))
    stats = {'model_points': int(len(rec.points3D)), 'model_images': int(len(rec.images)),
             'observations_in_map_frames': int(seen), 'observations_without_keypoint':
             int(dropped), 'points': int(len(model_ids)),
             'mean_track_length': float(views.mean()) if len(views) else 0.0,
             'keypoint_max_px': float(max_px)}
    return per_image, xyz, err, stats
