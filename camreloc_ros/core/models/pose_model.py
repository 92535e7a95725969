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

"""The pose regression model (backbone + pooling + head) and its self-describing checkpoints.

Positions are regressed in normalised units ``(t - mean) / scale`` with the training split's
statistics kept as buffers, so a checkpoint carries everything needed to turn outputs back into
metres. A checkpoint never needs the backbone's pretrained weights file: the trained weights
are in it.
"""

import copy
import os
from pathlib import Path
import pickle
import warnings

import torch
from torch import nn
import torch.nn.functional as F

from camreloc_ros import __version__
from camreloc_ros.core.config import check_conf, ConfigError, merge_conf, Spec
from camreloc_ros.core.io import atomic_output, content_digest
from camreloc_ros.core.models.backbones import build_backbone, MIN_INPUT_SIZE, spec_for, SPECS
from camreloc_ros.core.models.errors import CheckpointError  # noqa: F401 - defined without torch
from camreloc_ros.core.models.heads import build_head, HEADS
from camreloc_ros.core.models.scr import HyperColumn, ScrHead, stage_indices

CHECKPOINT_FORMAT = 'camreloc_ros.checkpoint'
CHECKPOINT_VERSION = 1

HEAD_WIDTH = {'regressor': 2048, 'lstm': 2048, 'gru': 1024, 'scr': 128}
HEAD_NAMES = tuple(HEADS) + ('scr',)

default_conf = {
    'backbone': {
        'name': 'efficientnet_lite0',
        'pretrained': True,        # ImageNet weights; never a silent random init
        'weights': None,           # a weights file instead of the default location
        'trainable_stages': None,  # last N stages trainable; None = the thesis' table
        'input_size': None,        # square input side in pixels; None = the trunk's (224)
    },
    'head': {
        'name': 'regressor',       # regressor | lstm | gru | scr (scene coordinates + PnP)
        'width': None,             # None = 2048 (regressor, lstm), 1024 (gru), 128 (scr)
        'dropout': 0.0,
        'lstm_grid': [32, 64],
        'lstm_hidden': 256,
        'gru_hidden': 256,
        'window': 8,               # frames per temporal window (gru)
        # scr (docs/accuracy.md "Scene-coordinate head"): frozen trunk stages read, finest
        # first, '+'-separated (a hypercolumn); residual blocks of the per-pixel MLP; PnP.
        # Chosen on the walk's validation frames: blocks6 added converged faster and scored
        # better than blocks2+blocks4 (stride 8) and blocks4 alone (stride 16, 196 points)
        'scr_stages': 'blocks2+blocks4+blocks6',
        'scr_depth': 2,
        'scr_ransac_px': 10.0,     # inlier threshold (pixels of the original image)
        'scr_ransac_iterations': 1000,
        'scr_min_inliers': 10,     # fewer: no pose (a failed frame, huge covariance)
    },
}

# Type and range of every key above: overrides are checked before anything is built.
schema = {
    'backbone': {
        'name': Spec('str', choices=sorted(SPECS), label='backbone'),
        'pretrained': Spec('bool'),
        'weights': Spec('str', optional=True),
        'trainable_stages': Spec('int', lo=0, optional=True),
        'input_size': Spec('int', lo=MIN_INPUT_SIZE, optional=True),
    },
    'head': {
        'name': Spec('str', choices=HEAD_NAMES, label='head'),
        'width': Spec('int', lo=1, optional=True),
        'dropout': Spec('float', lo=0.0, hi=1.0, hi_open=True),
        'lstm_grid': Spec('int', lo=1, length=2),
        'lstm_hidden': Spec('int', lo=1),
        'gru_hidden': Spec('int', lo=1),
        'window': Spec('int', lo=1),
        'scr_stages': Spec('str'),
        'scr_depth': Spec('int', lo=0),
        'scr_ransac_px': Spec('float', lo=0.0, lo_open=True),
        'scr_ransac_iterations': Spec('int', lo=1),
        'scr_min_inliers': Spec('int', lo=4),
    },
}

