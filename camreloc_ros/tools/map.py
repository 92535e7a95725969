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
from typing import Sequence
import zipfile

import numpy as np

from camreloc_ros import __version__
from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.data.datasets import Intrinsics
from camreloc_ros.core.data.formats import FORMATS
from camreloc_ros.core.data.split import checkpoint_train_frames, scene_frame
from camreloc_ros.core.io import file_sha256
from camreloc_ros.core.localization.build import (build_map, default_conf as build_conf,
                                                  unusable_reason)
from camreloc_ros.core.localization.calibration import calibrate_map, CALIBRATION_DEFAULTS
from camreloc_ros.core.localization.extend import EXTEND_DEFAULTS
from camreloc_ros.core.localization.map_file import frames_fingerprint, MAP_FORMAT, save_map
from camreloc_ros.tools.common import (add_bag_topic_arguments, add_reader_overrides,
                                       bag_training_frames, checked_bag_topics, READER_CONF,
                                       parse_intrinsics, reader_overrides, refuse_output_in_inputs,
                                       require_exists, require_file, tool_logging)

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
    # covariance calibration of refined and tracked poses on held-out map images
    # (core.localization.calibration): enabled, images, window, track_frames, ...
    'calibration': CALIBRATION_DEFAULTS,
    'data': READER_CONF,     # reader options (data.drop_unmatched=true ...); None = checkpoint's
    # --extend MAP: a new recording registered into the map's frame (core.localization.extend)
    'extend': EXTEND_DEFAULTS,
    'session_every': None,   # --extend --bag: every N-th image or Ts seconds (None: every image)
}


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
    ``paths['reconstruction']`` (instead of ``data``): a ``camreloc reconstruct`` output, read
    as the posed dataset it is, its points taken from its COLMAP model's tracks.
    """
    if log is None:
        tool_logging()
        log = logger.info
    conf = merge_conf(default_conf, conf)
    if paths.get('extend') is not None:
        return extend(conf, paths, log)
    if paths.get('model') is None or paths.get('out') is None:
        raise ValueError('--model (the checkpoint) and --out (the map file to write) are '
                         'required to build a map (--extend MAP grows an existing one)')
    ckpt = require_file(paths['model'], 'checkpoint')
    bags = list(paths.get('bags') or [])
    observations = None
    if paths.get('reconstruction') is not None:
        if paths.get('data') is not None or bags:
            raise ValueError('give one of --data, --bag or --reconstruction')
        rec = require_exists(paths['reconstruction'], 'reconstruction')
        paths = dict(paths, data=rec)
        conf['format'] = conf['format'] or 'posed'
        from functools import partial
        from camreloc_ros.core.sfm.map_points import reconstruction_observations
        observations = partial(reconstruction_observations, Path(rec) / 'reconstruction')
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
        frame = scene_frame(frames, dataset_meta['root'])
    else:
        extra = getattr(model, 'checkpoint_extra', None) or {}
        dataset, frames, fmt, block, every = checkpoint_train_frames(data, conf['format'],
                                                                     extra, conf)
        intrinsics = dataset.intrinsics
        official = fmt in ('7scenes', 'cambridge')
        log(f'building a map of {len(frames)} training frames of {data} ({fmt}, '
            f'{"official split" if official else f"block={block}, every={every}"}) for {ckpt}')
        dataset_meta = {'root': str(Path(data).resolve()), 'format': fmt}
        split_meta = {'name': 'train', 'block': None if official else block,
                      'every': None if official else every}
        frame = scene_frame(dataset.frames, dataset_meta['root'])
    dataset_meta.update(frames=len(frames), fingerprint=frames_fingerprint(
        [f.name for f in frames], [f.pose_c2w for f in frames]))
    meta = {
        'checkpoint': {'path': str(ckpt.resolve()), 'sha256': file_sha256(ckpt)},
        'dataset': dataset_meta,
        'scene_frame': frame,    # what a network must be trained in to pair with the map
        'split': split_meta,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'package_version': __version__,
    }
    descriptor = GlobalDescriptor(model, conf['build']['gem_p'])
    lmap = build_map(frames, intrinsics, descriptor, conf['build'], meta=meta, log=log,
                     observations=observations)
    ppi = lmap.meta['stats']['points_per_image']
    log(f'3D points per image: median {ppi["median"]:g}, min {ppi["min"]}, max {ppi["max"]}')
    reason = unusable_reason(lmap, conf['build']['min_points_per_image'])
    if reason:       # before save_map: an older map at --out stays as it is
        raise ValueError(f'map {out} not written: {reason}')
    if conf['calibration']['enabled']:
        from camreloc_ros.core.data.transforms import read_rgb
        images = [lambda p=f.image_path: read_rgb(p) for f in frames]
        # the map's own ONNX descriptor, as the node and the refiner describe queries (and
        # no torch thread pool spinning beside other jobs: 76 s instead of ~20 at load 3)
        from camreloc_ros.core.localization.refiner import map_descriptor
        calib = calibrate_map(lmap, map_descriptor(lmap, ckpt, threads=1), images,
                              conf['calibration'], log)
        lmap.meta['covariance_calibration'] = calib
        lmap.meta['stats']['seconds_calibration'] = calib['seconds']
    else:
        log('covariance calibration off (calibration.enabled false): refined and tracked '
            'poses will publish the raw PnP covariance')
    seconds = time.perf_counter() - t0
    lmap.meta['stats']['seconds_total'] = round(seconds, 2)
    lmap.meta['stats']['cpu_threads'] = threads
    save_map(lmap, out)
    size = out.stat().st_size
    net = len(lmap.descriptor_onnx or b'')     # fixed: the descriptor network
    log(f'map: {lmap.describe()}, {size / 1e6:.1f} MB ({net / 1e6:.1f} MB of it the '
        f'descriptor network), built in {seconds:.0f} s ({seconds / len(frames) * 1000:.0f} s '
        f'and {(size - net) / len(frames) * 1000 / 1e6:.0f} MB per 1000 images + the '
        f'network) -> {out}')
    return out


def extend_out(base: Path, out: Path | None, overwrite: bool, inputs: list) -> Path:
    """Where ``--extend`` writes: ``--out`` (a new file), or ``base`` itself with ``--overwrite``.

    Refused before any work: no ``--out`` without ``--overwrite``, ``--out`` naming the map
    itself without it, and any output inside an input (:func:`check_map_out`).
    """
    if out is None:
        if not overwrite:
            raise ValueError(f'--extend {base}: give --out NEW.npz for the extended map, or '
                             f'--overwrite to replace {base} (atomically)')
        return base
    out = Path(out)
    if out.resolve() == base.resolve():
        if not overwrite:
            raise ValueError(f'--out {out} is the map being extended; pass --overwrite to '
                             'replace it, or give another --out')
        return base
    check_map_out(out, overwrite, inputs)
    return out


def session_images(folder: Path, conf: dict) -> tuple[list, str]:
    """List the images of a recording folder (or its ``images/``) in order, with their K.

    K: ``--intrinsics``, else a ``K.txt`` beside the images, else None (the map's camera,
    rescaled to the image size). A dataset's poses, if any, are not read.
    """
    import re
    from camreloc_ros.core.data.datasets import IMAGE_SUFFIXES
    from camreloc_ros.core.data.readers import image_size, read_camera_matrix
    from camreloc_ros.core.data.transforms import read_rgb
    from camreloc_ros.core.localization.extend import SessionImage

    root = folder / 'images' if (folder / 'images').is_dir() else folder
    files = sorted((p for p in root.iterdir() if p.is_file()
                    and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: [int(t) if t.isdigit() else t
                                  for t in re.split(r'(\d+)', p.name)])
    files = [p for p in files if '.depth.' not in p.name]
    if not files:
        raise ValueError(f'--data {folder}: no images ({"/".join(IMAGE_SUFFIXES)}) in {root}; '
                         'expected the images of the new recording')
    w, h = image_size(files[0])
    given = parse_intrinsics(conf['intrinsics'])
    k_file = next((d / 'K.txt' for d in (root, folder) if (d / 'K.txt').is_file()), None)
    if given is not None:
        K, source = Intrinsics(w, h, *given).matrix(), '--intrinsics'
    elif k_file is not None:
        K, source = read_camera_matrix(k_file, files[0]).matrix(), str(k_file)
    else:
        K, source = None, "the map's camera (no --intrinsics, no K.txt)"
    images = [SessionImage(p.name, (lambda p=p: read_rgb(p)), K) for p in files]
    return images, source


def bag_session(bag: Path, conf: dict, work: Path, log) -> tuple[list, str, dict]:
    """Write a bag's images (every ``session_every``) to ``work``: images, K, the record."""
    from camreloc_ros.core import bags as bag_io
    from camreloc_ros.core.bags.keyframes import bag_keyframes, parse_every

    topic = conf['image_topic']
    if not topic:
        raise ValueError('--extend --bag needs --image-topic (the Image or CompressedImage '
                         'topic)')
    every = parse_every(conf['session_every'])
    if every.unit == 'metres':
        raise ValueError(f'--session-every {conf["session_every"]}: a session has no odometry '
                         'here; give N (every N-th image) or SECONDSs')
    with bag_io.Bag(bag) as b:
        b.require(topic, bag_io.IMAGE_TYPES, '--image-topic')
        intr = bag_io.camera_intrinsics(b, topic)
        info_topic = bag_io.camera_info_topic(b, topic)
    keys = bag_keyframes(bag, topic, work, every, log=log)
    images, source = session_images(work, conf)
    if conf['intrinsics'] is None and intr is not None:
        from camreloc_ros.core.data.readers import image_size
        w, h = image_size(work / keys.files[0])
        if intr.width <= 0 or intr.height <= 0:
            intr = dataclasses.replace(intr, width=w, height=h)
        K = intr.scaled(w, h).matrix()
        for im in images:
            im.K = K
        source = f'CameraInfo {info_topic}'
    record = {'image_topic': topic, 'images_in_bag': keys.images, 'every': str(every)}
    return images, source, record


