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
seeded with ``(seed, epoch)``, and ``last.pt`` holds model, loss weights and optimizer state
after each finished epoch. A run killed at any point and resumed therefore produces the same
next epoch as an uninterrupted run.
"""

import copy
import json
import math
from pathlib import Path
import time
from typing import Callable, Sequence

import numpy as np
import torch

from camreloc_ros.core.config import check_conf, merge_conf, Spec
from camreloc_ros.core.data.datasets import FORMATS
from camreloc_ros.core.data.split import causal_window_starts, frame_breaks, temporal_windows
from camreloc_ros.core.data.transforms import Augmenter, Preprocessor, read_rgb
from camreloc_ros.core.evaluation import atomic_write_text, pose_errors
from camreloc_ros.core.features import frozen_features
from camreloc_ros.core.io import clean_stale_temps
from camreloc_ros.core.geometry import matrix_to_quat, torch_quat_multiply, \
    torch_quat_conjugate, torch_quat_log
from camreloc_ros.core.losses import build_loss, LOSS_DEFAULTS
from camreloc_ros.core.models.pose_model import default_conf as model_default_conf
from camreloc_ros.core.models.pose_model import load_checkpoint_file, model_conf, PoseModel, \
    save_atomic

default_conf = {
    'model': model_default_conf,
    'loss': {'name': 'qeh', 'p': 1, 's_pos_init': 0.0, 's_rot_init': -3.0, 'beta': 500.0},
    'train': {
        'epochs': 60,
        'batch_size': 32,
        'lr': 2e-4,
        'betas': [0.9, 0.999],
        'eps': 1e-8,
        'weight_decay': 0.0,     # L2, 0 as the thesis
        'seed': 0,
        'var_weight': 1.0,       # weight of the variance head's NLL (detached errors)
        'window_stride': None,   # temporal heads: 1/stride of all windows per epoch (None=T)
        'cache': True,           # frozen-trunk feature cache (impossible with augmentation)
        'cache_dir': None,
        'limit': None,           # use only the first N training frames (quick checks)
    },
    'data': {
        'format': 'posed',
        'block': 25,             # block split for single-sequence data
        'every': 4,
        'augment': {'brightness': 0.0, 'contrast': 0.0, 'crop_scale': 0.0},
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
    'train': {
        'epochs': Spec('int', lo=1),
        'batch_size': Spec('int', lo=1),
        'lr': Spec('float', lo=0.0, lo_open=True),
        'betas': Spec('float', lo=0.0, hi=1.0, hi_open=True, length=2),
        'eps': Spec('float', lo=0.0, lo_open=True),
        'weight_decay': Spec('float', lo=0.0),
        'seed': Spec('int', lo=0),
        'var_weight': Spec('float', lo=0.0),
        'window_stride': Spec('int', lo=1, optional=True),
        'cache': Spec('bool'),
        'cache_dir': Spec('str', optional=True),
        'limit': Spec('int', lo=1, optional=True),
    },
    'data': {
        'format': Spec('str', choices=FORMATS, optional=True),
        'block': Spec('int', lo=1),
        'every': Spec('int', lo=2),
        'augment': {
            'brightness': Spec('float', lo=0.0, hi=1.0),
            'contrast': Spec('float', lo=0.0, hi=1.0),
            'crop_scale': Spec('float', lo=0.0, hi=1.0, hi_open=True),
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


def variance_nll(out: dict, pos_gt_norm: torch.Tensor, quat_gt: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL of the *detached* errors under the predicted log-variances."""
    err = torch.cat([out['pos_norm'] - pos_gt_norm,
                     _world_rot_error(out['quat'], quat_gt)], dim=-1).detach()
    logvar = out['logvar'].clamp(-20.0, 20.0)
    return 0.5 * (err ** 2 * torch.exp(-logvar) + logvar).mean()


class _Source:
    """Training inputs for the trainable part: cached frozen features, or images."""

    def __init__(self, model: PoseModel, frames: Sequence, conf: dict, progress: Callable):
        self.model = model
        self.frames = list(frames)
        aug = conf['data']['augment']
        self.augmenter = Augmenter(aug['brightness'], aug['contrast'], aug['crop_scale'],
                                   seed=conf['train']['seed'])
        spec = model.spec
        self.pre = Preprocessor(spec.input_size, spec.mean, spec.std)
        self.cached = None
        if conf['train']['cache'] and not self.augmenter.active:
            self.cached = frozen_features(model, self.frames, conf['train']['cache_dir'],
                                          progress=progress)

    def features(self, idx: np.ndarray, train: bool) -> torch.Tensor:
        """Pooled per-frame features ``(len(idx), C)`` with gradients for the trainable part."""
        if self.cached is not None:
            frozen = torch.from_numpy(np.ascontiguousarray(self.cached[np.sort(idx)]))
            order = np.argsort(np.argsort(idx))
            return self.model.features_from_frozen(frozen[torch.from_numpy(order)])
        size = self.pre.size
        batch = np.empty((len(idx), 3, size, size), np.float32)
        for j, i in enumerate(idx):
            image = read_rgb(self.frames[i].image_path)
            if train and self.augmenter.active:
                image = self.augmenter.colour(image)
                box = self.augmenter.box(image.shape[0], image.shape[1], size)
                self.pre.normalize(self.pre.resized(image, box), out=batch[j])
            else:
                self.pre(image, out=batch[j])
        with torch.no_grad():
            frozen = self.model.backbone.forward_frozen(torch.from_numpy(batch))
        return self.model.features_from_frozen(frozen)


