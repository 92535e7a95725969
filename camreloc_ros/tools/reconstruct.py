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

"""``camreloc reconstruct (--images DIR | --bag BAG --image-topic T) --out DIR``: poses by SfM.

A recording without ground truth becomes a ``posed`` dataset (``images/``, ``poses.txt``,
``K.txt``) that ``camreloc train`` and ``camreloc map`` read like any other, beside its COLMAP
model (``reconstruction/``), a report (``report.md``, ``reconstruct.json``) and a top-down
plot (``trajectory.png``). The work is :mod:`camreloc_ros.core.sfm`: SIFT, sequential and
retrieval pairs, global (default) or incremental mapping, then the metric scale and the map
frame from the bag's odometry, depth images beside the images, or ``--distance``; without
one of them the command refuses before any work, unless ``--no-scale``. docs/mapping.md has
the measurements behind the defaults.

Input: a folder of images (``DIR/images/`` if there is one, else ``DIR``; a ``K.txt`` beside
them gives the camera; 7-Scenes ``frame-N.color.png`` files bring their ``frame-N.depth.png``)
or a bag, whose keyframes are picked by ``--every`` (N images, ``0.5s`` or, with odometry,
``0.25m``). The output is written whole into a temporary folder and renamed into place; an
existing output is replaced only with ``--overwrite`` and only when it is a reconstruction.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
from pathlib import Path
import re
import time

import numpy as np

from camreloc_ros import __version__
from camreloc_ros.core.config import check_conf, merge_conf
from camreloc_ros.core.data.datasets import IMAGE_SUFFIXES, Intrinsics
from camreloc_ros.core.io import atomic_folder
from camreloc_ros.core.sfm import pipeline
from camreloc_ros.tools.common import (parse_intrinsics, refuse_output_in_inputs, require_exists,
                                       tool_logging)

logger = logging.getLogger('camreloc_ros')

MARKER = 'reconstruct.json'
SCALES = ('auto', 'odometry', 'depth', 'distance', 'none')
default_conf = {
    'overwrite': False,          # replace an existing reconstruction (never anything else)
    'intrinsics': None,          # [fx, fy, cx, cy]; None: K.txt / CameraInfo, else refined
    'every': None,               # keyframes: N (images), '0.5s', '0.25m' (odometry); None = 1
    'max_turn_deg': 15.0,        # with --every Nm: also a keyframe after this much turn
    # --bag
    'image_topic': None,
    'camera_info_topic': None,   # None: the CameraInfo beside the image topic
    'odom_topic': None,          # PoseStamped, PoseWithCovarianceStamped or Odometry
    'odom_tf': None,             # or 'PARENT:CHILD' from /tf
    'odom_tolerance': None,      # seconds; None = core.bags.DEFAULT_TOLERANCE
    # metric scale and frame (core.sfm.scale)
    'scale': 'auto',             # auto: odometry, else --distance, else depth; or none
    'distance': None,            # [IMAGE_A, IMAGE_B, METRES] between two camera centres
    'depth_scale': 0.001,        # metres per depth unit (7-Scenes, Kinect: millimetres)
    'odometry_max_error': 0.3,   # metres: inlier distance of the robust Sim(3) fit
    'odometry_min_inliers': 0.5,  # fewer inliers than this fraction: refused
    'depth_max_spread': 0.25,    # sensor / model depth spread (median |r / s - 1|): refused
    'sfm': pipeline.default_conf,
}


def _natural_key(s: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r'(\d+)', s)]


@dataclasses.dataclass
class Recording:
    """The images to reconstruct and what came with them."""

    image_dir: Path
    names: list[str]
    intrinsics: Intrinsics | None
    intrinsics_source: str
    odometry: dict[str, np.ndarray] | None = None
    odometry_source: str | None = None
    depth: dict[str, Path] = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)


def reconstruction_problem(path: Path) -> str | None:
    """Say why ``path`` is not an output of this tool that ``--overwrite`` may replace."""
    if not path.is_dir():
        return 'it is not a folder'
    try:
        doc = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return f'it has no readable {MARKER}'
    if not isinstance(doc, dict) or doc.get('tool') != 'camreloc reconstruct':
        return f'its {MARKER} was not written by camreloc reconstruct'
    return None


def check_out(out: Path, overwrite: bool, inputs: list) -> None:
    """Refuse an output that is, holds or lies in an input, or would replace other data."""
    refuse_output_in_inputs('--out', out, inputs, held=inputs)
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise ValueError(f'--out {out} already exists; pass --overwrite to replace it')
    problem = reconstruction_problem(out)
    if problem:
        raise ValueError(f'--out {out} is not a reconstruction ({problem}); --overwrite only '
                         'replaces an output of camreloc reconstruct, so it is left as it is')


def _given(conf: dict, width: int, height: int) -> Intrinsics | None:
    vals = parse_intrinsics(conf['intrinsics'])
    return None if vals is None else Intrinsics(width, height, *vals)


def folder_recording(folder: Path, conf: dict, work: Path) -> Recording:
    """Collect the images of a folder (or its ``images/``) in natural order, K and depth.

    Names that sort differently as text and as numbers (``9.jpg``, ``10.jpg``) are linked
    into ``work`` zero-padded, because a ``posed`` dataset's order is its file names' order.
    """
    from camreloc_ros.core.bags.keyframes import parse_every
    from camreloc_ros.core.data.readers import image_size, read_camera_matrix

    every = parse_every(conf['every'])
    if every.unit != 'images':
        raise ValueError(f'--every {conf["every"]} needs stamps or odometry: a folder of images '
                         'takes --every N (every N-th image)')
    if not folder.is_dir():
        raise ValueError(f'--images {folder} is not a folder; expected a folder of images')
    root = folder / 'images' if (folder / 'images').is_dir() else folder
    files = sorted((p for p in root.iterdir() if p.is_file()
                    and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: _natural_key(p.name))
    colour = [p for p in files if '.color.' in p.name]
    files = colour or files
    if len(files) < 3:
        raise ValueError(f'{root} holds {len(files)} image(s) ({"/".join(IMAGE_SUFFIXES)}); '
                         'structure from motion needs at least 3')
    in_folder = len(files)
    files = files[::int(every.value)]
    names = [p.name for p in files]
    image_dir = root
    if sorted(names) != names:
        image_dir = work / 'renamed'
        image_dir.mkdir(parents=True)
        renamed = []
        for i, p in enumerate(files):
            renamed.append(f'{i:06d}_{p.name}')
            (image_dir / renamed[-1]).symlink_to(p.resolve())
        names = renamed
    width, height = image_size(files[0])
    intr, source = _given(conf, width, height), '--intrinsics'
    k_file = next((d / 'K.txt' for d in (root, folder) if (d / 'K.txt').is_file()), None)
    if intr is None and k_file is not None:
        intr, source = read_camera_matrix(k_file, files[0]), str(k_file)
    depth = {}
    for name, p in zip(names, files):
        d = p.with_name(p.name.split('.color.')[0] + '.depth.png')
        if '.color.' in p.name and d.is_file():
            depth[name] = d
    return Recording(image_dir, names, intr, source if intr else 'none: refined by SfM',
                     depth=depth, info={'input': str(folder.resolve()), 'kind': 'folder',
                                        'images_in_folder': in_folder,
                                        'every': str(every)})


def bag_recording(bag: Path, conf: dict, work: Path, log, clock: pipeline.Stopwatch
                  ) -> Recording:
    """Pick a bag's keyframes with their odometry, and its CameraInfo's camera."""
    from camreloc_ros.core import bags as bag_io
    from camreloc_ros.core.bags.keyframes import bag_keyframes, parse_every
    from camreloc_ros.core.data.readers import image_size

    topic = conf['image_topic']
    if not topic:
        raise ValueError('--bag needs --image-topic (the Image or CompressedImage topic)')
    if conf['odom_topic'] and conf['odom_tf']:
        raise ValueError('give the odometry as one of --odom-topic and --odom-tf, not both')
    every = parse_every(conf['every'])
    if every.unit == 'metres' and not (conf['odom_topic'] or conf['odom_tf']):
        raise ValueError(f'--every {conf["every"]} spaces keyframes by odometry: give '
                         '--odom-topic or --odom-tf, or space them by time (--every 0.5s)')
    tol = (bag_io.DEFAULT_TOLERANCE if conf['odom_tolerance'] is None
           else float(conf['odom_tolerance']))
    with clock.stage('keyframes'):
        with bag_io.Bag(bag) as b:
            b.require(topic, bag_io.IMAGE_TYPES, '--image-topic')
            info_intr = bag_io.camera_intrinsics(b, topic, conf['camera_info_topic'])
            info_topic = conf['camera_info_topic'] or bag_io.camera_info_topic(b, topic)
        keys = bag_keyframes(bag, topic, work / 'keyframes', every, conf['odom_topic'],
                             conf['odom_tf'], tol, float(conf['max_turn_deg']), log)
    width, height = image_size(keys.folder / keys.files[0])
    intr, source = _given(conf, width, height), '--intrinsics'
    if intr is None and info_intr is not None:
        intr, source = info_intr, f'CameraInfo {info_topic}'
        if intr.width <= 0 or intr.height <= 0:
            intr = dataclasses.replace(intr, width=width, height=height)
        elif (intr.width, intr.height) != (width, height):
            intr = intr.scaled(width, height)
    odometry = (None if keys.odometry is None
                else dict(zip(keys.files, keys.odometry)))
    log(f'{bag}: {len(keys)} keyframes ({every}) of {keys.images} images'
        + (f', odometry {keys.odometry_source}' if keys.odometry_source else '')
        + (f'; {keys.without_odometry} without odometry within {tol:g} s, not used'
           if keys.without_odometry else '') + f' ({clock.wall["keyframes"]:.1f} s)')
    return Recording(keys.folder, list(keys.files), intr,
                     source if intr else 'none: refined by SfM', odometry,
                     keys.odometry_source, {},
                     {'input': str(bag.resolve()), 'kind': 'bag', 'image_topic': topic,
                      'images_in_bag': keys.images, 'every': str(every),
                      'without_odometry': keys.without_odometry,
                      'positions': keys.positions, 'stamps_ns': keys.stamps_ns})


def scale_source(conf: dict, odometry: bool, depth: bool) -> str:
    """Choose the measurement that fixes the scale; refuse before any work when none can."""
    mode = conf['scale']
    if mode == 'auto':
        if odometry and conf['distance'] is not None:
            raise ValueError('both odometry and --distance give a scale; give one (or '
                             'scale=odometry / scale=distance)')
        mode = ('odometry' if odometry
                else 'distance' if conf['distance'] is not None
                else 'depth' if depth else None)
        if mode is None:
            raise ValueError(
                'no metric scale: structure from motion alone does not know metres. Give one '
                'of: odometry in the bag (--odom-topic TOPIC or --odom-tf PARENT:CHILD), depth '
                'images beside the images (frame-N.depth.png next to frame-N.color.png), or '
                '--distance IMAGE_A IMAGE_B METRES (the measured distance between the two '
                'camera positions); or pass --no-scale for poses in arbitrary units')
    need = {'odometry': odometry, 'depth': depth, 'distance': conf['distance'] is not None,
            'none': True}
    if not need[mode]:
        raise ValueError(f'scale={mode}, but the input has no {mode}')
    return mode


def _distance(conf: dict, names: list[str]) -> tuple[str, str, float]:
    """``--distance A B METRES`` with A and B resolved to input image names (stem or file)."""
    a, b, metres = conf['distance']
    try:
        metres = float(metres)
    except (TypeError, ValueError):
        metres = float('nan')
    if not metres > 0:
        raise ValueError(f'--distance needs a positive distance in metres, got {conf["distance"]}')
    out = []
    for given in (str(a), str(b)):
        hit = [n for n in names if given in (n, Path(n).stem, n.split('_', 1)[-1])]
        if not hit:
            raise ValueError(f'--distance image {given!r} is not among the keyframes (e.g. '
                             f'{", ".join(names[:3])})')
        out.append(hit[0])
    if out[0] == out[1]:
        raise ValueError('--distance needs two different images')
    return out[0], out[1], metres


def main(conf: dict, paths: dict, log=None) -> Path:
    """Reconstruct ``paths['images']`` (a folder) or ``paths['bag']`` into ``paths['out']``.

    Returns the output folder: a ``posed`` dataset plus ``reconstruction/``, ``report.md``,
    ``reconstruct.json`` and ``trajectory.png``.
    """
    if log is None:
        tool_logging()
        log = logger.info
    conf = merge_conf(default_conf, conf)
    check_conf(conf['sfm'], pipeline.schema, 'sfm.')
    if conf['scale'] not in SCALES:
        raise ValueError(f'scale must be one of {", ".join(SCALES)}, got {conf["scale"]!r}')
    folder, bag = paths.get('images'), paths.get('bag')
    if (folder is None) == (bag is None):
        raise ValueError('give the recording as one of --images DIR and --bag BAG')
    source = require_exists(folder if bag is None else bag, 'bag' if bag else 'image folder')
    out = Path(paths['out'])
    check_out(out, bool(conf['overwrite']), [('bag' if bag else 'image folder', source)])
    parse_intrinsics(conf['intrinsics'])
    if bag:      # a bag has no depth images: refuse before its keyframes are extracted
        scale_source(conf, bool(conf['odom_topic'] or conf['odom_tf']), False)
    t_start = time.perf_counter()
    verbose = logger.isEnabledFor(logging.DEBUG)
    with atomic_folder(out, overwrite=bool(conf['overwrite'])) as tmp:
        work = tmp.parent / 'work'
        work.mkdir()
        clock = pipeline.Stopwatch()
        rec = (bag_recording(source, conf, work, log, clock) if bag
               else folder_recording(source, conf, work))
        mode = scale_source(conf, rec.odometry is not None, bool(rec.depth))
        distance = _distance(conf, rec.names) if mode == 'distance' else None
        log(f'reconstructing {len(rec.names)} images of {source} (camera: '
            f'{rec.intrinsics_source}; scale from {mode}; {conf["sfm"]["mapper"]} mapper)')
        result = pipeline.run_sfm(rec.image_dir, rec.names, work / 'sfm', conf['sfm'],
                                  rec.intrinsics, log=log, verbose=verbose, clock=clock)
        model = result.reconstruction
        fit = _frame_fit(model, result.registered, mode, rec, conf, distance)
        fit.apply(model)
        tmp.mkdir()
        with clock.stage('write'):
            intr = _write(model, rec, result, tmp, work)
        doc = _report(tmp, source, rec, result, fit, intr, clock, conf)
    log(f'{len(result.registered)} of {len(result.names)} images posed in '
        f'{time.perf_counter() - t_start:.0f} s -> {out} (a posed dataset: camreloc train '
        f'--data {out} --format posed)')
    print(doc, end='')   # the product: always printed
    return out


def _frame_fit(model, registered: list[str], mode: str, rec: Recording, conf: dict,
               distance):
    from camreloc_ros.core.sfm import scale

    first = registered[0]
    if mode == 'odometry':
        return scale.fit_odometry(model, rec.odometry, float(conf['odometry_max_error']),
                                  int(conf['sfm']['seed']), float(conf['odometry_min_inliers']))
    if mode == 'depth':
        return scale.fit_depth(model, first, rec.depth, float(conf['depth_scale']),
                               max_spread=float(conf['depth_max_spread']))
    if mode == 'distance':
        return scale.fit_distance(model, first, *distance)
    return scale.first_camera_fit(model, first, 1.0, 'none', {})


def _write(model, rec: Recording, result, tmp: Path, work: Path) -> Intrinsics:
    from camreloc_ros.core.sfm.output import write_posed

    return write_posed(model, rec.image_dir, tmp, work / 'write', result.registered)


def _report(out: Path, source: Path, rec: Recording, result, fit, intr: Intrinsics,
            clock: pipeline.Stopwatch, conf: dict) -> str:
    """Write ``report.md``, ``reconstruct.json`` and ``trajectory.png``; return the report."""
    from camreloc_ros.core.sfm.output import c2w, plot_topdown, report_markdown

    model = result.reconstruction
    stats = pipeline.model_stats(model)
    by_name = {im.name: im for im in model.images.values()}
    positions = np.array([c2w(by_name[n])[:3, 3] for n in result.registered])
    odom = None
    if rec.odometry is not None:
        odom = np.array([rec.odometry[n][:3, 3] for n in rec.names if n in rec.odometry])
    plot_topdown(out / 'trajectory.png', positions, odom, title=f'{source.name}',
                 unit='model units' if fit.source == 'none' else 'm')
    missing = result.unregistered
    extra = [f'Input: {rec.info["input"]} ({rec.info["kind"]}, {len(rec.names)} images, '
             f'{rec.info["every"]}). Camera: {result.camera}; intrinsics from '
             f'{rec.intrinsics_source}; written K: fx {intr.fx:.2f}, fy {intr.fy:.2f}, '
             f'cx {intr.cx:.2f}, cy {intr.cy:.2f} ({intr.width}x{intr.height}).', '',
             f'Pairs: {result.pairs["sequential"]} sequential (overlap '
             f'{conf["sfm"]["overlap"]}), {result.pairs["retrieval"]} by retrieval (top '
             f'{conf["sfm"]["retrieval"]}), {result.pairs["verified"]} verified; '
             f'{conf["sfm"]["mapper"]} mapper.', '']
    if missing:
        extra += [f'Not registered: {len(missing)} images: {", ".join(missing[:20])}'
                  + (', ...' if len(missing) > 20 else '') + ' (left out of the dataset).',
                  '']
        logger.warning(f'{len(missing)} of {len(result.names)} images not registered (listed '
                       'in report.md); the dataset holds the registered ones only')
    if result.other_models:
        extra += [f'Smaller models left out: {result.other_models} images.', '']
    text = report_markdown(f'Reconstruction of {source.name}', stats, clock.wall, clock.cpu,
                           len(result.names), fit.describe(), fit.frame, extra)
    (out / 'report.md').write_text(text)
    doc = {'tool': 'camreloc reconstruct', 'package_version': __version__,
           'created': datetime.datetime.now(datetime.timezone.utc).isoformat(
               timespec='seconds'),
           'input': rec.info, 'camera': {'model': result.camera,
                                         'intrinsics_source': rec.intrinsics_source,
                                         'written': dataclasses.asdict(intr)},
           'stats': stats, 'seconds': {k: round(v, 2) for k, v in clock.wall.items()},
           'cpu_seconds': {k: round(v, 2) for k, v in clock.cpu.items()},
           'pairs': result.pairs, 'registered': result.registered, 'unregistered': missing,
           'other_models': result.other_models,
           'scale': {'source': fit.source, 'scale': fit.scale, 'residual': fit.residual,
                     'frame': fit.frame, 'map_from_model': fit.matrix().tolist()},
           'odometry': rec.odometry_source, 'conf': conf}
    (out / MARKER).write_text(json.dumps(doc, indent=1, default=str) + '\n')
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc reconstruct``."""
    d, sfm = default_conf, pipeline.default_conf
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', type=Path, default=None, metavar='DIR',
                        help='folder of images (or a folder with images/ and K.txt), in '
                        'recording order by name')
    source.add_argument('--bag', type=Path, default=None, help='rosbag2 recording')
    parser.add_argument('--out', required=True, type=Path,
                        help='output folder: a posed dataset + reconstruction/ + report')
    parser.add_argument('--every', default=None,
                        help='keyframes: N (every N-th image), SECONDSs (e.g. 0.5s, bags) or '
                        'METRESm (e.g. 0.25m, bags with odometry); default every image')
    parser.add_argument('--intrinsics', metavar='FX,FY,CX,CY', default=None,
                        help='camera intrinsics in pixels, held fixed (default: K.txt of the '
                        "folder or the bag's CameraInfo; none: refined by SfM)")
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing output (only a reconstruction)')
    bag = parser.add_argument_group('bags (--bag)')
    bag.add_argument('--image-topic', help='Image or CompressedImage topic')
    bag.add_argument('--camera-info-topic', default=None,
                     help='CameraInfo topic (default: the one beside the image topic)')
    bag.add_argument('--odom-topic', default=None,
                     help='odometry: PoseStamped, PoseWithCovarianceStamped or Odometry topic '
                     '(gives the scale and the map frame)')
    bag.add_argument('--odom-tf', metavar='PARENT:CHILD', default=None,
                     help='odometry from /tf: the camera (or a frame rigid with it) in its '
                     'odometry frame')
    bag.add_argument('--odom-tolerance', type=float, default=None,
                     help='seconds between an image and its odometry (default 0.05)')
    scale = parser.add_argument_group('metric scale (one is required unless --no-scale)')
    scale.add_argument('--distance', nargs=3, metavar=('IMAGE_A', 'IMAGE_B', 'METRES'),
                       default=None,
                       help='measured distance between the camera positions of two images')
    scale.add_argument('--depth-scale', type=float, default=d['depth_scale'],
                       help='metres per unit of the depth images (default %(default)g)')
    scale.add_argument('--no-scale', action='store_true',
                       help='no metric scale: poses in arbitrary units (not for a localizer)')
    sfm_group = parser.add_argument_group('structure from motion')
    sfm_group.add_argument('--mapper', choices=pipeline.MAPPERS, default=sfm['mapper'],
                           help='global (GLOMAP, default) or incremental (COLMAP) mapping')
    sfm_group.add_argument('--overlap', type=int, default=sfm['overlap'],
                           help='sequential pairs: each image with the next N (default '
                           '%(default)s)')
    sfm_group.add_argument('--retrieval', type=int, default=sfm['retrieval'],
                           help='retrieval pairs: the N most similar images beyond the overlap '
                           '(default %(default)s; 0: none)')
    sfm_group.add_argument('--max-features', type=int, default=sfm['max_features'],
                           help='SIFT keypoints per image (default %(default)s)')


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    conf = {'overwrite': args.overwrite, 'intrinsics': args.intrinsics, 'every': args.every,
            'image_topic': args.image_topic, 'camera_info_topic': args.camera_info_topic,
            'odom_topic': args.odom_topic, 'odom_tf': args.odom_tf,
            'odom_tolerance': args.odom_tolerance, 'distance': args.distance,
            'depth_scale': args.depth_scale, 'scale': 'none' if args.no_scale else 'auto',
            'sfm': {'mapper': args.mapper, 'overlap': args.overlap,
                    'retrieval': args.retrieval, 'max_features': args.max_features}}
    return main(conf, {'images': args.images, 'bag': args.bag, 'out': args.out})