def extend(conf: dict, paths: dict, log) -> Path:
    """Register a new recording into the map ``paths['extend']`` and write the grown map.

    The recording is ``paths['data']`` (a folder of images; a dataset's poses are not read)
    or one bag (``paths['bags']``, ``image_topic``). No network is needed: the map's own
    descriptor network retrieves (a map without one needs ``paths['model']``, the ``.pt`` it
    was built with). Written to ``paths['out']``, or over the map with ``overwrite``
    (atomically); nothing is written when no image registered.
    """
    import tempfile
    from camreloc_ros.core.localization.extend import extend_map
    from camreloc_ros.core.localization.map_file import load_map
    from camreloc_ros.core.localization.refiner import map_descriptor

    base = require_file(paths['extend'], 'map')
    bags = list(paths.get('bags') or [])
    data = paths.get('data')
    if paths.get('reconstruction') is not None:
        raise ValueError('--extend takes the new recording as --data FOLDER or --bag BAG, not '
                         '--reconstruction')
    if (data is None) == (not bags) or len(bags) > 1:
        raise ValueError('--extend needs one new recording: --data FOLDER (its images) or one '
                         '--bag BAG (one session at a time)')
    source = Path(data if data is not None else bags[0])
    require_exists(source, 'recording')
    parse_intrinsics(conf['intrinsics'])
    out = extend_out(base, paths.get('out'), conf['overwrite'],
                     [('map', base), ('recording', source)]
                     + ([('checkpoint', paths['model'])] if paths.get('model') else []))
    lmap = load_map(base)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='camreloc-session-',
                                     dir=conf['cache_dir'] or None) as work:
        if data is not None:
            images, k_source = session_images(Path(data), conf)
            session = {'source': str(source.resolve()), 'kind': 'folder'}
        else:
            images, k_source, rec = bag_session(source, conf, Path(work), log)
            session = {'source': str(source.resolve()), 'kind': 'bag', **rec}
        session['intrinsics'] = k_source
        log(f'extending {base} ({lmap.describe()}) with {len(images)} images of {source} '
            f'(camera: {k_source})')
        descriptor = map_descriptor(lmap, paths.get('model'), threads=1)
        new, record = extend_map(lmap, images, descriptor, conf['extend'], session, log)
    n, k = record['images'], record['registered']
    reasons: dict = {}
    for item in record['left_out']:
        key = item['reason'].split(' (')[0]
        reasons.setdefault(key, []).append(item['name'])
    why = '; '.join(f'{len(v)} {key} (e.g. {", ".join(v[:3])})' for key, v in reasons.items())
    log(f'{k} of {n} images registered ({100 * k / max(n, 1):.0f} %)'
        + (f'; left out: {why}' if why else ''))
    if k == 0:
        raise ValueError(f'map {out} not written: none of the {n} images of {source} '
                         f'registered in {base} ({why}); record the new session over part of '
                         'the mapped scene, or build a new map')
    save_map(new, out)
    seconds = time.perf_counter() - t0
    log(f'map: {new.describe()} ({len(lmap)} + {k} images, {len(lmap.points)} + '
        f'{record["points_added"]} points), session {record["name"]} in {seconds:.0f} s '
        f'({seconds / max(n, 1):.2f} s per image) -> {out}')
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc map``."""
    parser.add_argument('--model', type=Path, default=None,
                        help='checkpoint (.pt); required to build a map, not to --extend one')
    parser.add_argument('--extend', type=Path, default=None, metavar='MAP',
                        help='register a new recording (--data FOLDER of images or one --bag) '
                        "into MAP's frame with the refiner and add its images and points; "
                        'writes --out, or MAP itself with --overwrite')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--data', type=Path, default=None,
                        help="dataset root folder: the map holds the checkpoint's training "
                        'frames (never a held-out one)')
    source.add_argument('--reconstruction', type=Path, default=None, metavar='DIR',
                        help='a `camreloc reconstruct` output: the map holds the '
                        "checkpoint's training frames of it, with the 3D points and tracks "
                        'of its structure-from-motion model (no depth, no re-triangulation)')
    source.add_argument('--bag', action='append', metavar='BAG', type=Path, default=None,
                        help='training rosbag (repeatable): the map holds every image with '
                        'ground truth, validation blocks included (never give a test bag)')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='dataset format (default: the one stored in the checkpoint)')
    parser.add_argument('--out', type=Path, default=None,
                        help='map file to write (.npz); with --extend optional when '
                        '--overwrite replaces MAP')
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
    parser.add_argument('--calibration-images', type=int, default=None, metavar='N',
                        help='held-out map images whose refined and tracked errors calibrate '
                        f'the covariance (default {CALIBRATION_DEFAULTS["images"]}; 0 or '
                        '--no-calibration: none)')
    parser.add_argument('--no-calibration', action='store_true',
                        help='skip the covariance calibration (the map then publishes the raw, '
                        'far too small PnP covariance)')
    add_reader_overrides(parser)
    bag = parser.add_argument_group('bags (--bag)')
    add_bag_topic_arguments(bag)
    bag.add_argument('--intrinsics', metavar='FX,FY,CX,CY', default=None,
                     help='camera intrinsics in pixels of the bag images as stored (default: '
                     "the bag's sensor_msgs/CameraInfo beside the image topic; --extend "
                     "--data: a K.txt beside the images, else the map's camera)")
    parser.add_argument('--rounds', type=int, default=None, metavar='N',
                        help='--extend: registration rounds; images left out are tried again '
                        'against the map grown by the round before (default '
                        f'{EXTEND_DEFAULTS["rounds"]}; 1: only against MAP as it is, no '
                        'chaining)')
    bag.add_argument('--session-every', metavar='N|Ts', default=default_conf['session_every'],
                     help='--extend --bag: register every N-th image, or one every T seconds '
                     '(default: every image)')


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    conf = {'format': args.format, 'block': args.block, 'every': args.every,
            'overwrite': args.overwrite, 'build': {'points': args.points},
            'image_topic': args.image_topic, 'gt_topic': args.gt_topic, 'gt_tf': args.gt_tf,
            'gt_tolerance': args.gt_tolerance, 'intrinsics': args.intrinsics,
            'data': reader_overrides(args.overrides), 'session_every': args.session_every,
            'calibration': {'enabled': not args.no_calibration}}
    if args.calibration_images is not None:
        conf['calibration']['images'] = args.calibration_images
    if args.rounds is not None:
        if args.rounds < 1:
            raise ValueError(f'--rounds must be at least 1, got {args.rounds}')
        conf['extend'] = {'rounds': args.rounds}
    return main(conf, {'model': args.model, 'data': args.data, 'bags': args.bag,
                       'reconstruction': args.reconstruction, 'out': args.out,
                       'extend': args.extend})
