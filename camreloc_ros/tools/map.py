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

"""``camreloc map --model CKPT (--data DIR | --bag BAG ...) --out MAP``: build a localization map.

The map holds SIFT keypoints with 3D points (depth where the dataset has it, else
triangulated from the training images with their known poses) and a global descriptor per
training image from the checkpoint's own trunk; ``camreloc evaluate --map`` and the live
node refine the network's poses with it (:mod:`camreloc_ros.core.localization.refiner`). The
training
frames of a dataset folder are the ones the checkpoint was trained on (its stored format and
block split), so no held-out frame ever enters the map. From bags (``--bag``, the training
bags) every image with ground truth enters it, validation blocks included: a bag has no test
split (test recordings are scored with ``bag-eval``); intrinsics come from the bag's
CameraInfo or ``--intrinsics``. torch is imported only when a map is built or used.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
from pathlib import Path
import time
from typing import Callable, Sequence
import zipfile

import numpy as np

from camreloc_ros import __version__
from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.data.datasets import Intrinsics
from camreloc_ros.core.data.formats import FORMATS, read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.evaluation.metrics import (atomic_write_text, format_table, pose_errors,
                                                  summarize, write_results)
from camreloc_ros.core.localization.map_file import (file_sha256, frames_fingerprint, load_map,
                                                     LocalizationMap, MAP_FORMAT, save_map)
from camreloc_ros.core.evaluation.baselines import comparison_rows, verdict
from camreloc_ros.core.localization.build import (build_map, default_conf as build_conf,
                                                  unusable_reason)
from camreloc_ros.core.localization.refiner import map_descriptor, Refiner
from camreloc_ros.tools.common import (add_bag_topic_arguments, bag_training_frames,
                                       checked_bag_topics, refuse_output_in_inputs,
                                       require_exists, require_file, tool_logging)
from camreloc_ros.tools.evaluate import split_params

logger = logging.getLogger('camreloc_ros')

default_conf = {
    'format': None,          # None = the checkpoint's training format
    'block': None,           # None = the checkpoint's split
    'every': None,
    'overwrite': False,      # replace an existing map file
    # --bag: topics as for train --bag / bag-eval
    'image_topic': None,
    'gt_topic': None,        # PoseStamped, PoseWithCovarianceStamped, Odometry topic
    'gt_tf': None,           # or 'PARENT:CHILD' from /tf and /tf_static
    'gt_tolerance': None,    # None = core.bags.DEFAULT_TOLERANCE
    'intrinsics': None,      # [fx, fy, cx, cy] of the bag images; None = their CameraInfo
    'cache_dir': None,       # extracted bag images: <cache_dir>/bag_frames (None = the cache)
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


def map_header_problem(path: Path) -> str | None:
    """Why ``path`` is not a camreloc map that ``--overwrite`` may replace (None if it is one).

    The rule is the map's format header (``meta.format``, what :func:`load_map` checks
    first): a map of another version or with damaged arrays still says it is a map and may
    be rebuilt in place, while a checkpoint, a text file or any other ``.npz`` never does
    and is left as it is. Only the header member is decoded, without pickle.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, 'files') or 'meta' not in z.files:
                return 'it has no camreloc map header'
            meta = json.loads(bytes(z['meta'].astype(np.uint8)).decode('utf-8'))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
            UnicodeDecodeError) as exc:
        return f'it is not a readable .npz map ({type(exc).__name__})'
    fmt = meta.get('format') if isinstance(meta, dict) else None
    if fmt != MAP_FORMAT:
        return f'its header says format {fmt!r}, not {MAP_FORMAT!r}'
    return None


def check_map_out(out: Path, overwrite: bool, inputs: list) -> None:
    """Refuse a map output that would destroy something, before any work.

    ``out`` is never an input nor inside one (the dataset folder, a bag, the checkpoint);
    an existing ``out`` is replaced only with ``overwrite`` and only when it is a map
    (:func:`map_header_problem`).
    """
    refuse_output_in_inputs('--out', out, inputs)
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise ValueError(f'map {out} already exists; pass --overwrite to replace it')
    if not out.is_file():
        raise ValueError(f'--out {out} exists and is not a file; expected a map .npz path')
    problem = map_header_problem(out)
    if problem:
        raise ValueError(f'--out {out} is not a camreloc map ({problem}); --overwrite only '
                         'replaces a map, so it is left as it is')