NAMED_CONFIGS = {
    'posenet': {},
    'lstm': {'head': {'name': 'lstm'}},
    'gru': {'head': {'name': 'gru'}},
    'scr': {'head': {'name': 'scr'}},
}


def model_conf(name_or_conf: str | dict | None = None, overrides: dict | None = None) -> dict:
    """Resolve a named config (or a partial dict) plus overrides into a full model config."""
    if name_or_conf is None:
        base = {}
    elif isinstance(name_or_conf, str):
        if name_or_conf not in NAMED_CONFIGS:
            raise ConfigError(
                f'unknown model config {name_or_conf!r}; valid: {", ".join(NAMED_CONFIGS)}')
        base = NAMED_CONFIGS[name_or_conf]
    else:
        base = name_or_conf
    conf = merge_conf(merge_conf(default_conf, base), overrides)
    check_conf(conf, schema, 'model.')
    if conf['head']['width'] is None:
        conf['head']['width'] = HEAD_WIDTH.get(conf['head']['name'], 1024)
    return conf


class PoseModel(nn.Module):
    """CNN trunk -> global average pool -> pose head, with pose normalisation buffers."""

    def __init__(self, conf: dict):
        super().__init__()
        self.conf = model_conf(conf)
        bconf, hconf = self.conf['backbone'], self.conf['head']
        self.scr = hconf['name'] == 'scr'
        if self.scr and bconf['trainable_stages'] not in (None, 0):
            raise ConfigError('model.backbone.trainable_stages must be 0 (or null) with '
                              'model.head.name=scr: its trunk is frozen, its features cached')
        self.backbone = build_backbone(bconf['name'], bconf['pretrained'], bconf['weights'],
                                       0 if self.scr else bconf['trainable_stages'],
                                       bconf['input_size'])
        if self.scr:
            self.scr_indices = stage_indices(self.backbone.stage_names,
                                             hconf['scr_stages'].split('+'))
            with torch.no_grad():
                probe = torch.zeros(1, 3, self.backbone.spec.input_size,
                                    self.backbone.spec.input_size)
                shape = self.scr_trunk()(probe).shape
            self.scr_channels, self.scr_grid = int(shape[1]), tuple(shape[2:])
            self.head = ScrHead(self.scr_channels, hconf['width'], hconf['scr_depth'])
        else:
            self.head = build_head(hconf, self.backbone.out_channels)
        self.temporal = bool(getattr(self.head, 'temporal', False))
        self.register_buffer('pos_mean', torch.zeros(3))
        self.register_buffer('pos_scale', torch.ones(()))
        # what training stored with the weights (data split, history); {} for a new model
        self.checkpoint_extra: dict = {}

    @property
    def spec(self):
        """Input size (``backbone.input_size`` when set) and normalisation of the backbone."""
        return spec_for(self.conf['backbone']['name'], self.conf['backbone']['input_size'])

    @property
    def window(self) -> int:
        """Frames per window for temporal heads, 1 otherwise."""
        return int(self.conf['head']['window']) if self.temporal else 1

    def set_pose_stats(self, mean_3, scale: float) -> None:
        """Store the training split's position statistics (metres)."""
        self.pos_mean.copy_(torch.as_tensor(mean_3, dtype=torch.float32))
        self.pos_scale.fill_(float(scale))

    def normalize_pos(self, pos_m: torch.Tensor) -> torch.Tensor:
        """Metres -> the normalised units the head regresses."""
        return (pos_m - self.pos_mean) / self.pos_scale

    def pool_features(self, fmap_bchw: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` trainable-trunk output -> ``(B, C)`` pooled features."""
        return F.adaptive_avg_pool2d(fmap_bchw, 1).flatten(1)

    def features(self, images_b3hw: torch.Tensor) -> torch.Tensor:
        """Per-frame pooled features ``(B, C)``: the part that runs once per image."""
        return self.pool_features(self.backbone(images_b3hw))

    def features_from_frozen(self, frozen_bchw: torch.Tensor) -> torch.Tensor:
        """Per-frame pooled features from cached frozen-trunk output."""
        return self.pool_features(self.backbone.forward_trainable(frozen_bchw))

    def scr_trunk(self) -> HyperColumn:
        """Build the frozen stages the scr head reads (on demand: they share the trunk)."""
        return HyperColumn(self.backbone.frozen, self.scr_indices).eval()

    def scene_coordinates(self, images_b3hw: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` images -> ``(B, 3, h, w)`` world points (metres), scr head only."""
        return self.coordinates_from_features(self.scr_trunk()(images_b3hw))

    def coordinates_from_features(self, fmap_bchw: torch.Tensor) -> torch.Tensor:
        """Hypercolumn features (cached or fresh) -> ``(B, 3, h, w)`` world points (m)."""
        norm = self.head(fmap_bchw)
        return norm * self.pos_scale + self.pos_mean.view(1, 3, 1, 1)

    def decode(self, raw: dict) -> dict:
        """Head outputs -> metres, unit quaternion (w >= 0) and variances in m² / rad²."""
        quat = F.normalize(raw['quat_raw'], dim=-1)
        quat = torch.where(quat[..., 3:4] < 0, -quat, quat)
        pos = raw['pos_norm'] * self.pos_scale + self.pos_mean
        var = raw['logvar'].clamp(-20.0, 20.0).exp()
        scale = torch.cat([self.pos_scale.expand(3) ** 2, torch.ones_like(self.pos_mean)])
        return dict(raw, pos=pos, quat=quat, var=var * scale)

    def head_forward(self, feat: torch.Tensor) -> dict:
        """Pooled features ``(B, C)`` or ``(B, T, C)`` (temporal heads) -> decoded pose dict."""
        return self.decode(self.head(feat))

    def forward(self, images: torch.Tensor) -> dict:
        """``(B, 3, H, W)``, or ``(B, T, 3, H, W)`` for temporal heads -> decoded pose dict.

        Keys: ``pos`` (metres), ``quat`` (x, y, z, w), ``var`` (6 variances), and the raw
        ``pos_norm``, ``quat_raw``, ``logvar`` used by the losses.
        """
        if self.temporal:
            b, t = images.shape[:2]
            feat = self.features(images.flatten(0, 1)).view(b, t, -1)
        else:
            feat = self.features(images)
        return self.head_forward(feat)

    # ---- checkpoints -------------------------------------------------------------------
    def checkpoint_dict(self, extra: dict | None = None) -> dict:
        """Everything needed to rebuild this model without the backbone's weights file."""
        return {
            'format': CHECKPOINT_FORMAT,
            'format_version': CHECKPOINT_VERSION,
            'package_version': __version__,
            'model_conf': copy.deepcopy(self.conf),
            'pose_stats': {'mean': self.pos_mean.tolist(), 'scale': float(self.pos_scale)},
            'state_dict': {k: v.detach().cpu() for k, v in self.state_dict().items()},
            'extra': extra or {},
        }

    def save_checkpoint(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write atomically: a crash mid-write never leaves a truncated checkpoint."""
        return save_atomic(self.checkpoint_dict(extra), path)

    @classmethod
    def from_checkpoint_dict(cls, ckpt: dict, source: str = '<dict>') -> 'PoseModel':
        """Rebuild a model from a whole checkpoint dict (format and version checked).

        The dict is what :meth:`checkpoint_dict` returns: config, weights and ``extra``.
        """
        if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f'{source} is not a camreloc_ros checkpoint (no format={CHECKPOINT_FORMAT!r})')
        version = ckpt.get('format_version')
        if version != CHECKPOINT_VERSION:
            raise CheckpointError(
                f'{source} has checkpoint format version {version}; this camreloc_ros '
                f'({__version__}) reads version {CHECKPOINT_VERSION}')
        conf = copy.deepcopy(ckpt['model_conf'])
        conf['backbone']['pretrained'] = False   # the trained weights follow
        conf['backbone']['weights'] = None
        model = cls(conf)
        try:
            model.load_state_dict(ckpt['state_dict'])
        except RuntimeError as exc:
            raise CheckpointError(f'{source}: weights do not fit the model config: {exc}')
        model.conf['backbone']['pretrained'] = ckpt['model_conf']['backbone']['pretrained']
        model.checkpoint_extra = dict(ckpt.get('extra') or {})
        return model.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> 'PoseModel':
        """Load a checkpoint file written by :meth:`save_checkpoint`."""
        return cls.from_checkpoint_dict(load_checkpoint_file(path), str(path))


def _digested(ckpt: dict) -> dict:
    """Select the parts of a checkpoint its digest covers: weights and resumable state.

    The digest (:func:`~camreloc_ros.core.io.content_digest`, the one maps use too) is
    stored in each checkpoint and checked on load, so bytes damaged on disk are an error
    naming the file instead of NaN poses later.
    """
    return {k: ckpt[k] for k in ('state_dict', 'resume') if k in ckpt}


def load_checkpoint_file(path: str | Path) -> dict:
    """Read a checkpoint safely, with errors that name the file.

    Unpickling runs with ``weights_only=True``: a file carrying code (a pickle ``__reduce__``
    payload) is refused before anything in it runs. The stored weight digest and the
    finiteness of every weight are checked, so a damaged file never yields NaN poses.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f'checkpoint {path} is a directory; expected a checkpoint file '
                              '(.pt) written by camreloc train')
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(exc)
        if 'GLOBAL' not in reason:   # not a forbidden object: bytes that are no pickle
            raise CheckpointError(f'checkpoint {path} could not be read (damaged or not a '
                                  f'checkpoint): {reason}') from None
        raise CheckpointError(
            f'checkpoint {path} was refused: it holds Python objects that are not plain '
            'checkpoint data (tensors, numbers, strings, lists, dicts), and loading them could '
            f'run code; nothing in it was run. Only load files from sources you trust. '
            f'({reason})') from None
    except Exception as exc:  # noqa: BLE001 - every reader error means "not readable"
        raise CheckpointError(f'checkpoint {path} could not be read (damaged or not a '
                              f'checkpoint): {_first_line(exc)}') from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f'{path} is not a camreloc_ros checkpoint (no format={CHECKPOINT_FORMAT!r})')
    expected = ckpt.get('weights_sha256')
    if expected is None:   # written before digests existed: damage cannot be detected
        warnings.warn(f'checkpoint {path} has no weight digest (an older camreloc_ros wrote '
                      'it), so damage on disk cannot be detected', stacklevel=2)
    elif content_digest(_digested(ckpt)) != expected:
        raise CheckpointError(f'checkpoint {path} is damaged: its weights do not match the '
                              'digest stored when it was written')
    state = ckpt.get('state_dict')
    if not isinstance(state, dict):
        raise CheckpointError(f'checkpoint {path} has no state_dict')
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor)
           and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f'checkpoint {path} has non-finite weights (NaN or inf) in '
                              f'{", ".join(bad[:3])}{" ..." if len(bad) > 3 else ""}')
    return ckpt


def _unpickling_reason(exc: BaseException) -> str:
    """Pick the line of torch's weights-only error that says what was found."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        if 'GLOBAL' in line or line.startswith(('Unsupported', 'Trying')):
            return line
    return lines[-1] if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def save_atomic(obj: dict, path: str | Path) -> Path:
    """``torch.save`` with a weight digest, atomically; a full disk says so and names ``path``."""
    obj = dict(obj, weights_sha256=content_digest(_digested(obj)))
    with atomic_output(path) as tmp:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def build_model(conf: str | dict | None = None, **overrides) -> PoseModel:
    """Build a model from a named config (``posenet``, ``lstm``, ``gru``) or a dict."""
    return PoseModel(model_conf(conf, overrides or None))
