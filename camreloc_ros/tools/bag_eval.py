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

"""``camreloc bag-eval BAG``: score a checkpoint on a rosbag's images against its ground truth.

Offline (``--model``), the images go through :class:`InferenceEngine.predict_frames` with
their header stamps, so temporal windows restart on time gaps exactly as in the live node,
and the files are those of ``evaluate`` (:func:`write_results`). Ground truth comes from a
pose topic or from TF and is interpolated at each image stamp within ``--gt-tolerance``;
images outside it are counted and reported. ``--write-bag`` writes the predictions next to
the ground truth for RViz / Foxglove; it never replaces anything but an older rosbag2 folder
that is not an input (``--overwrite``), checked before any work. A damaged bag (mcap CRC
mismatch, undecodable messages) is an error unless ``--allow-damaged``: then what is intact is
evaluated and what was skipped is reported. ``--live`` plays the images to a running localizer
node instead and scores the poses it publishes (with ``--model`` too: both, side by side).
About 490 lines: the three modes (offline, ``--live``, both) share one set of output
checks, one scoring and one report; the live mode's ROS side is
:mod:`camreloc_ros.ros.live_replay`.
"""

from __future__ import annotations

import argparse
from collections import deque
import json
import logging
from pathlib import Path
import threading
import time

import numpy as np

from camreloc_ros.core.bags import (Bag, BagMessage, BagScan, BagWriter, camera_matrix,
                                    decoded_images, DEFAULT_TOLERANCE, iter_images,
                                    rosbag_folder_problem, scan_bag, STORAGES)
from camreloc_ros.core.config import merge_conf, RUNTIMES
from camreloc_ros.core.inference.engine import InferenceEngine, Prediction
from camreloc_ros.core.evaluation.map_eval import evaluate_map, open_map
from camreloc_ros.core.evaluation.metrics import format_table, write_results
from camreloc_ros.core.io import atomic_write_text
from camreloc_ros.core.robot.messages import NS
from camreloc_ros.tools.common import default_out_dir, refuse_output_in_inputs, require_exists, \
    require_file, tool_logging

logger = logging.getLogger('camreloc_ros')

default_conf = {
    'image_topic': None,
    'gt_topic': None,          # PoseStamped, PoseWithCovarianceStamped, Odometry topic
    'gt_tf': None,             # or 'PARENT:CHILD' from /tf and /tf_static
    'gt_tolerance': DEFAULT_TOLERANCE,
    'allow_truncated': False,  # evaluate what a truncated bag holds instead of failing
    'allow_damaged': False,    # skip damaged chunks / undecodable messages, report them
    'batch_size': 16,
    'device': 'auto',
    'runtime': 'torch',        # torch | onnx (same poses to 1e-4; onnx is faster on CPU)
    'max_gap': 1.0,            # s between stamps that restart a temporal window (as the node)
    'title': None,
    'write_bag': None,         # output bag with predictions + ground truth
    'storage': 'mcap',
    'with_images': False,
    'overwrite': False,        # --write-bag may replace an older rosbag2 folder (not an input)
    'map_frame': 'map',
    'camera_frame': 'camreloc_camera',
    'path_length': 1000,
    'path_period': 1.0,         # seconds of bag time between /camreloc/path messages
    # --live: play the images to a running node and score what it publishes
    'live': False,
    'pose_topic': '/pose',
    'live_image_topic': None,  # where the node listens (default: the bag's image topic)
    'rate_factor': 1.0,
    'max_idle': 1.0,           # longer pauses of the bag are shortened to this (s)
    'lockstep': True,          # publish the next image once the previous pose came back
    'wait_node': 60.0,         # s to wait for the node's subscription
    'pose_timeout': 10.0,      # s to wait for each pose (lockstep) and for the last ones
    'reset_service': None,     # node's ~/reset before playing; None: next to pose_topic
    'refine': None,            # with paths['map']: Refiner settings (core.refine.default_conf)
}


# ----------------------------------------------------------------------------- scoring

def _score(out: Path, scan: BagScan, indices: list[int], pos: np.ndarray, quat: np.ndarray,
           var: np.ndarray | None, title: str) -> dict:
    """Write the evaluate files for the scored frames; return their summary."""
    idx = np.asarray(indices, int)
    info = {'damage': scan.damage.as_dict()} if scan.damage else None
    return write_results(out, scan.names(indices), [int(s) / NS for s in scan.stamps_ns[idx]],
                         pos, quat, scan.gt_pos[idx], scan.gt_quat[idx], var=var, title=title,
                         info=info).summary