class Trainer:
    """Fits a :class:`PoseModel` on training frames and validates on held-out frames."""

    def __init__(self, conf: dict, train_frames: Sequence, val_frames: Sequence,
                 out_dir: str | Path, log: Callable[[str], None] = print,
                 progress_bars: bool = True):
        self.conf = train_conf(conf)
        tconf = self.conf['train']
        if tconf['limit']:
            train_frames = list(train_frames)[:int(tconf['limit'])]
        if not train_frames:
            raise ValueError('no training frames')
        self.train_frames, self.val_frames = list(train_frames), list(val_frames)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.out_dir, log)   # litter of a killed run, never a user's file
        self.log = log
        self.progress_bars = progress_bars
        torch.manual_seed(tconf['seed'])
        self.model = PoseModel(self.conf['model'])
        self.loss = _loss_from_conf(self.conf['loss'])
        pos, self.train_quat = pose_targets(self.train_frames)
        mean, scale = pose_stats(pos)
        self.model.set_pose_stats(mean, scale)
        self.train_pos = pos
        params = [p for p in self.model.parameters() if p.requires_grad]
        params += list(self.loss.parameters())
        self.optimizer = torch.optim.Adam(params, lr=tconf['lr'], betas=tuple(tconf['betas']),
                                          eps=tconf['eps'], weight_decay=tconf['weight_decay'],
                                          fused=True)
        self.epoch = 0
        self.history: list[dict] = []
        self.best_score = math.inf
        self._sources: dict = {}

    # ---- data ----------------------------------------------------------------------------
    def _source(self, which: str) -> _Source:
        if which not in self._sources:
            frames = self.train_frames if which == 'train' else self.val_frames
            self._sources[which] = _Source(self.model, frames, self.conf,
                                           self._cache_progress(which))
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
    def _step(self, idx_bt: np.ndarray) -> dict:
        src = self._source('train')
        b, t = idx_bt.shape
        feat = src.features(idx_bt.reshape(-1), train=True)
        if self.model.temporal:
            feat = feat.view(b, t, -1)
        out = self.model.head_forward(feat)
        flat = idx_bt.reshape(-1)
        pos_gt = self.model.normalize_pos(torch.from_numpy(self.train_pos[flat]).float())
        quat_gt = torch.from_numpy(self.train_quat[flat]).float()
        pos_pred = out['pos_norm'].reshape(-1, 3)
        quat_pred = out['quat_raw'].reshape(-1, 4)
        loss, parts = self.loss(pos_pred, quat_pred, pos_gt, quat_gt)
        flat_out = {k: v.reshape(-1, v.shape[-1]) for k, v in out.items()}
        nll = variance_nll(flat_out, pos_gt, quat_gt)
        total = loss + self.conf['train']['var_weight'] * nll
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        with torch.no_grad():
            pos_err, rot_err = pose_errors(out['pos'].reshape(-1, 3).numpy(),
                                           out['quat'].reshape(-1, 4).numpy(),
                                           self.train_pos[flat], self.train_quat[flat])
        return dict(parts, loss=loss.item(), nll=nll.item(), n=len(flat),
                    pos_err=float(np.sum(pos_err)), rot_err=float(np.sum(rot_err)))

    def train_epoch(self) -> dict:
        """Run one epoch; deterministic given (seed, epoch) and the state before it."""
        epoch = self.epoch + 1
        torch.manual_seed(self.conf['train']['seed'] * 100003 + epoch)
        self.model.train()
        batches = self._batches(epoch)
        bar = _bar(len(batches), f'epoch {epoch}/{self.conf["train"]["epochs"]}',
                   self.progress_bars)
        sums = {'loss': 0.0, 'pos_err': 0.0, 'rot_err': 0.0, 'n': 0, 'batches': 0}
        t0 = time.monotonic()
        for idx in batches:
            r = self._step(idx)
            sums['loss'] += r['loss']
            sums['batches'] += 1
            for k in ('pos_err', 'rot_err', 'n'):
                sums[k] += r[k]
            if bar is not None:
                bar.set_postfix(loss=f'{sums["loss"] / sums["batches"]:.3f}',
                                pos=f'{sums["pos_err"] / sums["n"]:.2f}m',
                                rot=f'{sums["rot_err"] / sums["n"]:.1f}deg',
                                s=f'{r.get("s_pos", 0):.2f}/{r.get("s_rot", 0):.2f}')
                bar.update(1)
        if bar is not None:
            bar.close()
        self.epoch = epoch
        return {'epoch': epoch, 'loss': sums['loss'] / sums['batches'],
                'train_pos_err': sums['pos_err'] / sums['n'],
                'train_rot_err': sums['rot_err'] / sums['n'],
                'seconds': time.monotonic() - t0}

    @torch.no_grad()
    def validate(self) -> dict:
        """Median/mean errors on the validation frames (causal windows for temporal heads)."""
        if not self.val_frames:
            return {}
        self.model.eval()
        src = self._source('val')
        idx = np.arange(len(self.val_frames))
        feats = torch.cat([src.features(idx[s:s + 64], train=False)
                           for s in range(0, len(idx), 64)])
        if self.model.temporal:
            pos, quat = _causal_windows(self.model, feats, self.val_frames)
        else:
            out = self.model.head_forward(feats)
            pos, quat = out['pos'].numpy(), out['quat'].numpy()
        gt_pos, gt_quat = pose_targets(self.val_frames)
        pos_err, rot_err = pose_errors(pos, quat, gt_pos, gt_quat)
        med_pos, med_rot = float(np.median(pos_err)), float(np.median(rot_err))
        return {'val_median_pos': med_pos, 'val_median_rot': med_rot,
                'val_mean_pos': float(np.mean(pos_err)), 'val_mean_rot': float(np.mean(rot_err)),
                'val_score': med_pos + med_rot / 10.0}

    # ---- checkpoints ---------------------------------------------------------------------
    def _extra(self) -> dict:
        return {'train_conf': copy.deepcopy(self.conf), 'data': dict(self.conf['data']),
                'epoch': self.epoch, 'history': copy.deepcopy(self.history)}

    def save(self) -> None:
        """Per-epoch checkpoint, ``last.pt`` with optimizer state, ``best.pt`` by validation."""
        extra = self._extra()
        state = self.model.checkpoint_dict(extra)
        state['resume'] = {'optimizer': self.optimizer.state_dict(),
                           'loss': self.loss.state_dict(), 'epoch': self.epoch,
                           'best_score': self.best_score}
        save_atomic(state, self.out_dir / 'last.pt')   # first: resuming needs only this
        self.model.save_checkpoint(self.out_dir / f'epoch_{self.epoch:03d}.pt', extra)
        atomic_write_text(self.out_dir / 'history.json', json.dumps(self.history, indent=1))

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from ``last.pt``; returns False when there is nothing to resume."""
        path = Path(path) if path else self.out_dir / 'last.pt'
        if not path.is_file():
            return False
        ckpt = load_checkpoint_file(path)
        if 'resume' not in ckpt:
            raise ValueError(f'{path} has no optimizer state to resume from')
        saved = ckpt['extra']['train_conf']
        if saved['model'] != self.conf['model'] or saved['loss'] != self.conf['loss']:
            raise ValueError(f'{path} was trained with another model or loss config; '
                             'resume with the same config or use a new --out')
        self.model.load_state_dict(ckpt['state_dict'])
        self.optimizer.load_state_dict(ckpt['resume']['optimizer'])
        self.loss.load_state_dict(ckpt['resume']['loss'])
        self.epoch = int(ckpt['resume']['epoch'])
        self.best_score = float(ckpt['resume']['best_score'])
        self.history = list(ckpt['extra']['history'])
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
            if best:
                self.model.save_checkpoint(self.out_dir / 'best.pt', self._extra())
            msg = (f'epoch {record["epoch"]:3d}  loss {record["loss"]:.4f}  train '
                   f'{record["train_pos_err"]:.2f} m {record["train_rot_err"]:.1f} deg')
            if 'val_median_pos' in record:
                msg += (f'  val median {record["val_median_pos"]:.2f} m '
                        f'{record["val_median_rot"]:.1f} deg{"  *best" if best else ""}')
            self.log(msg + f'  ({record["seconds"]:.1f} s)')
        return self.history[-1] if self.history else {}


def _causal_windows(model: PoseModel, feats: torch.Tensor, frames: Sequence):
    """Predict each frame from a window ending at it (as the live engine does)."""
    pos, quat = [], []
    for i, lo in enumerate(causal_window_starts(frame_breaks(frames), model.window)):
        out = model.head_forward(feats[lo:i + 1][None])
        pos.append(out['pos'][0, -1].numpy())
        quat.append(out['quat'][0, -1].numpy())
    return np.stack(pos), np.stack(quat)


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