def parse_intrinsics(value) -> list[float] | None:
    """``'fx,fy,cx,cy'`` (or four numbers) -> four floats, focal lengths positive."""
    if value is None:
        return None
    parts = value.split(',') if isinstance(value, str) else list(value)
    try:
        vals = [float(v) for v in parts]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 4 or not all(np.isfinite(vals)) or vals[0] <= 0 or vals[1] <= 0:
        raise ValueError(f'--intrinsics must be fx,fy,cx,cy in pixels (focal lengths > 0), '
                         f'got {value!r}')
    return vals


def bag_frames(bags: Sequence, conf: dict, log) -> tuple[list, Intrinsics, list[dict]]:
    """Every image with ground truth of the bags, their camera, and what to record of each bag.

    Images and interpolated ground truth come from :func:`camreloc_ros.core.bags.extract_frames`
    (the cache ``train --bag`` uses). The camera is each bag's CameraInfo beside the image
    topic, or ``conf['intrinsics']`` (fx, fy, cx, cy of the images as stored); all bags must
    share it.
    """
    from camreloc_ros.core import bags as bag_io
    from camreloc_ros.core.data.transforms import read_rgb

    topic = conf['image_topic']
    tol = checked_bag_topics(topic, conf['gt_topic'], conf['gt_tf'], conf['gt_tolerance'])
    given = parse_intrinsics(conf['intrinsics'])
    cache = (Path(conf['cache_dir']) / 'bag_frames' if conf['cache_dir']
             else bag_io.default_extract_dir())
    paths = [require_exists(b, 'bag') for b in bags]
    cameras = []
    for path in paths:           # every camera checked before any image is extracted
        with bag_io.Bag(path) as bag:
            intr = bag_io.camera_intrinsics(bag, topic)
            info_topic = bag_io.camera_info_topic(bag, topic)
        if intr is None and given is None:
            raise ValueError(f'bag {path} has no sensor_msgs/CameraInfo with a calibration for '
                             f'{topic}; a map needs the camera intrinsics: pass --intrinsics '
                             'fx,fy,cx,cy (pixels, for the images as stored in the bag)')
        cameras.append((intr, info_topic))
    frames, records, intrinsics = [], [], None
    for path, (intr, info_topic) in zip(paths, cameras):
        got, info = bag_training_frames(path, topic, conf['gt_topic'], conf['gt_tf'], tol,
                                        cache, log)
        if not got:
            raise ValueError(f'bag {path}: no image of {topic} has ground truth within {tol:g} s')
        h, w = read_rgb(got[0].image_path).shape[:2]
        if given is not None:
            intr, source = Intrinsics(w, h, *given), '--intrinsics'
        else:
            source = f'CameraInfo {info_topic}'
            if intr.width <= 0 or intr.height <= 0:    # size left unset by the driver
                intr = dataclasses.replace(intr, width=w, height=h)
        if intrinsics is None:
            intrinsics = intr
        elif not np.allclose(intr.scaled(intrinsics.width, intrinsics.height).matrix(),
                             intrinsics.matrix(), rtol=1e-6, atol=1e-6):
            raise ValueError(f'bag {path} has other camera intrinsics ({source}: '
                             f'{intr}) than {paths[0]} ({intrinsics}); build one map per '
                             'camera')
        records.append({'path': str(path.resolve()),
                        'sha256': bag_io.bag_digest(path, cache / 'digests.json'),
                        'images': info['images'], 'frames': len(got),
                        'intrinsics': source})
        frames += got
    return frames, intrinsics, records


