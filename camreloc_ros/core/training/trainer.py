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

"""Training of pose models as the thesis: Adam, L1 losses, frozen trunk features cached.

Determinism and resuming: each epoch draws its batch order and dropout masks from generators
seeded with ``(seed, epoch)`` and each frame's augmentation from ``(seed, epoch, frame)``
(:mod:`camreloc_ros.core.data.loading`), and ``last.pt`` holds model, loss weights and
optimizer state after each finished epoch. A run killed at any point and resumed therefore
produces the same next epoch as an uninterrupted run, augmented or not, with any number of
data-loader workers. Scale-out is torchrun + DistributedDataParallel
(:mod:`camreloc_ros.core.training.distributed`). This module is over 450 lines because the config
schema, the trainer and its DDP step belong together; the data pipeline lives in
``data/loading.py``.
"""

import copy
import json
import logging
import math
from pathlib import Path
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from camreloc_ros.core.config import check_conf, merge_conf, Spec, TRAIN_PRECISIONS
from camreloc_ros.core.data.datasets import READER_OPTIONS
from camreloc_ros.core.data.formats import FORMATS
from camreloc_ros.core.data.split import (causal_window_groups, frame_breaks, SPLIT_DEFAULTS,
                                          temporal_windows)
from camreloc_ros.core.data.loading import CachedFrozen, EpochBatches, FrameImages, make_loader, \
    shard
from camreloc_ros.core.data.transforms import Augmenter, Preprocessor
from camreloc_ros.core.training.distributed import Dist, resolve_train_device
from camreloc_ros.core.evaluation.metrics import atomic_write_text, pose_errors
from camreloc_ros.core.training.feature_cache import frozen_features
from camreloc_ros.core.io import clean_stale_temps
from camreloc_ros.core.progress import Progress
from camreloc_ros.core.geometry import matrix_to_quat, torch_quat_multiply, \
    torch_quat_conjugate, torch_quat_log
from camreloc_ros.core.training.losses import build_loss, LOSS_DEFAULTS
from camreloc_ros.core.models.pose_model import default_conf as model_default_conf
from camreloc_ros.core.models.pose_model import load_checkpoint_file, model_conf, PoseModel, \
    save_atomic

logger = logging.getLogger('camreloc_ros')

default_conf = {
    'model': model_default_conf,
    'loss': {'name': 'qeh', 'p': 1, 's_pos_init': 0.0, 's_rot_init': -3.0, 'beta': 500.0},
    'scr': {   # model.head.name=scr only (core/training/scr.py)
        'batch_pixels': 2048,       # random training pixels per step (ACE: 5120)
        'epoch_steps': 100,         # steps per epoch, whatever the frame count (ACE: fixed too)
        'lr': 0.005,                # peak of the one-cycle schedule (ACE: 0.005)
        'soft_clamp_px': 50.0,      # tanh threshold at the start ...
        'soft_clamp_min_px': 1.0,   # ... and at the end of training
        'hard_clamp_px': 1000.0,    # larger reprojection errors count as invalid
        'depth_min': 0.1,           # metres: valid points lie between these depths
        'depth_max': 1000.0,
        'depth_target': 10.0,       # invalid points are pulled to this depth on their ray
        'views': 3,                 # squares per training image: the centre one + random others
        'view_min_scale': 0.6,      # their side: this .. 1 x the image's shorter side
    },
    'train': {
        'epochs': 40,
        'batch_size': 32,
        'lr': 2e-4,
        'trunk_lr_scale': 1.0,   # trainable trunk stages learn at lr * this (head: lr)
        'betas': [0.9, 0.999],
        'eps': 1e-8,
        'weight_decay': 0.0,     # L2, 0 as the thesis
        'seed': 0,
        'var_weight': 1.0,       # weight of the variance head's NLL (detached errors)
        'calibrate_covariance': True,  # fit the variance's scale on the validation frames
        'window_stride': None,   # temporal heads: 1/stride of all windows per epoch (None=T)
        'cache': True,           # frozen-trunk feature cache (impossible with augmentation)
        'cache_dir': None,
        'limit': None,           # use only the first N training frames (quick checks)
        'workers': 1,            # DataLoader processes decoding images (0 = in the loop)
        'keep_epochs': 3,        # epoch_NNN.pt files kept besides last.pt and best.pt
        'device': 'auto',        # auto (CUDA when present), cpu, cuda, cuda:N
        'precision': 'fp32',     # CUDA autocast of the CNN: fp32 (off), bf16, fp16
    },
    'data': {
        'format': 'posed',
        # block, every: the test split of data without an official one (never trained on,
        # never validated on); val_block, val_every: validation blocks of the TRAINING side
        # (val_every 0 = no validation: best.pt is the last epoch). Values: SPLIT_DEFAULTS.
        **SPLIT_DEFAULTS,
        'augment': {'brightness': 0.0, 'contrast': 0.0, 'crop_scale': 0.0},
        # reader options (core.data.datasets.READER_OPTIONS): tum max_dt, drop_unmatched;
        # csv file. map and evaluate read the data with the checkpoint's (data.KEY=VALUE
        # overrides them there too)
        **{key: default for key, (default, _, _) in READER_OPTIONS.items()},
        # training from rosbags (camreloc train --bag): what to read from them
        'bag': {'image_topic': None, 'gt_topic': None, 'gt_tf': None, 'gt_tolerance': 0.05},
    },
}