def _report(scan: BagScan) -> None:
    """Log what the scan found: images, ground truth, and what will not be scored."""
    logger.info(f'{len(scan)} images on {scan.image_topic}, ground truth {scan.gt_source}')
    if scan.outside:
        first = np.flatnonzero(~scan.gt_ok)[:5]
        logger.info(f'{scan.outside} of {len(scan)} images have no ground truth within '
                    f'{scan.tolerance:g} s and are not scored (first at '
                    + ', '.join(f'{scan.stamps_ns[i] / NS:.3f}' for i in first) + ' s)')
    if scan.truncated is not None:
        logger.warning(f'{scan.truncated}; evaluated the {len(scan)} images read')
    if scan.damage:
        skipped = ', '.join(f'{t} {n}'
                            for t, n in sorted(scan.damage.skipped_messages().items()))
        logger.warning('\n  '.join([f'{scan.path} is damaged; skipped (--allow-damaged): '
                                    f'{skipped or "no messages"}'] + scan.damage.lines()))


def _info(scan: BagScan, **extra) -> dict:
    outside = np.flatnonzero(~scan.gt_ok)
    return dict({'bag': str(scan.path), 'image_topic': scan.image_topic,
                 'image_type': scan.image_type, 'ground_truth': scan.gt_source,
                 'ground_truth_samples': scan.gt_samples, 'tolerance_s': scan.tolerance,
                 'images': len(scan), 'outside_tolerance': int(outside.size),
                 'outside_tolerance_stamps': [int(scan.stamps_ns[i]) / NS for i in outside],
                 'messages_read': scan.messages_read,
                 'truncated': str(scan.truncated) if scan.truncated else None,
                 'damage': scan.damage.as_dict() if scan.damage else None}, **extra)


# ----------------------------------------------------------------------------- offline

def predict_bag(engine: InferenceEngine, bag: Bag, scan: BagScan, indices: list[int],
                batch_size: int = 16, allow_damaged: bool = False
                ) -> tuple[list[int], list[Prediction]]:
    """Predictions for the images at ``indices`` (bag order), streamed from the bag.

    Returns the positions predicted and their predictions. With ``allow_damaged`` an image
    that does not decode is left out (and added to ``scan.damage``), as the live node never
    sees it; a temporal model then runs again without it, so no window holds a stand-in.
    """
    bad: list[int] = []

    def skip(i: int, msg: BagMessage, reason: str) -> np.ndarray:
        bad.append(i)
        scan.damage.undecodable.append({'topic': msg.topic, 'log_ns': int(msg.log_ns),
                                        'index': i, 'reason': reason})
        return np.zeros((64, 64, 3), np.uint8)

    on_error = skip if allow_damaged and scan.damage is not None else None
    preds = engine.predict_frames(decoded_images(bag, scan, indices, on_error),
                                  stamps=[int(scan.stamps_ns[i]) / NS for i in indices],
                                  batch_size=batch_size)
    if not bad:
        return list(indices), preds
    dropped = set(bad)
    keep = [k for k, i in enumerate(indices) if i not in dropped]
    indices = [indices[k] for k in keep]
    if not engine.temporal:
        return indices, [preds[k] for k in keep]
    return indices, engine.predict_frames(decoded_images(bag, scan, indices),
                                          stamps=[int(scan.stamps_ns[i]) / NS for i in indices],
                                          batch_size=batch_size)


