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

"""``camreloc map --model CKPT --data DIR --format F --out MAP``: build a localization map.

The map holds SIFT keypoints with 3D points (depth where the dataset has it, else
triangulated from the training images with their known poses) and a global descriptor per
training image from the checkpoint's own trunk; ``camreloc evaluate --map`` and the live
node refine the network's poses with it (:mod:`camreloc_ros.core.refine`). The training
frames are the ones the checkpoint was trained on (its stored format and block split), so
no held-out frame ever enters the map.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from pathlib import Path
import time
from typing import Callable, Sequence

import numpy as np
import torch

from camreloc_ros import __version__
from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.data.datasets import FORMATS, read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.evaluation import (atomic_write_text, format_table, pose_errors,
                                          summarize, write_results)
from camreloc_ros.core.geometry import matrix_to_quat
from camreloc_ros.core.mapping import (file_sha256, frames_fingerprint, GlobalDescriptor,
                                       load_map, LocalizationMap, save_map)
from camreloc_ros.core.mapping.build import build_map, default_conf as build_conf
from camreloc_ros.core.models.pose_model import PoseModel
from camreloc_ros.core.refine import pose_neighbours, Refiner
from camreloc_ros.tools.common import tool_logging
from camreloc_ros.tools.common import require_exists, require_file
from camreloc_ros.tools.evaluate import split_params

logger = logging.getLogger('camreloc_ros')

default_conf = {
    'format': None,          # None = the checkpoint's training format
    'block': None,           # None = the checkpoint's split
    'every': None,
    'overwrite': False,      # replace an existing map file
    'build': build_conf,
}


def train_frames(data, fmt: str | None, extra: dict, conf: dict) -> tuple:
    """Return the checkpoint's training frames: (dataset, frames, format, block, every)."""
    fmt = fmt or (extra.get('data') or {}).get('format')
    if fmt is None:
        raise ValueError(f'dataset format not given and not stored in the checkpoint; pass '
                         f'--format ({", ".join(FORMATS)})')
    block, every = split_params(conf, extra)
    dataset = read_dataset(data, fmt)
    frames = split_dataset(dataset, 'train', block=block, every=every).frames
    return dataset, frames, fmt, block, every


def main(conf: dict, paths: dict, log=None) -> Path:
    """Build the map of ``paths['data']`` for ``paths['model']`` into ``paths['out']``."""
    if log is None:
        tool_logging()
        log = logger.info
    conf = merge_conf(default_conf, conf)
    ckpt = require_file(paths['model'], 'checkpoint')
    data = require_exists(paths['data'], 'dataset')
    out = Path(paths['out'])
    if out.exists() and not conf['overwrite']:
        raise ValueError(f'map {out} already exists; pass --overwrite to replace it')
    if out.exists() and not out.is_file():
        raise ValueError(f'{out} exists and is not a file; expected a map .npz path')
    for inp, what in ((ckpt, 'checkpoint'), (data, 'dataset')):
        if out.resolve() == Path(inp).resolve():
            raise ValueError(f'--out {out} is the {what}; expected a new map file path')
    model = PoseModel.from_checkpoint(ckpt)
    extra = getattr(model, 'checkpoint_extra', None) or {}
    dataset, frames, fmt, block, every = train_frames(data, conf['format'], extra, conf)
    official = fmt in ('7scenes', 'cambridge')
    log(f'building a map of {len(frames)} training frames of {data} ({fmt}, '
        f'{"official split" if official else f"block={block}, every={every}"}) for {ckpt}')
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    meta = {
        'checkpoint': {'path': str(ckpt.resolve()), 'sha256': file_sha256(ckpt)},
        'dataset': {'root': str(Path(data).resolve()), 'format': fmt, 'frames': len(frames),
                    'fingerprint': frames_fingerprint([f.name for f in frames],
                                                      [f.pose_c2w for f in frames])},
        'split': {'name': 'train', 'block': None if official else block,
                  'every': None if official else every},
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'package_version': __version__,
    }
    lmap = build_map(frames, dataset.intrinsics, GlobalDescriptor(model, conf['build']['gem_p']),
                     conf['build'], meta=meta, log=log)
    seconds = time.perf_counter() - t0
    lmap.meta['stats']['seconds_total'] = round(seconds, 2)
    lmap.meta['stats']['cpu_threads'] = threads
    save_map(lmap, out)
    size = out.stat().st_size
    log(f'map: {lmap.describe()}, {size / 1e6:.1f} MB, built in {seconds:.0f} s '
        f'({seconds / len(frames) * 1000:.0f} s and {size / len(frames) * 1000 / 1e6:.0f} MB '
        f'per 1000 images) -> {out}')
    return out