def main(conf: dict, paths: dict, log=None) -> Path:
    """Build the map of ``paths['data']`` or ``paths['bags']`` for ``paths['model']``.

    Written to ``paths['out']`` (a new ``.npz``; an existing one only with ``overwrite``).
    A dataset folder gives the checkpoint's training frames; bags give every image with
    ground truth (they are training-side recordings: test bags are scored with bag-eval).
    """
    if log is None:
        tool_logging()
        log = logger.info
    conf = merge_conf(default_conf, conf)
    ckpt = require_file(paths['model'], 'checkpoint')
    bags = list(paths.get('bags') or [])
    if paths.get('data') is not None and bags:
        raise ValueError('give either --data (a dataset folder) or --bag, not both')
    if paths.get('data') is None and not bags:
        raise ValueError('--data (a dataset folder) or --bag (one or more rosbags) is required')
    data = require_exists(paths['data'], 'dataset') if not bags else None
    out = Path(paths['out'])
    check_map_out(out, conf['overwrite'], [('checkpoint', ckpt), ('dataset', data)]
                  + [('bag', b) for b in bags])
    if bags:     # checked before the checkpoint is loaded
        parse_intrinsics(conf['intrinsics'])
    import torch
    from camreloc_ros.core.localization.retrieval import GlobalDescriptor
    from camreloc_ros.core.models.pose_model import PoseModel

    model = PoseModel.from_checkpoint(ckpt)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    if bags:
        frames, intrinsics, records = bag_frames(bags, conf, log)
        gt = (f'topic {conf["gt_topic"]}' if conf['gt_topic'] else f'tf {conf["gt_tf"]}')
        log(f'building a map of all {len(frames)} images with ground truth of '
            f'{len(bags)} bag(s) (training bags: no held-out split) for {ckpt}')
        dataset_meta = {'root': ', '.join(r['path'] for r in records), 'format': 'rosbag',
                        'bags': records, 'image_topic': conf['image_topic'],
                        'ground_truth': gt, 'intrinsics': dataclasses.asdict(intrinsics)}
        split_meta = {'name': 'train', 'all_frames': True}
    else:
        extra = getattr(model, 'checkpoint_extra', None) or {}
        dataset, frames, fmt, block, every = train_frames(data, conf['format'], extra, conf)
        intrinsics = dataset.intrinsics
        official = fmt in ('7scenes', 'cambridge')
        log(f'building a map of {len(frames)} training frames of {data} ({fmt}, '
            f'{"official split" if official else f"block={block}, every={every}"}) for {ckpt}')
        dataset_meta = {'root': str(Path(data).resolve()), 'format': fmt}
        split_meta = {'name': 'train', 'block': None if official else block,
                      'every': None if official else every}
    dataset_meta.update(frames=len(frames), fingerprint=frames_fingerprint(
        [f.name for f in frames], [f.pose_c2w for f in frames]))
    meta = {
        'checkpoint': {'path': str(ckpt.resolve()), 'sha256': file_sha256(ckpt)},
        'dataset': dataset_meta,
        'split': split_meta,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'package_version': __version__,
    }
    lmap = build_map(frames, intrinsics, GlobalDescriptor(model, conf['build']['gem_p']),
                     conf['build'], meta=meta, log=log)
    seconds = time.perf_counter() - t0
    lmap.meta['stats']['seconds_total'] = round(seconds, 2)
    lmap.meta['stats']['cpu_threads'] = threads
    ppi = lmap.meta['stats']['points_per_image']
    log(f'3D points per image: median {ppi["median"]:g}, min {ppi["min"]}, max {ppi["max"]}')
    reason = unusable_reason(lmap, conf['build']['min_points_per_image'])
    if reason:       # before save_map: an older map at --out stays as it is
        raise ValueError(f'map {out} not written: {reason}')
    save_map(lmap, out)
    size = out.stat().st_size
    net = len(lmap.descriptor_onnx or b'')     # fixed: the descriptor network
    log(f'map: {lmap.describe()}, {size / 1e6:.1f} MB ({net / 1e6:.1f} MB of it the '
        f'descriptor network), built in {seconds:.0f} s ({seconds / len(frames) * 1000:.0f} s '
        f'and {(size - net) / len(frames) * 1000 / 1e6:.0f} MB per 1000 images + the '
        f'network) -> {out}')
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


