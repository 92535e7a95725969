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

"""Metric scale and the map frame of a reconstruction: odometry, depth or a known distance.

Structure from motion knows the shape of a scene, never its size nor where "up" is: a model
is defined up to a similarity (scale, rotation, translation). A localizer must answer in
metres, in a frame the robot knows, so one of three measurements fixes it:

- **odometry** (the robot's own, in its ``odom`` frame): a robust Sim(3) fit of the model's
  camera centres to the odometry positions of the same images (pycolmap's LO-RANSAC
  ``estimate_sim3d_robust``). The map frame is then the odometry's frame itself, so ``map``
  and ``odom`` coincide where the recording started and the map is as level as the
  odometry (REP 105: ``odom`` is gravity-aligned). Residual: camera centre distances after
  the fit, which measure the odometry's drift as much as the model's error.
- **depth images** (an RGB-D camera): the median ratio of sensor depth to model depth at
  the keypoints that have a 3D point; residual: the spread of those ratios.
- **a distance** between two images' camera centres, measured by the user (a tape from
  where the camera stood for one to where it stood for the other).

Without odometry the map frame is the first registered keyframe's camera (origin at its
centre, its axes: x right, y down, z forward), scaled to metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from camreloc_ros.core.sfm.pipeline import colmap
SOURCES = ('odometry', 'depth', 'distance', 'none')
DEPTH_INVALID = (0, 65535)          # 7-Scenes / Kinect: no depth


@dataclass
class FrameFit:
    """The similarity that takes the model into the map frame, and why it is trusted."""

    source: str                       # one of SOURCES
    scale: float                      # metres per model unit (1 for 'none')
    rotation: np.ndarray              # (3, 3) new_from_old
    translation: np.ndarray           # (3,)
    frame: str                        # what the map frame is, in words
    residual: dict = field(default_factory=dict)

    def matrix(self) -> np.ndarray:
        """3x4 ``[s R | t]``: a model point X goes to ``s R X + t``."""
        return np.hstack([self.scale * self.rotation, self.translation.reshape(3, 1)])

    def apply(self, rec) -> None:
        """Move ``rec`` (a pycolmap Reconstruction) into the map frame, in place."""
        pycolmap = colmap()

        rec.transform(pycolmap.Sim3d(self.scale, pycolmap.Rotation3d(self.rotation),
                                     np.asarray(self.translation, np.float64)))

    def describe(self) -> str:
        """One line for the report: the source, the scale and its residual."""
        r = self.residual
        if self.source == 'odometry':
            return (f'odometry: robust Sim(3) fit of {r["inliers"]} of {r["images"]} camera '
                    f'centres (threshold {r["max_error_m"]:g} m), scale {self.scale:.5g} m per '
                    f'model unit; centre residual median {r["median_m"]:.3f} m, RMSE '
                    f'{r["rmse_m"]:.3f} m, max {r["max_m"]:.3f} m; rotation from the '
                    f'{r["rotation_from"]} (orientations agree within '
                    f'{r["orientation_spread_deg"]:.2f} deg, median)')
        if self.source == 'depth':
            return (f'depth images: median sensor / model depth of {r["keypoints"]} keypoints '
                    f'in {r["images"]} images, scale {self.scale:.5g} m per model unit; '
                    f'spread (median |ratio / scale - 1|) {100 * r["spread"]:.1f} %')
        if self.source == 'distance':
            return (f'distance: {r["a"]} to {r["b"]} = {r["metres"]:g} m ({r["model"]:.4g} '
                    f'model units), scale {self.scale:.5g} m per model unit; one measurement, '
                    'no residual')
        return 'none (--no-scale): poses are in model units, not metres'


def camera_centres(rec, names: Sequence[str]) -> np.ndarray:
    """Return the camera centres ``(N, 3)`` of the named images of ``rec``, in order."""
    by_name = {im.name: im for im in rec.images.values()}
    return np.array([by_name[n].projection_center() for n in names], np.float64).reshape(-1, 3)


def similarity(src: np.ndarray, tgt: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Fit ``tgt ≈ s R src + t`` in the least-squares sense (Umeyama): ``(s, R, t)``."""
    src, tgt = np.asarray(src, np.float64), np.asarray(tgt, np.float64)
    ms, mt = src.mean(0), tgt.mean(0)
    a, b = src - ms, tgt - mt
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    sign = np.eye(3)
    sign[2, 2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ sign @ vt
    var = (a ** 2).sum() / len(src)
    s = float((d * np.diag(sign)).sum() / var) if var > 0 else 1.0
    return s, rot, mt - s * rot @ ms


def centre_errors(src: np.ndarray, tgt: np.ndarray) -> dict:
    """Measure the distances of ``src`` centres to ``tgt`` after a least-squares similarity.

    The evaluation of a reconstruction against ground truth (no robust step: every image
    counts): median, RMSE and max in the units of ``tgt``, and the fitted scale.
    """
    s, rot, t = similarity(src, tgt)
    err = np.linalg.norm((s * (rot @ np.asarray(src, np.float64).T)).T + t - tgt, axis=1)
    return {'images': int(len(err)), 'median': float(np.median(err)),
            'rmse': float(np.sqrt(np.mean(err ** 2))), 'max': float(err.max()), 'scale': s}


def _rotation_mean(rotations: np.ndarray) -> np.ndarray:
    """Return the chordal L2 mean of rotation matrices ``(N, 3, 3)`` (SVD projection)."""
    u, _, vt = np.linalg.svd(rotations.sum(0))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    return u @ sign @ vt


def _angles_deg(rotations: np.ndarray, ref: np.ndarray) -> np.ndarray:
    cos = (np.einsum('nij,ij->n', rotations, ref) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def fit_odometry(rec, odometry: Mapping[str, np.ndarray], max_error_m: float = 0.3,
                 seed: int = 0, min_inliers: float = 0.5,
                 max_orientation_spread_deg: float = 3.0) -> FrameFit:
    """Fit the Sim(3) of the model into the odometry frame, robust to slips (LO-RANSAC).

    ``odometry`` maps image names to their 4x4 camera-to-odom poses; registered images
    without one are left out of the fit. ``max_error_m`` is the inlier distance of a camera
    centre to its odometry position (odometry drifts: generous by default). Fewer inliers
    than ``min_inliers`` of the images is an error: model and odometry disagree, and a scale
    from the few that agree would be a guess.

    Camera centres fix the rotation badly where the walk is nearly straight (the roll about
    the path is free: a few degrees on 16 HoloLens frames, measured), and a tilted map frame
    tilts the whole map. So when the odometry's orientations agree with the model's on the
    inliers (one rotation explains them within ``max_orientation_spread_deg``, median) and
    that rotation keeps the centres as close to the odometry as the centres' own fit (1.5x or
    2 cm), the rotation comes from them and the scale and translation from the centres;
    otherwise (odometry of a frame rotated from the camera, such as ``base_link``) from the
    centres alone. The report says which.
    """
    pycolmap = colmap()

    names = [im.name for im in rec.images.values() if im.has_pose and im.name in odometry]
    names.sort()
    if len(names) < 3:
        raise ValueError(f'{len(names)} registered image(s) have odometry; a Sim(3) fit needs '
                         'at least 3')
    src = camera_centres(rec, names)
    tgt = np.array([np.asarray(odometry[n])[:3, 3] for n in names], np.float64)
    if np.linalg.svd(tgt - tgt.mean(0), compute_uv=False)[0] < 1e-3:
        raise ValueError('the odometry did not move (all keyframes within a millimetre): it '
                         'cannot give a scale; record while moving, or use --distance')
    options = pycolmap.RANSACOptions()
    options.max_error = float(max_error_m)
    options.random_seed = int(seed)
    sim = pycolmap.estimate_sim3d_robust(src, tgt, options)
    if sim is None:
        raise ValueError(f'no Sim(3) of the model fits the odometry within {max_error_m:g} m '
                         f'({len(names)} images): is the odometry of this camera, and does it '
                         'move? A larger odometry_max_error accepts more drift')
    if isinstance(sim, dict):     # some pycolmap builds return {'tgt_from_src': ..., ...}
        sim = sim['tgt_from_src']
    scale = float(sim.scale)
    rot = np.asarray(sim.rotation.matrix(), np.float64)
    trans = np.asarray(sim.translation, np.float64).reshape(3)
    err = np.linalg.norm((scale * (rot @ src.T)).T + trans - tgt, axis=1)
    inl = err <= max_error_m
    by_name = {im.name: im for im in rec.images.values()}
    relative = np.array([np.asarray(odometry[n])[:3, :3]
                         @ np.asarray(by_name[n].cam_from_world().rotation.matrix())
                         for n, ok in zip(names, inl) if ok])
    spread = float('nan')
    rotation_from = 'camera centres'
    if len(relative) >= 2:
        mean = _rotation_mean(relative)
        spread = float(np.median(_angles_deg(relative, mean)))
        a = (mean @ (src[inl] - src[inl].mean(0)).T).T
        b = tgt[inl] - tgt[inl].mean(0)
        s_o = float((a * b).sum() / (a ** 2).sum())
        t_o = tgt[inl].mean(0) - s_o * mean @ src[inl].mean(0)
        err_o = np.linalg.norm((s_o * (mean @ src.T)).T + t_o - tgt, axis=1)
        # a walk that barely turns makes any constant rotation look consistent: the
        # orientations must also keep the centres where the centres alone put them
        med = float(np.median(err[inl]))
        if (spread <= max_orientation_spread_deg and s_o > 0
                and np.median(err_o[inl]) <= max(1.5 * med, med + 0.02)):
            rot, scale, trans, err = mean, s_o, t_o, err_o
            rotation_from = 'odometry orientations'
    residual = {'images': len(names), 'inliers': int((err <= max_error_m).sum()),
                'max_error_m': float(max_error_m), 'median_m': float(np.median(err)),
                'rmse_m': float(np.sqrt(np.mean(err ** 2))), 'max_m': float(err.max()),
                'rotation_from': rotation_from, 'orientation_spread_deg': spread}
    if residual['inliers'] < min_inliers * len(names):
        raise ValueError(f'the model and the odometry disagree: only {residual["inliers"]} of '
                         f'{len(names)} camera centres lie within {max_error_m:g} m of their '
                         f'odometry after the best Sim(3) (median {residual["median_m"]:.2f} '
                         'm). Is the odometry of this camera? Raise odometry_max_error for an '
                         'odometry that drifts more')
    return FrameFit('odometry', scale, rot, trans,
                    'the odometry frame (map = odom where the recording started; as level as '
                    'the odometry)', residual)


def first_camera_fit(rec, first: str, scale: float, source: str, residual: dict) -> FrameFit:
    """Put the map frame at the camera of image ``first``, in metres (``scale`` per unit)."""
    by_name = {im.name: im for im in rec.images.values()}
    pose = by_name[first].cam_from_world()
    rot = np.asarray(pose.rotation.matrix(), np.float64)
    trans = scale * np.asarray(pose.translation, np.float64).reshape(3)
    return FrameFit(source, float(scale), rot, trans,
                    f'the camera of the first registered keyframe {first} (x right, y down, '
                    'z forward)', residual)


def _read_depth(path: Path) -> np.ndarray:
    import cv2

    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None or depth.ndim != 2:
        raise ValueError(f'depth image {path} is not a readable one-channel image')
    return depth


def depth_ratios(rec, depth_files: Mapping[str, Path], depth_scale: float = 0.001
                 ) -> tuple[np.ndarray, int]:
    """Measure sensor / model depth at every keypoint with a 3D point and a depth pixel.

    The depth image is sampled at the keypoint (nearest pixel, rescaled when the depth image
    has another size than the colour image). Returns the ratios and how many images gave
    any.
    """
    ratios, images = [], 0
    for im in rec.images.values():
        path = depth_files.get(im.name)
        if path is None or not im.has_pose:
            continue
        depth = _read_depth(Path(path))
        cam = im.camera
        sx, sy = depth.shape[1] / cam.width, depth.shape[0] / cam.height
        pose = im.cam_from_world()
        rot = np.asarray(pose.rotation.matrix())
        trans = np.asarray(pose.translation).reshape(3)
        xy, xyz = [], []
        for p in im.points2D:
            if p.has_point3D():
                xy.append(p.xy)
                xyz.append(rec.points3D[p.point3D_id].xyz)
        if not xy:
            continue
        xy, xyz = np.asarray(xy), np.asarray(xyz)
        z = (rot @ xyz.T).T[:, 2] + trans[2]
        u = np.clip(np.round(xy[:, 0] * sx - 0.5).astype(int), 0, depth.shape[1] - 1)
        v = np.clip(np.round(xy[:, 1] * sy - 0.5).astype(int), 0, depth.shape[0] - 1)
        raw = depth[v, u].astype(np.float64)
        ok = (z > 0) & ~np.isin(raw, DEPTH_INVALID)
        if ok.any():
            images += 1
            ratios.append(raw[ok] * depth_scale / z[ok])
    return (np.concatenate(ratios) if ratios else np.zeros(0)), images


def fit_depth(rec, first: str, depth_files: Mapping[str, Path], depth_scale: float = 0.001,
              min_keypoints: int = 50, max_spread: float = 0.25) -> FrameFit:
    """Take the scale from depth images (median of :func:`depth_ratios`); frame at ``first``.

    A spread of the ratios above ``max_spread`` (median relative deviation) is an error: the
    depth images and the model disagree (unregistered depth, a weak model), and their median
    would be a guess.
    """
    ratios, images = depth_ratios(rec, depth_files, depth_scale)
    if len(ratios) < min_keypoints:
        raise ValueError(f'only {len(ratios)} keypoints with a 3D point have a valid depth '
                         f'pixel (need {min_keypoints}); the depth images do not give a scale')
    scale = float(np.median(ratios))
    spread = float(np.median(np.abs(ratios / scale - 1.0)))
    if spread > max_spread:
        raise ValueError(f'the depth images and the model disagree: sensor / model depth of '
                         f'{len(ratios)} keypoints spreads {100 * spread:.0f} % around its '
                         f'median (at most {100 * max_spread:.0f} %), so the scale is not '
                         'known. Is the depth registered to the colour images, and did the '
                         'camera move enough (see the report)? Use odometry or --distance')
    return first_camera_fit(rec, first, scale, 'depth',
                            {'keypoints': int(len(ratios)), 'images': images, 'spread': spread,
                             'depth_scale': depth_scale})


def fit_distance(rec, first: str, a: str, b: str, metres: float) -> FrameFit:
    """Take the scale from the distance in metres between the camera centres of ``a``, ``b``."""
    registered = {im.name for im in rec.images.values() if im.has_pose}
    missing = [n for n in (a, b) if n not in registered]
    if missing:
        raise ValueError(f'--distance names {", ".join(missing)}, not registered in the model '
                         f'(registered: {", ".join(sorted(registered)[:5])}, ...)')
    if not metres > 0:
        raise ValueError(f'--distance must be a positive number of metres, got {metres}')
    ca, cb = camera_centres(rec, [a, b])
    model = float(np.linalg.norm(ca - cb))
    if model <= 1e-9:
        raise ValueError(f'images {a} and {b} were taken from the same place; choose two '
                         'images taken apart')
    return first_camera_fit(rec, first, metres / model, 'distance',
                            {'a': a, 'b': b, 'metres': float(metres), 'model': model})