def open_map(map_path, checkpoint, train_frames_: Sequence | None = None,
             data: str = '') -> LocalizationMap:
    """Load a map and check it belongs to ``checkpoint`` (and to these training frames)."""
    lmap = load_map(map_path)
    fp = None
    if train_frames_ is not None:
        fp = frames_fingerprint([f.name for f in train_frames_],
                                [f.pose_c2w for f in train_frames_])
    lmap.check_pairing(file_sha256(checkpoint), fp, str(checkpoint), str(data))
    return lmap


def _row(pos: np.ndarray, quat: np.ndarray, gt_pos: np.ndarray, gt_quat: np.ndarray) -> dict:
    return summarize(*pose_errors(pos, quat, gt_pos, gt_quat))


def evaluate_map(lmap: LocalizationMap, checkpoint, images: Sequence[Callable], names: list,
                 stamps: list, preds: list, gt_pos: np.ndarray, gt_quat: np.ndarray,
                 out: Path, title: str, conf: dict | None = None, info: dict | None = None,
                 log=None, K: np.ndarray | None = None) -> dict:
    """Refine every frame; write the comparison table and the refined row's result files.

    ``images`` are callables returning RGB frames, ``preds`` the network's
    :class:`~camreloc_ros.core.engine.Prediction` per frame. Rows: network (APR), retrieval
    top-1 (the Sattler et al. bar), oracle nearest training pose (best possible retrieval)
    and refined (the network's pose where the refiner fell back). Files in ``out``:
    ``map_results.md``, ``map_summary.json``, ``refine_per_frame.txt`` and ``refined/``
    (the usual per-frame file, TUM files and plots of the refined row). Returns the summary.
    ``K``: the query camera's intrinsics (a bag's CameraInfo); default the map's camera.
    """
    log = log or logger.info
    model = PoseModel.from_checkpoint(checkpoint)
    refiner = Refiner(lmap, GlobalDescriptor(model, (lmap.meta.get('descriptor') or {})
                                             .get('p', 3.0)), conf)
    n = len(names)
    net_pos = np.stack([p.position for p in preds])
    net_quat = np.stack([p.quaternion for p in preds])
    results = []
    t0 = time.perf_counter()
    for i, (load, p) in enumerate(zip(images, preds)):
        image = load() if callable(load) else load
        results.append(refiner.refine(image, p.position, p.quaternion, p.covariance, K=K))
        if (i + 1) % 25 == 0:
            log(f'  refined {i + 1}/{n} frames ({time.perf_counter() - t0:.0f} s)')
    ok = np.array([r.refined for r in results])
    ref_pos = np.stack([r.position for r in results])
    ref_quat = np.stack([r.quaternion for r in results])
    top1 = [r.retrieval[0] if r.retrieval else 0 for r in results]
    map_quat = matrix_to_quat(lmap.poses_c2w[:, :3, :3])
    oracle = [int(pose_neighbours(lmap.poses_c2w, p, q, 1)[0]) for p, q in zip(gt_pos, gt_quat)]
    rows = {
        'network (APR)': _row(net_pos, net_quat, gt_pos, gt_quat),
        'retrieval top-1': _row(lmap.poses_c2w[top1, :3, 3], map_quat[top1], gt_pos, gt_quat),
        'oracle: nearest training pose': _row(lmap.poses_c2w[oracle, :3, 3], map_quat[oracle],
                                              gt_pos, gt_quat),
        'refined (network where it falls back)': _row(ref_pos, ref_quat, gt_pos, gt_quat),
    }
    if ok.any():
        rows['refined, refined frames only'] = _row(ref_pos[ok], ref_quat[ok], gt_pos[ok],
                                                    gt_quat[ok])
    net, ret = rows['network (APR)'], rows['retrieval top-1']
    beats = (net['position_m']['median'] < ret['position_m']['median']
             and net['orientation_deg']['median'] < ret['orientation_deg']['median'])
    verdict = (f'network beats retrieval: {"yes" if beats else "no"} (median '
               f'{net["position_m"]["median"]:.3f} m / {net["orientation_deg"]["median"]:.2f} '
               f'deg vs retrieval top-1 {ret["position_m"]["median"]:.3f} m / '
               f'{ret["orientation_deg"]["median"]:.2f} deg)')
    keys = list(results[0].times)
    times = {k: float(np.median([r.times[k] for r in results])) for k in keys}
    shares = {'refined': float(ok.mean()), 'fallback': float(1.0 - ok.mean())}
    table = format_table(rows)
    timing = ', '.join(f'{k} {v * 1000:.0f} ms' for k, v in times.items())
    text = (f'# {title}: network vs retrieval vs refined\n\n{table}\n'
            f'Refined {100 * shares["refined"]:.1f} % of {n} frames, fell back to the network '
            f'on {100 * shares["fallback"]:.1f} %. {verdict}.\n\n'
            f'Refiner median time per frame: {timing}.\n\nMap: {lmap.path} '
            f'({lmap.describe()}).\n')
    out = Path(out)
    write_results(out / 'refined', names, stamps, ref_pos, ref_quat, gt_pos, gt_quat,
                  var=np.stack([np.diag(r.covariance) for r in results]),
                  title=f'{title} refined', info=dict(info or {}, map=str(lmap.path)))
    lines = ['# name refined reason inliers matches retrieval_top1 ' + ' '.join(
        f't_{k}_ms' for k in keys)]
    for name, r, t1 in zip(names, results, top1):
        lines.append(f'{name} {int(r.refined)} {r.reason.replace(" ", "_")} {r.inliers} '
                     f'{r.matches} {lmap.names[t1]} '
                     + ' '.join(f'{r.times[k] * 1000:.1f}' for k in keys))
    atomic_write_text(out / 'refine_per_frame.txt', '\n'.join(lines) + '\n')
    summary = {'title': title, 'rows': rows, 'shares': shares, 'network_beats_retrieval': beats,
               'median_seconds': times, 'map': str(lmap.path), 'map_meta': lmap.meta.get('stats'),
               'refiner': refiner.conf, 'info': info or {}}
    atomic_write_text(out / 'map_summary.json', json.dumps(summary, indent=2, default=str) + '\n')
    atomic_write_text(out / 'map_results.md', text)
    log(table + f'refined {100 * shares["refined"]:.1f} %, fallback '
        f'{100 * shares["fallback"]:.1f} %; {verdict}\nrefiner per frame (median): {timing}')
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc map``."""
    parser.add_argument('--model', required=True, type=Path, help='checkpoint (.pt)')
    parser.add_argument('--data', required=True, type=Path, help='dataset root folder')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='dataset format (default: the one stored in the checkpoint)')
    parser.add_argument('--out', required=True, type=Path, help='map file to write (.npz)')
    parser.add_argument('--points', choices=('auto', 'depth', 'triangulate'), default='auto',
                        help='3D points from depth images or by triangulation (auto: depth '
                        'when every training frame has a depth image)')
    parser.add_argument('--block', type=int, default=None,
                        help='frames per held-out block (default: from the checkpoint)')
    parser.add_argument('--every', type=int, default=None,
                        help='every N-th block is held out (default: from the checkpoint)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing map')


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    conf = {'format': args.format, 'block': args.block, 'every': args.every,
            'overwrite': args.overwrite, 'build': {'points': args.points}}
    return main(conf, {'model': args.model, 'data': args.data, 'out': args.out})