# Type and range of every training key (the model's are in pose_model.schema): a bad value
# is refused with its key named, before any folder or file is written.
schema = {
    'loss': {
        'name': Spec('str', choices=('posenet', 'beta', 'nh', 'qeh')),
        'p': Spec('int', choices=(1, 2)),
        's_pos_init': Spec('float'),
        's_rot_init': Spec('float'),
        'beta': Spec('float', lo=0.0, lo_open=True),
    },
    'scr': {
        'batch_pixels': Spec('int', lo=1),
        'epoch_steps': Spec('int', lo=1),
        'lr': Spec('float', lo=0.0, lo_open=True),
        'soft_clamp_px': Spec('float', lo=0.0, lo_open=True),
        'soft_clamp_min_px': Spec('float', lo=0.0, lo_open=True),
        'hard_clamp_px': Spec('float', lo=0.0, lo_open=True),
        'depth_min': Spec('float', lo=0.0, lo_open=True),
        'depth_max': Spec('float', lo=0.0, lo_open=True),
        'depth_target': Spec('float', lo=0.0, lo_open=True),
        'views': Spec('int', lo=1),
        'view_min_scale': Spec('float', lo=0.0, hi=1.0, lo_open=True),
    },
    'train': {
        'epochs': Spec('int', lo=1),
        'batch_size': Spec('int', lo=1),
        'lr': Spec('float', lo=0.0, lo_open=True),
        'trunk_lr_scale': Spec('float', lo=0.0, lo_open=True),
        'betas': Spec('float', lo=0.0, hi=1.0, hi_open=True, length=2),
        'eps': Spec('float', lo=0.0, lo_open=True),
        'weight_decay': Spec('float', lo=0.0),
        'seed': Spec('int', lo=0),
        'var_weight': Spec('float', lo=0.0),
        'calibrate_covariance': Spec('bool'),
        'window_stride': Spec('int', lo=1, optional=True),
        'cache': Spec('bool'),
        'cache_dir': Spec('str', optional=True),
        'limit': Spec('int', lo=1, optional=True),
        'workers': Spec('int', lo=0),
        'keep_epochs': Spec('int', lo=0),
        'device': Spec('str'),
        'precision': Spec('str', choices=TRAIN_PRECISIONS),
    },
    'data': {
        'format': Spec('str', choices=FORMATS, optional=True),
        'block': Spec('int', lo=1),
        'every': Spec('int', lo=2),
        'val_block': Spec('int', lo=1),
        'val_every': Spec('int', lo=0),
        'augment': {
            'brightness': Spec('float', lo=0.0, hi=1.0),
            'contrast': Spec('float', lo=0.0, hi=1.0),
            'crop_scale': Spec('float', lo=0.0, hi=1.0, hi_open=True),
        },
        **{key: spec for key, (_, _, spec) in READER_OPTIONS.items()},
        'bag': {
            'image_topic': Spec('str', optional=True),
            'gt_topic': Spec('str', optional=True),
            'gt_tf': Spec('str', optional=True),
            'gt_tolerance': Spec('float', lo=0.0, lo_open=True),
        },
    },
}


def train_conf(overrides: dict | None = None) -> dict:
    """Defaults merged with overrides, type- and range-checked; the model part resolved."""
    conf = merge_conf(default_conf, overrides)
    check_conf(conf, schema)
    conf['model'] = model_conf(conf['model'])
    return conf


