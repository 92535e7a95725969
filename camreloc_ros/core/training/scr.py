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

"""Training of the scene-coordinate head (``model.head.name=scr``) from poses and intrinsics.

As ACE (Brachmann et al., CVPR 2023) trains its head: the frozen trunk's features of every
training pixel go into one buffer (here straight from the frozen-feature cache, so the trunk
runs once per image, ever), and the per-pixel MLP is fitted on random pixels of it with a
reprojection loss. No depth and no 3D points are needed: the point a pixel sees is whatever
projects to it in every training view, which the reprojection error pins down.

The loss per pixel, with ``e`` the reprojection error in pixels of the original image:

* valid predictions (in front of the camera, ``depth_min < z < depth_max``, ``e`` below the
  hard clamp): ``tau * tanh(e / tau)``, a robust error whose threshold ``tau`` tightens from
  ``soft_clamp_px`` to ``soft_clamp_min_px`` over training along a quarter circle (ACE's
  curriculum: early, every pixel pulls; late, only the consistent ones);
* invalid ones: the L1 distance, in the camera frame, to the point on the pixel's ray at
  ``depth_target`` metres: a hinge that pulls a point from behind the camera to the front.

One epoch is ``scr.epoch_steps`` steps of ``scr.batch_pixels`` pixels drawn from the buffer
without replacement, however many frames there are: the training time does not grow with the
frames (ACE, too, trains a fixed number of steps), the caching of their features does. The
learning rate follows one cycle (``scr.lr`` at its peak) over all epochs. On the CPU the head
trains on one thread: its steps are a few milliseconds of small matrix products, and on a busy
2-core machine a second thread made a step 10x slower (46 vs 492 ms, load average 8), as
for the inference heads (``HEAD_THREADS``). Each epoch's batch order comes from a generator
seeded by ``(seed, epoch)`` and ``last.pt`` holds model, optimizer and schedule, so a resumed
run trains the same next epoch as an uninterrupted one. After every epoch the validation
frames are localized by PnP (the engine's code) and ``best.pt`` is the best on them; the
covariance scales are fitted on them too (:func:`~.trainer.covariance_calibration`).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
import time
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import torch

from camreloc_ros.core.data.readers import image_size
from camreloc_ros.core.evaluation.metrics import pose_errors
from camreloc_ros.core.geometry import matrix_to_quat
from camreloc_ros.core.io import clean_stale_temps
from camreloc_ros.core.models.pose_model import load_checkpoint_file, model_conf, PoseModel
from camreloc_ros.core.models.scr import pixel_centres, pose_from_coordinates
from camreloc_ros.core.training.feature_cache import frozen_features
from camreloc_ros.core.training.trainer import _world_rot_error, covariance_calibration, \
    default_conf, pose_stats, pose_targets, train_conf, write_epoch_files

logger = logging.getLogger('camreloc_ros')

# the train-config section ``scr`` (its defaults and schema live with the others in trainer)
SCR_TRAIN_DEFAULTS = default_conf['scr']


def camera_matrix(split_info: dict, width: int, height: int) -> np.ndarray:
    """K of the training camera (``split_info['camera']``) at ``width`` x ``height``.

    The scr head is trained by reprojection, so it needs the intrinsics: a dataset without
    them (no ``K.txt``, a bag without camera info) is refused with what to add.
    """
    cam = (split_info or {}).get('camera') or {}
    if not all(cam.get(k) for k in ('width', 'height', 'fx', 'fy')):
        raise ValueError('model.head.name=scr trains by reprojection and needs the camera '
                         'intrinsics: the training data has none (add a K.txt with the 3x3 '
                         'camera matrix next to the data, or use a 7scenes dataset)')
    sx, sy = width / float(cam['width']), height / float(cam['height'])
    cx = cam.get('cx', cam['width'] / 2.0)
    cy = cam.get('cy', cam['height'] / 2.0)
    return np.array([[cam['fx'] * sx, 0.0, cx * sx], [0.0, cam['fy'] * sy, cy * sy],
                     [0.0, 0.0, 1.0]])


def curriculum_clamp(progress: float, soft: float, soft_min: float) -> float:
    """Tanh threshold at ``progress`` in [0, 1]: ``soft`` down to ``soft_min``, circular.

    ACE's schedule: ``w = 1 - sqrt(1 - progress^2)``; threshold ``(1 - w) soft + w soft_min``
    (slow at first, fast at the end).
    """
    p = min(max(float(progress), 0.0), 1.0)
    w = 1.0 - math.sqrt(1.0 - p * p)
    return (1.0 - w) * soft + w * soft_min


def reprojection_loss(coords_n3: torch.Tensor, xy_n2: torch.Tensor, R_w2c_n33: torch.Tensor,
                      t_w2c_n3: torch.Tensor, K_n4: torch.Tensor, clamp_px: float,
                      conf: dict) -> tuple[torch.Tensor, dict]:
    """ACE-style loss of predicted world points seen at pixels ``xy_n2`` (see module doc).

    ``K_n4``: fx, fy, cx, cy per pixel. Returns the mean loss over the pixels and
    ``{'valid': share valid, 'median_px': median error of the valid}``.
    """
    cam = torch.einsum('nij,nj->ni', R_w2c_n33, coords_n3) + t_w2c_n3
    z = cam[:, 2]
    uv = cam[:, :2] / z.clamp_min(conf['depth_min']).unsqueeze(1) * K_n4[:, :2] + K_n4[:, 2:]
    err = (uv - xy_n2).norm(dim=1)
    valid = (z > conf['depth_min']) & (z < conf['depth_max']) & (err < conf['hard_clamp_px'])
    loss_valid = (clamp_px * torch.tanh(err[valid] / clamp_px)).sum()
    ray = torch.cat([(xy_n2 - K_n4[:, 2:]) / K_n4[:, :2], torch.ones_like(z).unsqueeze(1)], 1)
    target = ray * conf['depth_target']
    loss_invalid = (cam[~valid] - target[~valid]).abs().sum()
    n = max(len(z), 1)
    stats = {'valid': float(valid.float().mean()) if len(z) else 0.0,
             'median_px': float(err.detach()[valid].median()) if bool(valid.any())
             else float('nan')}
    return (loss_valid + loss_invalid) / n, stats


def view_boxes(image_hw: tuple[int, int], views: int, min_scale: float,
               rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Draw ``views`` squares ``(y0, x0, side)`` of an image: the centre crop, then random.

    The random ones zoom in (side down to ``min_scale`` of the shorter side) and move over the
    whole image, also the strips the centre crop never shows: the head learns the points
    seen there and at other scales, which a held-out view may see in its centre.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    short = min(h, w)
    out = [((h - short) // 2, (w - short) // 2, short)]
    for _ in range(int(views) - 1):
        side = int(round(short * rng.uniform(min_scale, 1.0)))
        out.append((int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)),
                    side))
    return out


def view_features(model: PoseModel, frames: Sequence, boxes: list, batch: int = 16
                  ) -> np.ndarray:
    """Hypercolumn features ``(V, C, h, w)`` of the ``(frame index, box)`` views."""
    from camreloc_ros.core.data.transforms import Preprocessor, read_rgb

    spec = model.spec
    pre = Preprocessor(spec.input_size, spec.mean, spec.std)
    trunk = model.scr_trunk()
    out, images = [], {}
    with torch.inference_mode():
        for s in range(0, len(boxes), batch):
            x = []
            for i, (y0, x0, side) in boxes[s:s + batch]:
                if i not in images:
                    images = {i: read_rgb(frames[i].image_path)}   # views come frame by frame
                x.append(pre.normalize(pre.resized(images[i], (y0, x0, side, side))))
            out.append(trunk(torch.from_numpy(np.stack(x))).numpy())
    return np.concatenate(out)


class _PixelSet:
    """Every cell of every view: features ``(V*h*w, C)``, pixel xy, frame index; poses, K.

    ``fmap`` holds the centre views (the feature cache); ``extra`` the other views' features
    with their ``(frame index, box)``.
    """

    def __init__(self, model: PoseModel, frames: Sequence, fmap: np.ndarray, split_info: dict,
                 extra: tuple | None = None):
        n, c, h, w = fmap.shape
        self.grid = (h, w)
        self.frames = list(frames)
        self.feat = torch.from_numpy(np.ascontiguousarray(
            np.transpose(fmap, (0, 2, 3, 1)).reshape(-1, c)))
        sizes = {}
        xy, Ks = [], []
        for f in self.frames:
            size = sizes.setdefault(str(Path(f.image_path).parent), image_size(f.image_path))
            wid, hei = size
            K = camera_matrix(split_info, wid, hei)
            Ks.append([K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
            xy.append(pixel_centres((h, w), (hei, wid), model.spec.input_size))
        self.image_hw = [(s[1], s[0]) for s in (sizes[str(Path(f.image_path).parent)]
                                                for f in self.frames)]
        self.K = np.asarray(Ks, np.float64)
        self.xy = torch.from_numpy(np.concatenate(xy).astype(np.float32))
        self.frame = torch.arange(n).repeat_interleave(h * w)
        poses = np.stack([f.pose_c2w for f in self.frames])
        R_w2c = np.transpose(poses[:, :3, :3], (0, 2, 1))
        self.R_w2c = torch.from_numpy(R_w2c.astype(np.float32))
        self.t_w2c = torch.from_numpy(
            (-np.einsum('nij,nj->ni', R_w2c, poses[:, :3, 3])).astype(np.float32))
        self.K_t = torch.from_numpy(self.K.astype(np.float32))
        self.fmap = fmap
        if extra is not None and len(extra[1]):
            efeat, eboxes = extra
            self.feat = torch.cat([self.feat, torch.from_numpy(np.ascontiguousarray(
                np.transpose(efeat, (0, 2, 3, 1)).reshape(-1, c)))])
            exy = [pixel_centres((h, w), self.image_hw[i], model.spec.input_size, box)
                   for i, box in eboxes]
            self.xy = torch.cat([self.xy, torch.from_numpy(np.concatenate(exy)
                                                           .astype(np.float32))])
            self.frame = torch.cat([self.frame, torch.tensor(
                [i for i, _ in eboxes]).repeat_interleave(h * w)])


def scr_cache_model(model: PoseModel) -> SimpleNamespace:
    """Describe the scr hypercolumn to :func:`frozen_features` as if it were the frozen trunk.

    Its cache key differs from the pose heads' (other modules, and the stages in the
    ``trainable_stages`` slot), so the two never share a file.
    """
    trunk = model.scr_trunk()
    with torch.no_grad():
        size = model.spec.input_size
        shape = tuple(trunk(torch.zeros(1, 3, size, size)).shape[1:])
    return SimpleNamespace(conf=model.conf, spec=model.spec, backbone=SimpleNamespace(
        frozen=trunk, frozen_shape=shape,
        num_trainable_stages=f'scr:{model.conf["head"]["scr_stages"]}'))


def localize_features(model: PoseModel, fmap: np.ndarray, image_hw: list, K_list: list,
                      batch: int = 32) -> list:
    """Localize frames from their features: :class:`~camreloc_ros.core.models.scr.ScrPose`."""
    hconf = model.conf['head']
    out = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(fmap), batch):
            x = torch.from_numpy(np.array(fmap[s:s + batch], np.float32))
            coords = model.coordinates_from_features(x.to(model.pos_mean.device)).cpu().numpy()
            for j, c in enumerate(coords):
                i = s + j
                xy = pixel_centres(c.shape[1:], image_hw[i], model.spec.input_size)
                out.append(pose_from_coordinates(
                    c.reshape(3, -1).T, xy, K_list[i], image_hw[i], hconf['scr_ransac_px'],
                    hconf['scr_ransac_iterations'], hconf['scr_min_inliers']))
    return out


class ScrTrainer:
    """Fits the scr head of a :class:`PoseModel`; validates by PnP on held-out frames.

    The same outputs as :class:`~camreloc_ros.core.training.trainer.Trainer` (``last.pt``
    resumable, ``best.pt`` by validation, ``epoch_NNN.pt``, ``history.json``), on one
    process: DDP has nothing to split in a job this small.
    """

    def __init__(self, conf: dict, train_frames: Sequence, val_frames: Sequence,
                 out_dir: str | Path, log: Callable[[str], None] | None = None,
                 split_info: dict | None = None, device: torch.device | None = None):
        self.log = log or logger.info
        self.conf = train_conf(conf)
        tconf = self.conf['train']
        if tconf['limit']:
            train_frames = list(train_frames)[:int(tconf['limit'])]
        if not train_frames:
            raise ValueError('no training frames')
        self.train_frames, self.val_frames = list(train_frames), list(val_frames)
        self.split_info = dict(split_info or {})
        self.scene_frame = self.split_info.pop('scene_frame', None)
        self.device = device or torch.device('cpu')
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.out_dir, self.log)
        torch.manual_seed(tconf['seed'])
        self.model = PoseModel(self.conf['model'])
        if not self.model.scr:
            raise ValueError('ScrTrainer trains model.head.name=scr only')
        pos = np.stack([f.pose_c2w[:3, 3] for f in self.train_frames])
        self.model.set_pose_stats(*pose_stats(pos))
        self.model.to(self.device)
        self.sconf = self.conf['scr']
        cache = scr_cache_model(self.model)
        self.train_set = _PixelSet(self.model, self.train_frames, frozen_features(
            cache, self.train_frames, tconf['cache_dir'], workers=tconf['workers'],
            progress=self._progress('train')), self.split_info, self._extra_views())
        self.val_set = _PixelSet(self.model, self.val_frames, frozen_features(
            cache, self.val_frames, tconf['cache_dir'], workers=tconf['workers'],
            progress=self._progress('val')), self.split_info) if self.val_frames else None
        self.steps_per_epoch = int(self.sconf['epoch_steps'])
        total = self.steps_per_epoch * int(tconf['epochs'])
        self.optimizer = torch.optim.AdamW(self.model.head.parameters(), lr=self.sconf['lr'],
                                           weight_decay=tconf['weight_decay'])
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=self.sconf['lr'], total_steps=total, cycle_momentum=False)
        self.total_steps = total
        self.step = 0
        self.epoch = 0
        self.history: list[dict] = []
        self.best_score = math.inf
        self.calibration: dict | None = None

    def _extra_views(self) -> tuple | None:
        """Features of the views beyond the centre crop (``scr.views - 1`` per frame)."""
        views = int(self.sconf['views'])
        if views <= 1:
            return None
        rng = np.random.default_rng([int(self.conf['train']['seed']), 7])
        boxes = []
        for i, f in enumerate(self.train_frames):
            wid, hei = image_size(f.image_path)
            drawn = view_boxes((hei, wid), views, self.sconf['view_min_scale'], rng)
            boxes += [(i, box) for box in drawn[1:]]
        t0 = time.monotonic()
        feats = view_features(self.model, self.train_frames, boxes)
        self.log(f'  scr features of {len(boxes)} extra training views '
                 f'({time.monotonic() - t0:.0f} s)')
        return feats, boxes

    def _progress(self, which: str) -> Callable:
        state = {'t0': time.monotonic(), 'last': 0.0}

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - state['last'] > 5.0:
                state['last'] = now
                self.log(f'  caching scr features ({which}): {done}/{total} '
                         f'({now - state["t0"]:.0f} s)')
        return report

    def train_epoch(self) -> dict:
        """One pass over the pixel buffer in an order seeded by ``(seed, epoch)``."""
        epoch = self.epoch + 1
        tconf, sconf, ts = self.conf['train'], self.sconf, self.train_set
        gen = torch.Generator().manual_seed(int(tconf['seed']) * 100003 + epoch)
        bs = int(sconf['batch_pixels'])
        need, order = bs * self.steps_per_epoch, torch.zeros(0, dtype=torch.long)
        while len(order) < need:   # without replacement; a small buffer is passed repeatedly
            order = torch.cat([order, torch.randperm(len(ts.feat), generator=gen)])
        order = order[:need]
        threads = torch.get_num_threads()
        if self.device.type == 'cpu':
            torch.set_num_threads(1)
        try:
            return self._steps(epoch, order, bs)
        finally:
            torch.set_num_threads(threads)

    def _steps(self, epoch: int, order: torch.Tensor, bs: int) -> dict:
        sconf, ts = self.sconf, self.train_set
        self.model.head.train()
        t0 = time.monotonic()
        sums = {'loss': 0.0, 'valid': 0.0, 'median_px': 0.0, 'n': 0}
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            fr = ts.frame[idx]
            dev = self.device
            norm = self.model.head.forward_pixels(ts.feat[idx].to(dev))
            coords = norm * self.model.pos_scale + self.model.pos_mean
            clamp = curriculum_clamp(self.step / max(self.total_steps - 1, 1),
                                     sconf['soft_clamp_px'], sconf['soft_clamp_min_px'])
            loss, stats = reprojection_loss(coords, ts.xy[idx].to(dev), ts.R_w2c[fr].to(dev),
                                            ts.t_w2c[fr].to(dev), ts.K_t[fr].to(dev), clamp,
                                            sconf)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            sums['loss'] += loss.item()
            sums['valid'] += stats['valid']
            if math.isfinite(stats['median_px']):
                sums['median_px'] += stats['median_px']
            sums['n'] += 1
        self.epoch = epoch
        n = max(sums['n'], 1)
        return {'epoch': epoch, 'loss': sums['loss'] / n, 'train_valid': sums['valid'] / n,
                'train_median_px': sums['median_px'] / n, 'clamp_px': clamp,
                'seconds': time.monotonic() - t0}

    def predict(self, which: str = 'val') -> tuple:
        """Localize the validation (or training) frames by PnP: pos, quat, var (6), inliers."""
        ps = self.val_set if which == 'val' else self.train_set
        poses = localize_features(self.model, ps.fmap, ps.image_hw,
                                  [np.array([[k[0], 0, k[2]], [0, k[1], k[3]], [0, 0, 1]])
                                   for k in ps.K])
        pos = np.stack([p.centre for p in poses])
        quat = matrix_to_quat(np.stack([p.R_c2w for p in poses]))
        var = np.stack([np.diag(p.covariance) for p in poses])
        return pos, quat, var, np.array([p.inliers for p in poses])

    def validate(self) -> dict:
        """Median/mean errors of the PnP poses on the validation frames; covariance scales."""
        if self.val_set is None:
            return {}
        pos, quat, var, inliers = self.predict('val')
        gt_pos, gt_quat = pose_targets(self.val_frames)
        pos_err, rot_err = pose_errors(pos, quat, gt_pos, gt_quat)
        med_pos, med_rot = float(np.median(pos_err)), float(np.median(rot_err))
        if self.conf['train']['calibrate_covariance']:
            rot_vec = _world_rot_error(torch.from_numpy(quat).double(),
                                       torch.from_numpy(gt_quat).double()).numpy()
            ok = inliers > 0
            if ok.sum() >= 2:
                err = np.concatenate([pos - gt_pos, rot_vec], axis=1)
                self.calibration = covariance_calibration(err[ok], var[ok])
                self.calibration.update(epoch=self.epoch, failed_frames=int((~ok).sum()))
        return {'val_median_pos': med_pos, 'val_median_rot': med_rot,
                'val_mean_pos': float(np.mean(pos_err)), 'val_mean_rot': float(np.mean(rot_err)),
                'val_failed': int((inliers == 0).sum()),
                'val_score': med_pos + med_rot / 10.0}

    # ---- checkpoints ---------------------------------------------------------------------
    def _extra(self) -> dict:
        extra = {'train_conf': copy.deepcopy(self.conf), 'data': dict(self.conf['data']),
                 'epoch': self.epoch, 'history': copy.deepcopy(self.history),
                 'split': copy.deepcopy(self.split_info)}
        if self.calibration is not None:
            extra['covariance_calibration'] = copy.deepcopy(self.calibration)
        if self.scene_frame is not None:
            extra['scene_frame'] = dict(self.scene_frame)
        return extra

    def save(self) -> None:
        """``last.pt`` (resumable), this epoch's file, the newest ``keep_epochs``."""
        extra = self._extra()
        state = self.model.checkpoint_dict(extra)
        state['resume'] = {'optimizer': self.optimizer.state_dict(),
                           'scheduler': self.scheduler.state_dict(), 'epoch': self.epoch,
                           'step': self.step, 'best_score': self.best_score}
        write_epoch_files(self.model, self.out_dir, state, extra, self.epoch,
                          int(self.conf['train']['keep_epochs']), self.history)

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from ``last.pt``; returns False when there is nothing to resume."""
        path = Path(path) if path else self.out_dir / 'last.pt'
        if not path.is_file():
            return False
        ckpt = load_checkpoint_file(path)
        if 'resume' not in ckpt or 'scheduler' not in ckpt['resume']:
            raise ValueError(f'{path} has no scr optimizer state to resume from')
        saved = ckpt['extra']['train_conf']
        if model_conf(saved['model']) != self.conf['model'] or saved['scr'] != self.sconf \
                or saved['train']['epochs'] != self.conf['train']['epochs']:
            raise ValueError(f'{path} was trained with another model, scr or epochs config; '
                             'resume with the same config or use a new --out')
        self.model.load_state_dict(ckpt['state_dict'])
        self.optimizer.load_state_dict(ckpt['resume']['optimizer'])
        self.scheduler.load_state_dict(ckpt['resume']['scheduler'])
        self.epoch = int(ckpt['resume']['epoch'])
        self.step = int(ckpt['resume']['step'])
        self.best_score = float(ckpt['resume']['best_score'])
        self.history = list(ckpt['extra']['history'])
        self.calibration = ckpt['extra'].get('covariance_calibration')
        self.log(f'resumed from {path} after epoch {self.epoch}')
        return True

    def fit(self, epochs: int | None = None) -> dict:
        """Train up to ``epochs`` (default: the config's), saving after every epoch."""
        epochs = int(epochs or self.conf['train']['epochs'])
        while self.epoch < epochs:
            record = self.train_epoch()
            record.update(self.validate())
            self.history.append(record)
            best = record.get('val_score', -record['epoch']) < self.best_score
            if best:
                self.best_score = record.get('val_score', -record['epoch'])
            self.save()
            if best:
                self.model.save_checkpoint(self.out_dir / 'best.pt', self._extra())
            msg = (f'epoch {record["epoch"]:3d}  loss {record["loss"]:.3f}  valid '
                   f'{record["train_valid"]:.2f}  train median {record["train_median_px"]:.1f} '
                   f'px (clamp {record["clamp_px"]:.1f})')
            if 'val_median_pos' in record:
                msg += (f'  val median {record["val_median_pos"]:.2f} m '
                        f'{record["val_median_rot"]:.1f} deg, {record["val_failed"]} failed'
                        f'{"  *best" if best else ""}')
            self.log(msg + f'  ({record["seconds"]:.1f} s)')
        return self.history[-1] if self.history else {}
