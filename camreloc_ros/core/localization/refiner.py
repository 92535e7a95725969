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

"""Centimetre poses: refine the pose network's answer by 2D-3D matching and PnP.

A pose network is about as accurate as image retrieval (Sattler et al., CVPR 2019); geometry
is what gives centimetres. For a query image the refiner takes the training images that
retrieval ranks highest (global descriptors of the pose model's own trunk) and the ones
posed nearest to the network's answer, matches the query's SIFT keypoints to their 3D
keypoints (ratio test), and solves the absolute pose robustly (LO-RANSAC P3P + non-linear
refinement). Its covariance comes from the inlier reprojection Jacobian. With too few
inliers the network's pose is returned, marked as a fallback, never a guess.

ROS-free and thread-safe per instance: the live node runs one in its own worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time
from typing import Callable

import numpy as np

from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.data.datasets import Intrinsics
from camreloc_ros.core.geometry import (available_solver, matrix_to_quat,
                                        orientation_error_deg,
                                        pnp_covariance as pose_covariance, quat_to_matrix,
                                        solve_pnp, SOLVERS)
from camreloc_ros.core.localization.sift import extract_sift, match_descriptors, root_sift
from camreloc_ros.core.localization.map_file import LocalizationMap

ASPECT_TOLERANCE = 0.01   # calibration vs image aspect ratio: beyond it a crop, not a resize

default_conf = {
    'top_k_retrieval': 5,      # training images ranked highest by the global descriptor
    'top_k_prior': 3,          # training images posed nearest to the network's pose
    'ratio': 0.8,              # Lowe's ratio test (over the candidate points, see
                               # match_to_images)
    'per_image_ratio': False,  # the ratio test per map image instead (version-1 maps)
    'solver': 'auto',          # auto (poselib, else pycolmap, else opencv) | poselib |
                               # pycolmap | opencv (USAC MAGSAC + Levenberg-Marquardt)
    'ransac_px': 8.0,          # inlier threshold of the robust solver (pixels)
    'ransac_iterations': 20000,  # bounds the time of hopeless frames (they fall back)
    'min_inliers': 20,         # fewer -> fall back (15 refines more, but lets a wrong pose
                               # through on repetitive stairs: test_map.py)
    'max_distance_m': 5.0,     # refined camera further than this from every image used: reject
    'min_sigma_px': 0.5,       # floor of the reprojection noise in the covariance
    'sift': None,              # None = the map's SIFT settings
    'max_keypoints': 0,        # query keypoint budget over the SIFT settings' (0: theirs);
                               # live 1024: 270 vs 430 ms a HoloLens frame, same median
    'seed': 0,
}


@dataclass
class Refinement:
    """One refined (or fallen-back) pose: camera-to-world, quaternion x, y, z, w."""

    position: np.ndarray                 # (3,) metres
    quaternion: np.ndarray               # (4,) x, y, z, w
    covariance: np.ndarray               # (6, 6): x y z, rotation about world x y z
    refined: bool                        # False: the network's pose (fallback)
    reason: str                          # 'refined' or why it fell back
    inliers: int = 0
    matches: int = 0
    images: list = field(default_factory=list)      # map image indices matched against
    retrieval: list = field(default_factory=list)   # map image indices, best first
    times: dict = field(default_factory=dict)       # seconds: retrieval, features, ...
    inlier_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))   # (n, 2) px
    inlier_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))   # (n, 3) m
    inlier_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    # (n, 2): the inliers as (query keypoint index, map point id), for map --extend
    inlier_ratio: float = 0.0            # inliers / matches: low on a wrong, lucky solution
    coverage: float = 0.0                # share of 8 x 6 image cells holding an inlier

    @property
    def pose_c2w(self) -> np.ndarray:
        """4x4 camera-to-world matrix."""
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(self.quaternion)
        T[:3, 3] = self.position
        return T


GRID = (8, 6)   # cells across and down for the image coverage of inliers


def image_coverage(xy_n2: np.ndarray, size: tuple[int, int], grid: tuple[int, int] = GRID
                   ) -> float:
    """Share of the ``grid`` cells of a ``size`` (w, h) image that hold a point.

    Inliers bunched in one corner constrain the pose poorly even when many; the share of
    occupied cells says so in one number (1.0: every cell). The refiner's and the tracker's
    gates both read it.
    """
    if len(xy_n2) == 0:
        return 0.0
    w, h = size
    cx = np.clip((xy_n2[:, 0] * grid[0] / w).astype(int), 0, grid[0] - 1)
    cy = np.clip((xy_n2[:, 1] * grid[1] / h).astype(int), 0, grid[1] - 1)
    return len(np.unique(cy * grid[0] + cx)) / float(grid[0] * grid[1])


def pose_neighbours(poses_c2w: np.ndarray, position: np.ndarray, quaternion: np.ndarray,
                    k: int) -> np.ndarray:
    """Return the ``k`` poses nearest to a pose (metres + degrees / 10, as the oracle)."""
    if k <= 0:
        return np.zeros(0, np.int64)
    quats = matrix_to_quat(poses_c2w[:, :3, :3])
    cost = (np.linalg.norm(poses_c2w[:, :3, 3] - position, axis=1)
            + orientation_error_deg(quats, np.broadcast_to(quaternion, quats.shape)) / 10.0)
    return np.argsort(cost, kind='stable')[:k]


def model_sha256(model) -> str:
    """Return the sha256 of the checkpoint ``model`` is (``.pt``) or came from (``.onnx``)."""
    return model_identity(model)[0]


def model_identity(model) -> tuple[str, dict | None]:
    """Return ``(sha256, scene frame)`` of a ``.pt`` checkpoint or of an ``.onnx`` export.

    The sha256 is the checkpoint's (an export's metadata names the one it came from); the
    scene frame is its ``extra['scene_frame']`` (None when trained before it existed), what
    a map pairs by across retrainings (:meth:`LocalizationMap.check_pairing`).
    """
    from camreloc_ros.core.io import file_sha256
    from camreloc_ros.core.localization.map_file import MapError
    from camreloc_ros.core.inference.runtimes import is_onnx_file
    if not is_onnx_file(model):
        from camreloc_ros.core.models.pose_model import load_checkpoint_file
        digest = file_sha256(model)
        extra = load_checkpoint_file(model).get('extra') or {}
        frame = extra.get('scene_frame') if isinstance(extra, dict) else None
        return digest, frame if isinstance(frame, dict) else None
    from camreloc_ros.core.inference.onnx_format import load_onnx
    meta = load_onnx(model)[1]
    digest = (meta.get('source') or {}).get('sha256')
    if not digest:
        raise MapError(f'{model} does not name the checkpoint it was exported from, so no map '
                       'can be paired with it: export it with `camreloc export CKPT`, or '
                       'give the .pt')
    frame = (meta.get('extra') or {}).get('scene_frame')
    return str(digest), frame if isinstance(frame, dict) else None


def map_descriptor(lmap: LocalizationMap, model=None, device: str = 'cpu', threads: int = 0):
    """Pick the retrieval descriptor of ``lmap``: its own ONNX network, else ``model``'s trunk.

    The map's network (:mod:`~camreloc_ros.core.localization.descriptor_onnx`) describes queries
    as the map's images were described, through ONNX Runtime: no torch, no ``.pt``. Maps
    written before it carry none: then the ``.pt`` checkpoint's trunk runs in torch.
    """
    from camreloc_ros.core.localization.map_file import MapError
    from camreloc_ros.core.inference.runtimes import is_onnx_file
    if lmap.descriptor_onnx is not None:
        from camreloc_ros.core.localization.descriptor_onnx import OnnxDescriptor
        return OnnxDescriptor(lmap.descriptor_onnx, lmap.meta.get('descriptor'), threads,
                              f'map {lmap.path}: its descriptor network')
    if model is None or is_onnx_file(model):
        raise MapError(f'map {lmap.path} holds no descriptor network (written by an older '
                       'camreloc_ros): give the .pt checkpoint as the model, or rebuild the '
                       'map with `camreloc map`')
    from camreloc_ros.core.localization.retrieval import GlobalDescriptor
    from camreloc_ros.core.models.pose_model import PoseModel
    from camreloc_ros.core.inference.runtimes import resolve_device
    p = float((lmap.meta.get('descriptor') or {}).get('p', 3.0))
    return GlobalDescriptor(PoseModel.from_checkpoint(model), p, str(resolve_device(device)))


def match_to_images(q_root: np.ndarray, lmap: LocalizationMap, images: list, ratio: float,
                    per_image: bool = False) -> np.ndarray:
    """Query RootSIFT ``(n, 128)`` -> unique pairs ``(m, 2)`` (query index, point id).

    One matrix product against every point the ``images`` see, each point once, with the
    ratio test over all of them (``per_image``: over each image's points, as version-1 maps
    matched). An exact product was chosen over approximate indices after measuring them on
    the HoloLens walk's candidate sets (docs/performance.md, "Compact map"): at a few
    thousand candidates BLAS beats OpenCV FLANN (kd-tree, 87 % recall at 3x the time) and
    equals faiss' flat index; a global faiss HNSW over the whole map found 35 %.
    """
    cand = lmap.image_points(images)
    if len(cand) == 0 or len(q_root) == 0:
        return np.zeros((0, 2), np.int64)
    roots = lmap.point_roots(cand)
    if not per_image:
        qi, ci = match_descriptors(q_root, roots, ratio)
        return np.stack([qi, cand[ci].astype(np.int64)], 1)
    qi, pid = [], []
    for i in images:
        cols = np.searchsorted(cand, lmap.image_observations(i)[1])
        ia, ib = match_descriptors(q_root, roots[cols], ratio)
        qi.append(ia)
        pid.append(cand[cols[ib]])
    return np.unique(np.stack([np.concatenate(qi), np.concatenate(pid)], 1).astype(np.int64),
                     axis=0)


class Refiner:
    """Refine network poses against a :class:`LocalizationMap`.

    ``descriptor`` (:func:`map_descriptor`: the map's ONNX network or the checkpoint's trunk)
    enables retrieval; without it only the network's pose picks images.
    """

    def __init__(self, lmap: LocalizationMap, descriptor: Callable | None = None,
                 conf: dict | None = None):
        self.conf = merge_conf(default_conf, conf)
        if self.conf['solver'] not in SOLVERS:
            raise ValueError(f'unknown PnP solver {self.conf["solver"]!r}; valid: '
                             f'{", ".join(SOLVERS)}')
        self.solver = available_solver(self.conf['solver'])
        self.map = lmap
        self.descriptor = descriptor
        self.sift_conf = dict(self.conf['sift'] or (lmap.meta.get('conf') or {}).get('sift')
                              or {})
        if self.conf['max_keypoints']:
            self.sift_conf['max_keypoints'] = int(self.conf['max_keypoints'])

    @classmethod
    def from_files(cls, map_path, model, conf: dict | None = None, device: str = 'cpu',
                   threads: int = 0) -> 'Refiner':
        """Load a map, check it belongs to ``model``, and pick its retrieval descriptor.

        ``model``: a ``.pt`` checkpoint or an ``.onnx`` exported from one (its metadata names
        the checkpoint's sha256 and scene frame). What the live node and the bag tools call:
        a network retrained in the map's scene frame pairs; one of another frame (or, for
        files without a frame id, any other checkpoint) raises
        :class:`~camreloc_ros.core.localization.MapError` naming both.
        """
        from camreloc_ros.core.localization.map_file import load_map
        lmap = load_map(map_path)
        digest, frame = model_identity(model)
        lmap.check_pairing(digest, checkpoint=str(model), scene_frame=frame)
        return cls(lmap, map_descriptor(lmap, model, device, threads), conf)

    def retrieve(self, image: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Map image indices ranked by global-descriptor similarity, and the similarities."""
        if self.descriptor is None:
            raise ValueError("retrieval needs the global descriptor of the map's checkpoint")
        sim = self.map.global_desc @ self.descriptor(image)
        k = len(sim) if k is None else min(int(k), len(sim))
        order = np.argsort(-sim, kind='stable')[:k]
        return order, sim[order]

    def intrinsics_for(self, width: int, height: int,
                       camera: Intrinsics | None = None) -> np.ndarray:
        """Return K for a query image of this size: ``camera``'s, else the map camera's.

        ``camera`` is the query camera's calibration (a live ``camera_info``, a bag's
        CameraInfo) at the size it was calibrated for; it is scaled to the image, since a
        driver may publish images resized from the calibrated resolution. Another aspect
        ratio than the calibration's is a crop whose offset K cannot tell: a ValueError
        naming both sizes, never a guessed K. Without ``camera`` the query is assumed to be
        the map's camera, rescaled (what a node without ``camera_info`` does): right only
        when it is the same lens, which is why the live node prefers ``camera_info``.
        """
        if camera is not None:
            w0, h0 = int(camera.width), int(camera.height)
            if w0 <= 0 or h0 <= 0 or abs((width / height) / (w0 / h0) - 1.0) > ASPECT_TOLERANCE:
                raise ValueError(
                    f'the camera calibration is for {w0}x{h0} images but the image is '
                    f'{width}x{height}: expected the same aspect ratio (a resize); a crop '
                    'needs the CameraInfo of the cropped image')
            return camera.scaled(width, height).matrix()
        K = self.map.K[0].copy()
        w0, h0 = self.map.image_size[0]
        if (width, height) != (int(w0), int(h0)):
            K[0] *= width / w0
            K[1] *= height / h0
        return K

    def refine(self, image: np.ndarray, prior_position: np.ndarray | None = None,
               prior_quaternion: np.ndarray | None = None,
               prior_covariance: np.ndarray | None = None, K: np.ndarray | None = None,
               retrieval: np.ndarray | None = None,
               features: tuple[np.ndarray, np.ndarray] | None = None) -> Refinement:
        """Refine one RGB uint8 query; the prior is the network's pose (and covariance).

        ``retrieval`` (map indices, best first) skips the descriptor pass when the caller
        has it; ``features`` (keypoints, SIFT of the image with this refiner's
        ``sift_conf``) the SIFT pass. Without a prior, only retrieval picks images and a
        fallback has no pose: then ``position`` is NaN.
        """
        conf = self.conf
        times = {'retrieval': 0.0, 'features': 0.0, 'matching': 0.0, 'pnp': 0.0}
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        K = self.intrinsics_for(w, h) if K is None else np.asarray(K, np.float64)
        if retrieval is None and self.descriptor is not None and conf['top_k_retrieval'] > 0:
            retrieval, _ = self.retrieve(image, conf['top_k_retrieval'])
        retrieval = [] if retrieval is None else [int(i) for i in retrieval]
        chosen = list(retrieval[:conf['top_k_retrieval']])
        if prior_position is not None and prior_quaternion is not None:
            for i in pose_neighbours(self.map.poses_c2w, np.asarray(prior_position),
                                     np.asarray(prior_quaternion), conf['top_k_prior']):
                if int(i) not in chosen:
                    chosen.append(int(i))
        t1 = time.perf_counter()
        times['retrieval'] = t1 - t0
        xy, desc = extract_sift(image, self.sift_conf) if features is None else features
        q_root = root_sift(desc)
        t2 = time.perf_counter()
        times['features'] = t2 - t1
        pairs = match_to_images(q_root, self.map, chosen, conf['ratio'],
                                conf['per_image_ratio'])
        t3 = time.perf_counter()
        times['matching'] = t3 - t2

        def done(result: Refinement) -> Refinement:
            times['pnp'] = time.perf_counter() - t3
            times['total'] = time.perf_counter() - t0
            result.times, result.images, result.retrieval = times, chosen, retrieval
            result.matches = int(len(pairs))
            return result

        def fallback(reason: str, inliers: int = 0) -> Refinement:
            if prior_position is None or prior_quaternion is None:
                pos, quat = np.full(3, np.nan), np.array([0.0, 0.0, 0.0, 1.0])
            else:
                pos = np.asarray(prior_position, np.float64)
                quat = np.asarray(prior_quaternion, np.float64)
            cov = (np.asarray(prior_covariance, np.float64) if prior_covariance is not None
                   else np.diag([1e6] * 3 + [1e3] * 3))
            return done(Refinement(pos, quat, cov, False, reason, inliers=inliers))

        if len(pairs) < max(4, conf['min_inliers']):
            return fallback(f'too few matches ({len(pairs)} < {max(4, conf["min_inliers"])})')
        x2 = xy[pairs[:, 0]].astype(np.float64)
        X3 = self.map.points[pairs[:, 1]]
        sol = solve_pnp(x2, X3, K, (w, h), self.solver, conf['ransac_px'], conf['seed'],
                        conf['ransac_iterations'])
        if sol is None:
            return fallback('PnP failed')
        R, C, mask = sol
        n_in = int(mask.sum())
        if n_in < conf['min_inliers']:
            return fallback(f'too few inliers ({n_in} < {conf["min_inliers"]})', n_in)
        near = np.min(np.linalg.norm(self.map.poses_c2w[chosen, :3, 3] - C, axis=1))
        if near > conf['max_distance_m']:
            return fallback(f'solution {near:.1f} m from every matched image', n_in)
        cov = pose_covariance(R, C, K, X3[mask], x2[mask], conf['min_sigma_px'])
        return done(Refinement(C, matrix_to_quat(R), cov, True, 'refined', inliers=n_in,
                               inlier_xy=x2[mask], inlier_points=X3[mask],
                               inlier_pairs=pairs[mask], inlier_ratio=n_in / float(len(pairs)),
                               coverage=image_coverage(x2[mask], (w, h))))