def write_prediction_bag(path: Path, bag: Bag, scan: BagScan, indices: list[int],
                         preds: list[Prediction], conf: dict) -> Path:
    """Predictions, ground truth (and images) as a bag, stamped and timed as the source.

    Topics: ``/camreloc/pose``, ``/camreloc/pose_with_covariance``, ``/camreloc/path``,
    ``/tf`` (map -> camreloc_camera, and map -> camreloc_ground_truth), and
    ``/camreloc/ground_truth``; with ``with_images`` the image topic as recorded.
    """
    by_index = dict(zip(indices, preds))
    frame, child = conf['map_frame'], conf['camera_frame']
    # a Path per frame would grow as frames x path_length: one every path_period s, as live
    path_poses: deque = deque(maxlen=max(int(conf['path_length']), 1))
    period_ns = int(float(conf['path_period']) * 1e9)
    next_path = None
    with BagWriter(path, conf['storage'], overwrite=conf['overwrite']) as out:
        m = out.msgs
        if conf['with_images']:
            images = iter_images(bag, scan)
        else:
            images = ((i, None) for i in range(len(scan)))
        for i, raw in images:
            stamp, log = int(scan.stamps_ns[i]), int(scan.log_ns[i])
            if raw is not None:
                out.write(raw.topic, raw.msgtype, log, raw.data)
            transforms = []
            pred = by_index.get(i)
            if pred is not None:
                pose = m.pose_stamped(stamp, frame, pred.position, pred.quaternion)
                out.write('/camreloc/pose', 'geometry_msgs/msg/PoseStamped', log, pose)
                out.write('/camreloc/pose_with_covariance',
                          'geometry_msgs/msg/PoseWithCovarianceStamped', log,
                          m.pose_with_covariance_stamped(stamp, frame, pred.position,
                                                         pred.quaternion, pred.covariance))
                transforms.append(m.transform_stamped(stamp, frame, child, pred.position,
                                                      pred.quaternion))
                if conf['path_length'] > 0:
                    path_poses.append(pose)
                    if next_path is None or log >= next_path or i == len(scan) - 1:
                        out.write('/camreloc/path', 'nav_msgs/msg/Path', log,
                                  m.path(stamp, frame, list(path_poses)))
                        next_path = log + period_ns
            if scan.gt_ok[i]:
                out.write('/camreloc/ground_truth', 'geometry_msgs/msg/PoseStamped', log,
                          m.pose_stamped(stamp, frame, scan.gt_pos[i], scan.gt_quat[i]))
                transforms.append(m.transform_stamped(stamp, frame, 'camreloc_ground_truth',
                                                      scan.gt_pos[i], scan.gt_quat[i]))
            if transforms:
                out.write('/tf', 'tf2_msgs/msg/TFMessage', log, m.tf(transforms))
    return path


def _refine_bag(conf: dict, bag: Bag, scan: BagScan, ckpt: Path, out: Path, lmap,
                scored: list[int], preds: list[Prediction], title: str) -> dict:
    """``--map``: the table of ``evaluate --map`` (:func:`map_eval.evaluate_map`)."""
    K = camera_matrix(bag, scan.image_topic)
    logger.info(f'refining {len(scored)} images against {lmap.path} ({lmap.describe()}); '
                + ("intrinsics from the bag's CameraInfo" if K is not None else
                   "no CameraInfo in the bag: the map's camera, scaled to the image size"))
    idx = np.asarray(scored, int)
    return evaluate_map(
        lmap, ckpt, decoded_images(bag, scan, scored), scan.names(scored),
        [int(s) / NS for s in scan.stamps_ns[idx]], preds, scan.gt_pos[idx], scan.gt_quat[idx],
        out, title, conf['refine'], {'bag': str(scan.path)}, log=logger.info, K=K)