def evaluate_map(lmap: LocalizationMap, checkpoint, images: Sequence[Callable], names: list,
                 stamps: list, preds: list, gt_pos: np.ndarray, gt_quat: np.ndarray,
                 out: Path, title: str, conf: dict | None = None, info: dict | None = None,
                 log=None, K: np.ndarray | None = None) -> dict:
    """Refine every frame; write the comparison table and the refined row's result files.

    ``images`` are callables returning RGB frames, ``preds`` the network's
    :class:`~camreloc_ros.core.inference.engine.Prediction` per frame. Rows: network (APR),
    retrieval
    top-1 (the Sattler et al. bar), oracle nearest training pose (best possible retrieval)
    and refined (the network's pose where the refiner fell back). Files in ``out``:
    ``map_results.md``, ``map_summary.json``, ``refine_per_frame.txt`` and ``refined/``
    (the usual per-frame file, TUM files and plots of the refined row). Returns the summary.
    ``K``: the query camera's intrinsics (a bag's CameraInfo); default the map's camera.
    """
    log = log or logger.info
    refiner = Refiner(lmap, map_descriptor(lmap, checkpoint), conf)   # as the live node
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
    rows = comparison_rows(net_pos, net_quat, gt_pos, gt_quat, lmap.poses_c2w, top1)
    rows['refined (network where it falls back)'] = summarize(
        *pose_errors(ref_pos, ref_quat, gt_pos, gt_quat))
    if ok.any():
        rows['refined, refined frames only'] = summarize(
            *pose_errors(ref_pos[ok], ref_quat[ok], gt_pos[ok], gt_quat[ok]))
    beats, verdict_text = verdict(rows)
    keys = list(results[0].times)
    times = {k: float(np.median([r.times[k] for r in results])) for k in keys}
    shares = {'refined': float(ok.mean()), 'fallback': float(1.0 - ok.mean())}
    table = format_table(rows)
    timing = ', '.join(f'{k} {v * 1000:.0f} ms' for k, v in times.items())
    text = (f'# {title}: network vs retrieval vs refined\n\n{table}\n'
            f'Refined {100 * shares["refined"]:.1f} % of {n} frames, fell back to the network '
            f'on {100 * shares["fallback"]:.1f} %. {verdict_text}.\n\n'
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
        f'{100 * shares["fallback"]:.1f} %; {verdict_text}\nrefiner per frame (median): {timing}')
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc map``."""
    parser.add_argument('--model', required=True, type=Path, help='checkpoint (.pt)')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--data', type=Path, default=None,
                        help="dataset root folder: the map holds the checkpoint's training "
                        'frames (never a held-out one)')
    source.add_argument('--bag', action='append', metavar='BAG', type=Path, default=None,
                        help='training rosbag (repeatable): the map holds every image with '
                        'ground truth, validation blocks included (never give a test bag)')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='dataset format (default: the one stored in the checkpoint)')
    parser.add_argument('--out', required=True, type=Path, help='map file to write (.npz)')
    parser.add_argument('--points', choices=('auto', 'depth', 'triangulate'), default='auto',
                        help='3D points from depth images or by triangulation (auto: depth '
                        'when training frames have depth images; frames without one get no '
                        '3D points and are reported)')
    parser.add_argument('--block', type=int, default=None,
                        help='frames per held-out block (default: from the checkpoint)')
    parser.add_argument('--every', type=int, default=None,
                        help='every N-th block is held out (default: from the checkpoint)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing map (only a camreloc map, never an input)')
    bag = parser.add_argument_group('bags (--bag)')
    add_bag_topic_arguments(bag)
    bag.add_argument('--intrinsics', metavar='FX,FY,CX,CY', default=None,
                     help='camera intrinsics in pixels of the bag images as stored (default: '
                     "the bag's sensor_msgs/CameraInfo beside the image topic)")


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    conf = {'format': args.format, 'block': args.block, 'every': args.every,
            'overwrite': args.overwrite, 'build': {'points': args.points},
            'image_topic': args.image_topic, 'gt_topic': args.gt_topic, 'gt_tf': args.gt_tf,
            'gt_tolerance': args.gt_tolerance, 'intrinsics': args.intrinsics}
    return main(conf, {'model': args.model, 'data': args.data, 'bags': args.bag,
                       'out': args.out})