def _loss_from_conf(conf: dict) -> torch.nn.Module:
    name = conf['name'].lower()
    name = 'posenet' if name == 'beta' else name
    keys = LOSS_DEFAULTS.get(name, {})
    return build_loss(name, **{k: v for k, v in conf.items() if k in keys})


def pose_targets(frames: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Frames -> positions ``(N, 3)`` and quaternions ``(N, 4)`` (x, y, z, w)."""
    poses = np.stack([f.pose_c2w for f in frames])
    return poses[:, :3, 3].copy(), matrix_to_quat(poses[:, :3, :3])


def pose_stats(positions_n3: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean position and one isotropic scale, so the loss metric stays Euclidean."""
    mean = positions_n3.mean(axis=0)
    scale = float(np.sqrt(((positions_n3 - mean) ** 2).mean()))
    return mean, max(scale, 1e-6)


def _world_rot_error(quat_pred: torch.Tensor, quat_gt: torch.Tensor) -> torch.Tensor:
    """Rotation-vector error about the world axes (what the pose covariance describes)."""
    rel = torch_quat_multiply(quat_pred, torch_quat_conjugate(quat_gt))
    rel = torch.where(rel[..., 3:4] < 0, -rel, rel)
    return 2.0 * torch_quat_log(rel)


CHI2_3_95 = 7.814727903251178   # chi-square, 3 degrees of freedom, 95 %
CALIBRATION_QUANTILE = 0.95


def covariance_calibration(err_n6: np.ndarray, var_n6: np.ndarray,
                           quantile: float = CALIBRATION_QUANTILE) -> dict:
    """Scales of the position and rotation variances that make held-out errors fit them.

    The variance head learns the *training* errors, which a network that fits 248 images
    drives far below its errors on unseen frames (it claimed 7 cm for 20 cm). On validation
    frames the NEES of each 3-block, ``sum(e^2 / var)``, should follow chi2(3); the scale
    ``s = quantile_0.95(NEES) / chi2_3(0.95)`` puts 95 % of them inside the claimed 95 %
    ellipsoid. ``err_n6``: position error (m) and rotation error about the world axes (rad);
    ``var_n6`` the predicted variances (m^2, rad^2).
    """
    err_n6 = np.asarray(err_n6, np.float64)
    var_n6 = np.maximum(np.asarray(var_n6, np.float64), 1e-12)
    nees = err_n6 ** 2 / var_n6
    nees_pos, nees_rot = nees[:, :3].sum(1), nees[:, 3:].sum(1)
    s_pos = max(float(np.quantile(nees_pos, quantile)) / CHI2_3_95, 1e-12)
    s_rot = max(float(np.quantile(nees_rot, quantile)) / CHI2_3_95, 1e-12)
    return {'position_scale': s_pos, 'rotation_scale': s_rot, 'frames': int(len(err_n6)),
            'quantile': quantile, 'source': 'validation frames',
            'nees_median_raw': float(np.median(nees_pos)),
            'rotation_nees_median_raw': float(np.median(nees_rot)),
            'inside_95_raw': float(np.mean(nees_pos <= CHI2_3_95)),
            'inside_95_calibrated': float(np.mean(nees_pos / s_pos <= CHI2_3_95))}


MIN_FIT_FRAMES = 10   # fewer validation frames: no distance fit (the scale alone)


def fit_distance_variance(err_n6: np.ndarray, logvar_n6: np.ndarray, log_dist_n: np.ndarray
                          ) -> np.ndarray | None:
    """Fit ``(alpha, beta, gamma - 1)`` per block: ``log e^2 ~ alpha + beta log d + gamma lv``.

    Least squares on validation frames, per block (position in the model's normalised units,
    rotation in rad), with ``lv`` the learned branch's mean log-variance of the block and ``d``
    the feature distance to the nearest training frame
    (:class:`~camreloc_ros.core.models.heads.DistanceVariance`). The overall level is set
    afterwards by :func:`covariance_calibration`. None when too few frames or a singular fit.
    """
    err_n6, logvar_n6 = np.asarray(err_n6, np.float64), np.asarray(logvar_n6, np.float64)
    log_dist_n = np.asarray(log_dist_n, np.float64)
    if len(err_n6) < MIN_FIT_FRAMES:
        return None
    coef = np.zeros((3, 2))
    for b, sl in enumerate((slice(0, 3), slice(3, 6))):
        y = np.log(np.maximum((err_n6[:, sl] ** 2).mean(1), 1e-12))
        X = np.c_[np.ones(len(y)), log_dist_n, logvar_n6[:, sl].mean(1)]
        sol, _, rank, _ = np.linalg.lstsq(X, y, rcond=None)
        if rank < 3 or not np.all(np.isfinite(sol)):
            return None
        coef[:, b] = sol[0], sol[1], sol[2] - 1.0
    return coef


def variance_nll(out: dict, pos_gt_norm: torch.Tensor, quat_gt: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL of the *detached* errors under the predicted log-variances."""
    err = torch.cat([out['pos_norm'] - pos_gt_norm,
                     _world_rot_error(out['quat'], quat_gt)], dim=-1).detach()
    logvar = out['logvar'].clamp(-20.0, 20.0)
    return 0.5 * (err ** 2 * torch.exp(-logvar) + logvar).mean()


class _Objective(nn.Module):
    """Trainable part, head and losses as one module: what DDP wraps and synchronises.

    The learned loss weights (NH/QEH ``s_pos``, ``s_rot``) are parameters too, so every rank
    keeps the same ones. ``forward`` returns the loss to minimise and the decoded outputs.
    """

    def __init__(self, model: PoseModel, loss: nn.Module, var_weight: float):
        super().__init__()
        self.model = model
        self.loss = loss
        self.var_weight = float(var_weight)

    def forward(self, x: torch.Tensor, cached: bool, shape_bt: tuple[int, int],
                pos_gt_norm: torch.Tensor, quat_gt: torch.Tensor) -> tuple:
        """``x``: frozen features ``(B*T, C, h, w)`` or images ``(B*T, 3, S, S)``."""
        if not cached:
            with torch.no_grad():
                x = self.model.backbone.forward_frozen(x)
        feat = self.model.features_from_frozen(x).float()
        if self.model.temporal:
            feat = feat.view(shape_bt[0], shape_bt[1], -1)
        out = self.model.head_forward(feat)
        loss, parts = self.loss(out['pos_norm'].reshape(-1, 3), out['quat_raw'].reshape(-1, 4),
                                pos_gt_norm, quat_gt)
        flat = {k: v.reshape(-1, v.shape[-1]) for k, v in out.items()}
        nll = variance_nll(flat, pos_gt_norm, quat_gt)
        return loss + self.var_weight * nll, loss, nll, parts, out


def param_groups(objective: nn.Module, model: PoseModel, tconf: dict) -> list[dict]:
    """Adam parameter groups: the trainable trunk stages at ``lr * train.trunk_lr_scale``.

    Pretrained stages fine-tuned at the head's rate forget what ImageNet taught them on a few
    hundred frames; a smaller rate lets more stages train without that. With the scale at 1
    there is one group, as before the knob existed (so older ``last.pt`` files resume).
    """
    params = [p for p in objective.parameters() if p.requires_grad]
    scale = float(tconf['trunk_lr_scale'])
    if scale == 1.0:
        return [{'params': params}]
    trunk = {id(p) for p in model.backbone.trainable.parameters() if p.requires_grad}
    groups = [{'params': [p for p in params if id(p) not in trunk], 'name': 'head'},
              {'params': [p for p in params if id(p) in trunk], 'name': 'trunk',
               'lr': float(tconf['lr']) * scale}]
    return [g for g in groups if g['params']]


def write_epoch_files(model: PoseModel, out_dir: Path, state: dict, extra: dict, epoch: int,
                      keep: int, history: list) -> None:
    """Write ``last.pt`` (``state``, resumable), this epoch's file, prune, ``history.json``.

    ``last.pt`` goes first: resuming needs only it. Only epoch files this run numbered are
    removed (``epoch_NNN.pt`` older than the newest ``keep``). Every trainer (the pose
    heads', the scene-coordinate head's) writes its run folder through this one function.
    """
    save_atomic(state, out_dir / 'last.pt')
    if keep > 0:
        model.save_checkpoint(out_dir / f'epoch_{epoch:03d}.pt', extra)
    for old in range(epoch - keep, 0, -1):
        path = out_dir / f'epoch_{old:03d}.pt'
        if not path.is_file():
            break
        path.unlink()
    atomic_write_text(out_dir / 'history.json', json.dumps(history, indent=1))


class Trainer:
    """Fits a :class:`PoseModel` on training frames and validates on held-out frames.

    ``val_frames`` must come from the training side (held-out blocks of the training
    sequences, or separate validation data), never from the test split: ``best.pt`` is
    selected on them. In a torchrun job (``dist``), every rank trains on its shard of each
    global batch under DistributedDataParallel; rank 0 alone writes the cache, checkpoints
    and logs.
    """

    def __init__(self, conf: dict, train_frames: Sequence, val_frames: Sequence,
                 out_dir: str | Path, log: Callable[[str], None] | None = None,
                 progress_bars: bool = True, dist: Dist | None = None,
                 split_info: dict | None = None):
        log = log or logger.info
        self.conf = train_conf(conf)
        tconf = self.conf['train']
        if tconf['limit']:
            train_frames = list(train_frames)[:int(tconf['limit'])]
        if not train_frames:
            raise ValueError('no training frames')
        self.dist = dist or Dist(device=resolve_train_device(tconf['device']))
        self.train_frames, self.val_frames = list(train_frames), list(val_frames)
        self.split_info = dict(split_info or {})
        # the coordinate frame of the data (core.data.split.scene_frame): maps pair by it
        self.scene_frame = self.split_info.pop('scene_frame', None)
        self.out_dir = Path(out_dir)
        self.log = log if self.dist.main else (lambda s: None)
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            clean_stale_temps(self.out_dir, log)   # litter of a killed run, never a user's file
        self.progress_bars = progress_bars and self.dist.main
        self.device = self.dist.device
        torch.manual_seed(tconf['seed'])
        self.model = PoseModel(self.conf['model'])
        self.loss = _loss_from_conf(self.conf['loss'])
        pos, self.train_quat = pose_targets(self.train_frames)
        mean, scale = pose_stats(pos)
        self.model.set_pose_stats(mean, scale)
        self.train_pos = pos
        cuda = self.device.type == 'cuda'
        self.model.to(self.device)
        self.loss.to(self.device)
        if cuda:
            self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True   # fixed input size: fastest kernels
        self.amp = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(tconf['precision']) \
            if cuda else None
        self.scaler = torch.amp.GradScaler('cuda') if self.amp == torch.float16 else None
        self.objective = _Objective(self.model, self.loss, tconf['var_weight'])
        self.step_module: nn.Module = self.objective
        if self.dist.world > 1:
            self.step_module = DistributedDataParallel(
                self.objective, device_ids=[self.device.index] if cuda else None)
        self.optimizer = torch.optim.Adam(param_groups(self.objective, self.model, tconf),
                                          lr=tconf['lr'], betas=tuple(tconf['betas']),
                                          eps=tconf['eps'], weight_decay=tconf['weight_decay'],
                                          fused=True)
        self.epoch = 0
        self.history: list[dict] = []
        self.best_score = math.inf
        self.calibration: dict | None = None   # covariance scales of the last validation
        self._sources: dict = {}

    # ---- data ----------------------------------------------------------------------------
    def _source(self, which: str) -> tuple:
        """``(loader, sampler, cached)`` for ``train`` or ``val``, built once."""
        if which not in self._sources:
            frames = self.train_frames if which == 'train' else self.val_frames
            tconf, aug = self.conf['train'], self.conf['data']['augment']
            augmenter = Augmenter(aug['brightness'], aug['contrast'], aug['crop_scale']) \
                if which == 'train' else None
            spec = self.model.spec
            pre = Preprocessor(spec.input_size, spec.mean, spec.std)
            cached = tconf['cache'] and not (augmenter is not None and augmenter.active)
            workers = tconf['workers']
            if cached:
                if self.dist.main:    # rank 0 builds the cache; the others wait, then read it
                    frozen_features(self.model, frames, tconf['cache_dir'],
                                    progress=self._cache_progress(which), workers=workers)
                if which == 'train':  # validation runs on rank 0 alone: no barrier there
                    self.dist.barrier()
                dataset = CachedFrozen(frozen_features(self.model, frames, tconf['cache_dir']))
                workers = 0           # a memory-mapped slice needs no worker process
            else:
                dataset = FrameImages(frames, pre, augmenter, seed=tconf['seed'])
            sampler = EpochBatches()
            loader = make_loader(dataset, sampler, workers, self.device.type == 'cuda')
            self._sources[which] = (loader, sampler, cached)
        return self._sources[which]

    def _cache_progress(self, which: str) -> Callable:
        state = {'t0': time.monotonic(), 'last': 0.0}

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - state['last'] > 5.0:
                state['last'] = now
                self.log(f'  caching frozen features ({which}): {done}/{total} '
                         f'({now - state["t0"]:.0f} s)')
        return report

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """Draw the epoch's global batches (positions; ``(b, T)`` windows for temporal heads).

        Drawn from one generator seeded by ``(seed, epoch)``: identical on every rank.
        """
        tconf = self.conf['train']
        gen = np.random.default_rng([tconf['seed'], epoch])
        if self.model.temporal:
            units = temporal_windows(self.train_frames, self.model.window)
            if not units:
                raise ValueError(f'no training window of {self.model.window} consecutive '
                                 'frames; lower model.head.window')
            per_batch = max(1, tconf['batch_size'] // self.model.window)
            # every window is a valid sample; an epoch draws 1/stride of them at random, so
            # an epoch costs about as many frames as a single-frame epoch (stride = T)
            stride = int(tconf['window_stride'] or self.model.window)
            keep = max(1, math.ceil(len(units) / stride))
        else:
            units = [[i] for i in range(len(self.train_frames))]
            per_batch = tconf['batch_size']
            keep = len(units)
        order = gen.permutation(len(units))[:keep]
        return [np.array([units[u] for u in order[s:s + per_batch]])
                for s in range(0, len(order), per_batch)]

    # ---- one epoch -----------------------------------------------------------------------
    def _step(self, idx_bt: np.ndarray, x: torch.Tensor, cached: bool) -> dict:
        b, t = idx_bt.shape
        flat = idx_bt.reshape(-1)
        x = x.to(self.device, non_blocking=True)
        if not cached and self.device.type == 'cuda':
            x = x.contiguous(memory_format=torch.channels_last)
        pos_gt = self.model.normalize_pos(
            torch.from_numpy(self.train_pos[flat]).float().to(self.device))
        quat_gt = torch.from_numpy(self.train_quat[flat]).float().to(self.device)
        with torch.autocast('cuda', dtype=self.amp or torch.float16, enabled=self.amp is not None):
            total, loss, nll, parts, out = self.step_module(x, cached, (b, t), pos_gt, quat_gt)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        with torch.no_grad():
            pos_err, rot_err = pose_errors(out['pos'].reshape(-1, 3).float().cpu().numpy(),
                                           out['quat'].reshape(-1, 4).float().cpu().numpy(),
                                           self.train_pos[flat], self.train_quat[flat])
        return dict(parts, loss=loss.item(), nll=nll.item(), n=len(flat),
                    pos_err=float(np.sum(pos_err)), rot_err=float(np.sum(rot_err)))

    def train_epoch(self) -> dict:
        """Run one epoch; deterministic given (seed, epoch) and the state before it.

        Under DDP each rank takes rows ``rank::world`` of every global batch; the reported
        loss is the mean over ranks, i.e. the loss of the global batch.
        """
        epoch = self.epoch + 1
        dist = self.dist
        torch.manual_seed(self.conf['train']['seed'] * 100003 + epoch)
        if getattr(self.model.head, 'dist', None) is not None:
            self.model.head.dist.reset()     # refitted by validate(), after the epoch
        self.model.train()
        loader, sampler, cached = self._source('train')
        global_batches = [g for g in self._batches(epoch) if len(g) >= dist.world]
        batches = [shard(g, dist.rank, dist.world) for g in global_batches]
        sampler.set_epoch(epoch, batches)
        # a bar on a terminal only; in a log the epoch's own line (fit) is its progress line
        bar = Progress(len(batches), f'epoch {epoch}/{self.conf["train"]["epochs"]}',
                       every_pct=None, enabled=self.progress_bars)
        sums = {'loss': 0.0, 'pos_err': 0.0, 'rot_err': 0.0, 'n': 0}
        t0 = time.monotonic()
        for idx, x in zip(batches, loader):
            r = self._step(idx, x, cached)
            sums['loss'] += r['loss']
            for k in ('pos_err', 'rot_err', 'n'):
                sums[k] += r[k]
            bar.update(1, loss=f'{r["loss"]:.3f}', pos=f'{r["pos_err"] / r["n"]:.2f}m',
                       s=f'{r.get("s_pos", 0):.2f}/{r.get("s_rot", 0):.2f}')
        bar.close()
        loss, pos_err, rot_err, n = dist.all_sum(
            [sums['loss'], sums['pos_err'], sums['rot_err'], sums['n']])
        self.epoch = epoch
        return {'epoch': epoch, 'loss': loss / (dist.world * len(batches)),
                'train_pos_err': pos_err / n, 'train_rot_err': rot_err / n,
                'seconds': time.monotonic() - t0}

    @torch.no_grad()
    def validate(self) -> dict:
        """Median/mean errors on the validation frames (causal windows for temporal heads).

        Rank 0 validates (it alone selects and writes ``best.pt``); other ranks return {}.
        """
        if not self.val_frames or not self.dist.main:
            return {}
        self.model.eval()
        feats = self._pooled_features('val', len(self.val_frames))
        calibrate = self.conf['train']['calibrate_covariance']
        dist = getattr(self.model.head, 'dist', None)
        if calibrate and dist is not None:   # the learned branch alone first, then fit
            dist.set_memory(self._train_features())
            dist.set_coef(np.zeros((3, 2)))
        pos, quat, var, logvar = self._predict(feats)
        gt_pos, gt_quat = pose_targets(self.val_frames)
        pos_err, rot_err = pose_errors(pos, quat, gt_pos, gt_quat)
        med_pos, med_rot = float(np.median(pos_err)), float(np.median(rot_err))
        if calibrate:
            rot_vec = _world_rot_error(torch.from_numpy(quat).double(),
                                       torch.from_numpy(gt_quat).double()).numpy()
            err_n6 = np.concatenate([pos - gt_pos, rot_vec], axis=1)
            coef = None
            if dist is not None:
                err_raw = err_n6 / np.r_[[float(self.model.pos_scale)] * 3, [1.0] * 3]
                log_d = dist.log_distance(feats).reshape(-1).cpu().numpy()
                coef = fit_distance_variance(err_raw, logvar, log_d)
                if coef is not None:
                    dist.set_coef(coef)
                    var = self._predict(feats)[2]
            self.calibration = covariance_calibration(err_n6, var)
            self.calibration.update(epoch=self.epoch, distance_coef=(
                None if coef is None else np.asarray(coef).tolist()))
        return {'val_median_pos': med_pos, 'val_median_rot': med_rot,
                'val_mean_pos': float(np.mean(pos_err)), 'val_mean_rot': float(np.mean(rot_err)),
                'val_score': med_pos + med_rot / 10.0}

    @torch.no_grad()
    def _train_features(self) -> torch.Tensor:
        """Pooled features ``(N, C)`` of every training frame (eval mode): the distance memory."""
        return self._pooled_features('train', len(self.train_frames))

    @torch.no_grad()
    def _pooled_features(self, split: str, n: int) -> torch.Tensor:
        """Pooled features ``(n, C)`` of a split's frames, in order (the caller sets eval)."""
        loader, sampler, cached = self._source(split)
        idx = np.arange(n)
        sampler.set_epoch(0, [idx[s:s + 64] for s in range(0, len(idx), 64)])
        feats = []
        for x in loader:
            x = x.to(self.device, non_blocking=True)
            with torch.autocast('cuda', dtype=self.amp or torch.float16,
                                enabled=self.amp is not None):
                if not cached:
                    x = self.model.backbone.forward_frozen(x)
                feats.append(self.model.features_from_frozen(x).float())
        return torch.cat(feats)

    def _predict(self, feats: torch.Tensor) -> tuple:
        """Predict the validation frames: pos, quat, var (decoded) and the raw log-variances."""
        if self.model.temporal:
            return _causal_windows(self.model, feats, self.val_frames)
        out = self.model.head_forward(feats)
        return (out['pos'].cpu().numpy(), out['quat'].cpu().numpy(),
                out['var'].float().cpu().numpy(), out['logvar'].float().cpu().numpy())

    # ---- checkpoints ---------------------------------------------------------------------
    def _extra(self) -> dict:
        extra = {'train_conf': copy.deepcopy(self.conf), 'data': dict(self.conf['data']),
                 'epoch': self.epoch, 'history': copy.deepcopy(self.history),
                 'split': copy.deepcopy(self.split_info)}
        if self.calibration is not None:   # this epoch's, on the validation frames
            extra['covariance_calibration'] = copy.deepcopy(self.calibration)
        if self.scene_frame is not None:
            extra['scene_frame'] = dict(self.scene_frame)
        return extra

    def save(self) -> None:
        """``last.pt`` with optimizer state, this epoch's file, and the newest ``keep_epochs``.

        Only epoch files this run numbered are removed (``epoch_NNN.pt`` older than the
        newest ``train.keep_epochs``); ``last.pt`` and ``best.pt`` always stay.
        """
        if not self.dist.main:
            return
        extra = self._extra()
        state = self.model.checkpoint_dict(extra)
        state['resume'] = {'optimizer': self.optimizer.state_dict(),
                           'loss': self.loss.state_dict(), 'epoch': self.epoch,
                           'best_score': self.best_score}
        if self.scaler is not None:
            state['resume']['scaler'] = self.scaler.state_dict()
        write_epoch_files(self.model, self.out_dir, state, extra, self.epoch,
                          int(self.conf['train']['keep_epochs']), self.history)

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from ``last.pt``; returns False when there is nothing to resume."""
        path = Path(path) if path else self.out_dir / 'last.pt'
        if not path.is_file():
            return False
        ckpt = load_checkpoint_file(path)
        if 'resume' not in ckpt:
            raise ValueError(f'{path} has no optimizer state to resume from')
        saved = ckpt['extra']['train_conf']
        if model_conf(saved['model']) != self.conf['model'] \
                or saved['loss'] != self.conf['loss']:
            raise ValueError(f'{path} was trained with another model or loss config; '
                             'resume with the same config or use a new --out')
        self.model.load_state_dict(ckpt['state_dict'])
        if len(ckpt['resume']['optimizer']['param_groups']) != len(self.optimizer.param_groups):
            raise ValueError(f'{path} was trained with another train.trunk_lr_scale (its '
                             'optimizer has another number of parameter groups); resume with '
                             'the same config or use a new --out')
        self.optimizer.load_state_dict(ckpt['resume']['optimizer'])
        self.loss.load_state_dict(ckpt['resume']['loss'])
        if self.scaler is not None and 'scaler' in ckpt['resume']:
            self.scaler.load_state_dict(ckpt['resume']['scaler'])
        self.epoch = int(ckpt['resume']['epoch'])
        self.best_score = float(ckpt['resume']['best_score'])
        self.history = list(ckpt['extra']['history'])
        self.calibration = ckpt['extra'].get('covariance_calibration')
        self.log(f'resumed from {path} after epoch {self.epoch}')
        return True

    def fit(self, epochs: int | None = None) -> dict:
        """Train up to ``epochs`` (default: the config's), saving after every epoch."""
        epochs = int(epochs or self.conf['train']['epochs'])
        self._source('train')
        while self.epoch < epochs:
            record = self.train_epoch()
            record.update(self.validate())
            self.history.append(record)
            best = record.get('val_score', -record['epoch']) < self.best_score
            if best:
                self.best_score = record.get('val_score', -record['epoch'])
            self.save()
            if best and self.dist.main:
                self.model.save_checkpoint(self.out_dir / 'best.pt', self._extra())
            msg = (f'epoch {record["epoch"]:3d}  loss {record["loss"]:.4f}  train '
                   f'{record["train_pos_err"]:.2f} m {record["train_rot_err"]:.1f} deg')
            if 'val_median_pos' in record:
                msg += (f'  val median {record["val_median_pos"]:.2f} m '
                        f'{record["val_median_rot"]:.1f} deg{"  *best" if best else ""}')
            self.log(msg + f'  ({record["seconds"]:.1f} s)')
        self.dist.barrier()   # no rank leaves while rank 0 still writes
        return self.history[-1] if self.history else {}


def _causal_windows(model: PoseModel, feats: torch.Tensor, frames: Sequence):
    """Predict each frame from a window ending at it, batched as the engine does offline."""
    pos, quat = np.empty((len(frames), 3)), np.empty((len(frames), 4))
    var, logvar = np.empty((len(frames), 6)), np.empty((len(frames), 6))
    for idx, gather in causal_window_groups(frame_breaks(frames), model.window):
        out = model.head_forward(feats[torch.from_numpy(gather).to(feats.device)])
        pos[idx] = out['pos'][:, -1].cpu().numpy()
        quat[idx] = out['quat'][:, -1].cpu().numpy()
        var[idx] = out['var'][:, -1].float().cpu().numpy()
        logvar[idx] = out['logvar'][:, -1].float().cpu().numpy()
    return pos, quat, var, logvar