def _offline(conf: dict, bag: Bag, scan: BagScan, ckpt: Path, out: Path,
             lmap=None) -> tuple[dict, dict]:
    engine = InferenceEngine.from_checkpoint(ckpt, runtime=conf['runtime'], device=conf['device'],
                                             max_gap=conf['max_gap'])
    scored = np.flatnonzero(scan.gt_ok).tolist()
    # Temporal models see every image, as the live node would; others only the scored ones
    # (unless the output bag wants every pose). Undecodable ones never reach a model.
    bad = scan.undecodable()
    scored = [i for i in scored if i not in bad]
    infer = [i for i in range(len(scan)) if i not in bad] \
        if engine.temporal or conf['write_bag'] else scored
    logger.info(f'evaluating {ckpt} ({engine.describe()}) on {len(scored)} images of {scan.path}')
    t0 = time.perf_counter()
    found = len(scan.damage.undecodable) if scan.damage else 0
    infer, preds = predict_bag(engine, bag, scan, infer, int(conf['batch_size']),
                               bool(conf['allow_damaged']))
    seconds = time.perf_counter() - t0
    if scan.damage and len(scan.damage.undecodable) > found:
        for u in scan.damage.undecodable[found:]:
            logger.warning(f'image #{u["index"]} of {scan.path} does not decode ({u["reason"]}): '
                           'skipped (--allow-damaged)')
        bad = scan.undecodable()
        scored = [i for i in scored if i not in bad]
        if not scored:
            raise ValueError(f'{scan.path}: no image with ground truth decodes; nothing to '
                             'evaluate')
    by_index = dict(zip(infer, preds))
    chosen = [by_index[i] for i in scored]
    pos = np.stack([p.position for p in chosen])
    quat = np.stack([p.quaternion for p in chosen])
    var = np.stack([np.diag(p.covariance) for p in chosen])
    title = conf['title'] or f'{ckpt.stem} {scan.path.name}'
    summary = _score(out, scan, scored, pos, quat, var, title)
    states = None
    if lmap is not None:
        states = _refine_bag(conf, bag, scan, ckpt, out, lmap, scored, chosen,
                             title)['localization']['table']
    rate = len(infer) / max(seconds, 1e-9)
    extra = {'mode': 'offline', 'checkpoint': str(ckpt), 'scored': len(scored),
             'inferred': len(infer), 'seconds': seconds, 'frames_per_s': rate}
    if lmap is None:   # a bag holds no training images to retrieve from
        extra['retrieval'] = ('retrieval baseline not shown: it needs the training images; '
                              'pass --map (camreloc map of the training data)')
        logger.info(extra['retrieval'])
    if conf['write_bag']:
        written = write_prediction_bag(Path(conf['write_bag']), bag, scan, infer, preds, conf)
        extra['write_bag'] = str(written)
        logger.info(f'predictions and ground truth written to {written}')
    atomic_write_text(out / 'bag_eval.json', json.dumps(_info(scan, **extra), indent=1) + '\n')
    logger.info(f'{len(infer)} images in {seconds:.1f} s ({rate:.1f} frames/s); results in {out}')
    return summary, {'title': title, 'positions': dict(zip(scored, pos)), 'states': states}


def _live(conf: dict, bag: Bag, scan: BagScan, out: Path,
          stop: threading.Event | None = None) -> tuple[dict, dict]:
    """``--live``: play the images to the running node and score the poses it publishes."""
    from camreloc_ros.ros.live_replay import play_to_node   # rclpy: only --live

    run = play_to_node(conf, bag, scan, stop)
    stamps = [int(s) for s in scan.stamps_ns]
    received = [i for i, s in enumerate(stamps) if s in run.poses]
    scored = [i for i in received if scan.gt_ok[i]]
    logger.info(f'live: published {run.published} images in {run.seconds:.1f} s, received '
                f'{len(received)} poses on {conf["pose_topic"]}')
    if not scored:
        raise RuntimeError(f'the localizer published no pose for any image with ground truth '
                           f'({len(received)} of {len(stamps)} images got a pose)')
    pos = np.stack([run.poses[stamps[i]][0] for i in scored])
    quat = np.stack([run.poses[stamps[i]][1] for i in scored])
    title = 'live'
    summary = _score(out, scan, scored, pos, quat, None, title)
    extra = {'mode': 'live', 'published': run.published, 'received': len(received),
             'not_received': len(stamps) - len(received), 'scored': len(scored),
             'seconds': run.seconds, 'pose_topic': conf['pose_topic'],
             'image_topic_out': run.image_topic, 'lockstep': bool(conf['lockstep']),
             'rate_factor': float(conf['rate_factor'])}
    atomic_write_text(out / 'bag_eval.json', json.dumps(_info(scan, **extra), indent=1) + '\n')
    if len(received) < len(stamps):
        logger.warning(f'{len(stamps) - len(received)} of {len(stamps)} images got no pose '
                       '(dropped by the latest-frame policy of the node, gated, or lost): '
                       'not scored')
    return summary, {'title': title, 'positions': dict(zip(scored, pos))}


# ----------------------------------------------------------------------------- main

def check_outputs(conf: dict, bag: Path, ckpt: Path | None, out: Path) -> Path | None:
    """Refuse outputs that would destroy something, before any work; return the output bag.

    ``--out`` must be a folder (or not exist). ``--write-bag OUT`` must not exist, or with
    ``--overwrite`` be an older rosbag2 folder; it may never be, hold or lie inside the
    evaluated bag, the checkpoint or the results folder.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f'--out {out} exists and is not a folder; give a folder for the '
                         'results (it is created if missing)')
    if not conf['write_bag']:
        return None
    target = Path(conf['write_bag'])
    refuse_output_in_inputs('--write-bag', target, [('evaluated bag', bag)],
                            held=[('evaluated bag', bag), ('checkpoint', ckpt),
                                  ('results folder (--out)', out)])
    if target.exists() or target.is_symlink():
        if not conf['overwrite']:
            raise ValueError(f'--write-bag {target} exists already; choose another path, or '
                             'pass --overwrite to replace an older rosbag2 folder')
        problem = rosbag_folder_problem(target)
        if problem:
            raise ValueError(f'--write-bag {target} {problem}; --overwrite only replaces a '
                             'rosbag2 folder (metadata.yaml and its storage files), so it is '
                             'left as it is')
    return target


def main(conf: dict, paths: dict, stop: threading.Event | None = None) -> Path:
    """Evaluate a bag; ``paths``: ``bag``, ``checkpoint`` (offline), optional ``out``.

    Returns the output folder. With ``live`` and a checkpoint, offline results go to
    ``out/offline`` and live ones to ``out/live``; ``stop`` aborts a live run.
    """
    conf = merge_conf(default_conf, conf)
    tool_logging()
    bag_path = require_exists(paths['bag'], 'bag')
    ckpt = paths.get('checkpoint')
    if ckpt is None and not conf['live']:
        raise ValueError('--model CKPT is required (or --live to score a running node)')
    if not conf['image_topic']:
        raise ValueError('--image-topic is required')
    if conf['storage'] not in STORAGES:
        raise ValueError(f'--storage must be one of {", ".join(STORAGES)}')
    ckpt = None if ckpt is None else require_file(ckpt, 'checkpoint')
    name = bag_path.name or bag_path.resolve().name
    if paths.get('out'):
        out = Path(paths['out'])
    elif ckpt is not None:
        out = default_out_dir(ckpt, f'bag_eval_{Path(name).stem}')
    else:
        out = bag_path.resolve().parent / f'{Path(name).stem}_live_eval'
    check_outputs(conf, bag_path, ckpt, out)
    lmap = None
    if paths.get('map'):   # checked before any work: a wrong map is an error, not a row
        if ckpt is None:
            raise ValueError('--map needs --model CKPT (the checkpoint the map was built for)')
        lmap = open_map(paths['map'], ckpt)
    rows, positions, states = {}, {}, None
    with Bag(bag_path) as bag:
        scan = scan_bag(bag, conf['image_topic'], conf['gt_topic'], conf['gt_tf'],
                        float(conf['gt_tolerance']), bool(conf['allow_truncated']),
                        allow_damaged=bool(conf['allow_damaged']))
        _report(scan)
        both = ckpt is not None and conf['live']
        if ckpt is not None:
            summary, res = _offline(conf, bag, scan, ckpt, out / 'offline' if both else out,
                                    lmap)
            rows['offline' if both else res['title']] = summary
            positions['offline'] = res['positions']
            states = res['states']
        if conf['live']:
            summary, res = _live(conf, bag, scan, out / 'live' if both else out, stop)
            rows['live'] = summary
            positions['live'] = res['positions']
    table = format_table(rows)
    print(table, end='')   # the product: always printed
    if states is not None:   # --map: the localization states of the node's state machine
        print(states, end='')
    if both:
        common = sorted(set(positions['offline']) & set(positions['live']))
        diff = max((float(np.linalg.norm(positions['offline'][i] - positions['live'][i]))
                    for i in common), default=float('nan'))
        note = (f'{len(common)} frames scored both offline and live; largest position '
                f'difference between them {diff:.2e} m')
        print(note)   # part of the table
        atomic_write_text(out / 'comparison.md', f'# {name}: offline vs live\n\n{table}\n'
                          f'{note}\n')
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc bag-eval``."""
    parser.add_argument('bag', type=Path, help='rosbag2 folder (or .mcap / .db3 file)')
    parser.add_argument('--model', type=Path, default=None,
                        help='checkpoint (.pt); required unless --live')
    parser.add_argument('--image-topic', required=True,
                        help='sensor_msgs/Image or CompressedImage topic')
    gt = parser.add_mutually_exclusive_group(required=True)
    gt.add_argument('--gt-topic', help='ground truth: PoseStamped, PoseWithCovarianceStamped '
                    'or Odometry topic')
    gt.add_argument('--gt-tf', metavar='PARENT:CHILD',
                    help='ground truth from /tf and /tf_static, e.g. map:camera')
    parser.add_argument('--gt-tolerance', type=float, default=DEFAULT_TOLERANCE,
                        help='seconds between an image stamp and the ground truth samples '
                        f'used for it (default {DEFAULT_TOLERANCE})')
    parser.add_argument('--out', type=Path, default=None, help='output folder')
    parser.add_argument('--batch-size', type=int, default=default_conf['batch_size'],
                        help='images per network call (default %(default)s)')
    parser.add_argument('--device', default=default_conf['device'],
                        help='auto, cpu or cuda[:N]')
    parser.add_argument('--runtime', default=default_conf['runtime'], choices=RUNTIMES,
                        help='inference runtime (onnx: exported once, cached)')
    parser.add_argument('--max-gap', type=float, default=default_conf['max_gap'],
                        help='seconds between image stamps that restart a temporal window')
    parser.add_argument('--title', default=None, help='name of the result row')
    parser.add_argument('--allow-truncated', action='store_true',
                        help='evaluate the readable part of a truncated bag instead of failing')
    parser.add_argument('--allow-damaged', action='store_true',
                        help='skip mcap chunks that fail their CRC and messages that do not '
                        'decode (reported) instead of failing')
    parser.add_argument('--write-bag', type=Path, default=None, metavar='OUT',
                        help='write predictions and ground truth into this bag (must not exist)')
    parser.add_argument('--overwrite', action='store_true',
                        help='let --write-bag replace an older rosbag2 folder (never an input)')
    parser.add_argument('--storage', choices=STORAGES, default=default_conf['storage'],
                        help='storage of --write-bag (default mcap)')
    parser.add_argument('--with-images', action='store_true',
                        help='copy the images into --write-bag too')
    parser.add_argument('--map', type=Path, default=None,
                        help='localization map (camreloc map) of --model: also score '
                        'retrieval, the oracle and PnP-refined poses, as evaluate --map')
    live = parser.add_argument_group('live (a localizer node must be running)')
    live.add_argument('--live', action='store_true',
                      help='play the images to the running node and score its poses')
    live.add_argument('--pose-topic', default=default_conf['pose_topic'],
                      help='PoseStamped topic of the node')
    live.add_argument('--live-image-topic', default=None,
                      help='topic the node subscribes to (default: --image-topic)')
    live.add_argument('--rate-factor', type=float, default=default_conf['rate_factor'],
                      help='playback speed (1 = recorded rate, 0 = as fast as possible)')
    live.add_argument('--max-idle', type=float, default=default_conf['max_idle'],
                      help='shorten pauses in the bag longer than this (s)')
    live.add_argument('--no-lockstep', action='store_true',
                      help='do not wait for each pose before publishing the next image')
    live.add_argument('--wait-node', type=float, default=default_conf['wait_node'],
                      help='seconds to wait for the node to appear')
    live.add_argument('--pose-timeout', type=float, default=default_conf['pose_timeout'],
                      help='seconds to wait for a pose')
    live.add_argument('--reset-service', default=None,
                      help='Trigger service that clears the temporal window of the node before '
                      'playing (default: <pose topic namespace>/camreloc/reset; "" = none)')


CONF_ARGS = ('image_topic', 'gt_topic', 'gt_tf', 'gt_tolerance', 'batch_size', 'device',
             'runtime', 'max_gap', 'title', 'allow_truncated', 'allow_damaged', 'write_bag',
             'overwrite', 'storage', 'with_images', 'live', 'pose_topic', 'live_image_topic',
             'rate_factor', 'max_idle', 'wait_node', 'pose_timeout', 'reset_service')


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments (options named as the conf keys)."""
    conf = {k: getattr(args, k) for k in CONF_ARGS}
    conf['lockstep'] = not args.no_lockstep
    return main(conf, {'bag': args.bag, 'checkpoint': args.model, 'out': args.out,
                       'map': args.map})
