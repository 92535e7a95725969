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

"""The live figure, measured: held-out frames into the localizer node, every pose scored.

Offline numbers (``camreloc evaluate --map``) refine every frame with all the time it needs;
a robot gets what the node publishes while frames keep coming at the camera's rate, the
refiner keeps up with only some of them and the rest are corrected by motion. This plays the
held-out frames of a dataset into the node **as a separate process** (``camreloc node``, as on
a robot) at 30 Hz as raw ``sensor_msgs/Image`` (rgb8, best effort, depth 1: a camera driver),
each stamped at its capture time (``START + frame index / 30 s``; held-out blocks keep their
gaps), and scores every published pose **by its stamp** against ground truth:

* ``hololens``: the shared HoloLens walk, the demo's split (``SPLIT_DEFAULTS`` block/every),
  the demo's checkpoint and map (trained and built with the demo's own code into
  ``--work``, reused when present; or ``--model`` / ``--map``),
* ``7scenes``: the 12-frame 7-Scenes sample, a map from the depth of its train sequences, the
  test sequences played (6 frames, 0.2 s: tiny, a smoke check, the table says so).

Each dataset runs ``--odometry none`` (no TF) and ``tf``: ``odom -> <camera frame>`` on
``/tf`` from ground truth plus a seeded drift (2 % of the distance travelled in a fixed
direction and a yaw drift about the up axis of 0.1-0.3 deg/m), stamped like the images, so
the node's localizer can dead-reckon (and carry late refinements forward) with odometry.

Per run (a column of the markdown table): frames sent / received by the node, answered (a
pose on ``pose_with_covariance`` or ``~/network_pose`` for that stamp), availability (share of
frames whose ``~/localization_status`` state is ``localized``), published median errors, share
within 5 cm / 5 deg and over 25 cm, false localizations (a ``localized`` pose > 0.25 m or
> 10 deg off), the share of position errors inside the claimed 95 % ellipsoid, tracking and
refinement rates, and the offline ``evaluate --map`` refined median on the same frames.
Topics the running node does not have yet (``~/network_pose``, ``~/localized``,
``~/localization_status``) print as ``n/a``.

On a busy 2-core CPU the refiner manages about one refinement a second, and a held-out block
lasts 25 frames (0.83 s of stamps, then a 2.5 s gap that drops the tracks): ``--rate 5``
(stamps unchanged, the node gets 6x the time per frame) or ``--repeat N`` (the frames N times
in a row) show what the node does with more time; the table's header says which was used.

    PYTHONPATH=. .venv/bin/python benchmarks/live_map.py [--dataset hololens,7scenes]
        [--odometry none,tf] [--frames N | --seconds S] [--rate HZ] [--repeat N]
        [--work DIR] [--out FILE.md] [--model CKPT --map MAP]
"""

from __future__ import annotations

import argparse
from collections import Counter
import contextlib
import dataclasses
import io
import json
import logging
import os
from pathlib import Path
import subprocess
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np

from camreloc_ros.core.robot.odometry import drifted_odometry

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'
DEFAULT_WORK = ROOT / '.venv' / 'bench_live_map'
DATASETS = ('hololens', '7scenes')
ODOMETRY = ('none', 'tf')
RATE_HZ = 30.0
CAPTURE_HZ = 30.0             # stamps: the frames' capture times, whatever --rate sends at
START_NS = 1_800_000_000 * 1_000_000_000   # stamp of frame index 0 (a fixed start)
SEQUENCE_GAP_FRAMES = 60      # 7-Scenes: 2 s of stamps between two test sequences
CAMERA_FRAME = 'camera'       # the images' frame_id, also the node's base_frame
ODOM_FRAME = 'odom'
CHI2_3_95 = 7.81              # 95 % quantile of chi-square with 3 degrees of freedom
GOOD_M, GOOD_DEG = 0.05, 5.0  # "within 5 cm / 5 deg"
FAR_M = 0.25                  # "over 25 cm"
FALSE_M, FALSE_DEG = 0.25, 10.0   # a localized pose further off is a false localization
SEVEN_EPOCHS = 30             # 6 training frames: a model that knows the room a little
LOCALIZED = 'localized'


def csv_list(choices: Sequence[str]):
    """Argparse type: a comma-separated list of ``choices``."""
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(',') if v.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f'expected a comma-separated list of '
                                             f'{", ".join(choices)}, got {text!r}')
        return values
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dataset', type=csv_list(DATASETS), default=list(DATASETS),
                        help='datasets to play, comma-separated (default: both)')
    parser.add_argument('--odometry', type=csv_list(ODOMETRY), default=list(ODOMETRY),
                        help='none (no TF) and/or tf (drifting odom -> camera on /tf)')
    parser.add_argument('--frames', type=int, default=None,
                        help='play at most the first N held-out frames of each dataset')
    parser.add_argument('--seconds', type=float, default=None,
                        help='play at most this many seconds (x 30 frames) of each dataset '
                        '(per pass with --repeat; --frames likewise)')
    parser.add_argument('--work', type=Path, default=DEFAULT_WORK,
                        help='cache folder: checkpoints, maps, ONNX exports, node logs, the '
                        'offline evaluation (reused when present; default %(default)s)')
    parser.add_argument('--model', type=Path, default=None,
                        help="HoloLens checkpoint (default: the demo's, trained into --work)")
    parser.add_argument('--map', type=Path, default=None,
                        help="HoloLens map of --model (default: the demo's, built into --work)")
    parser.add_argument('--data', type=Path, default=None,
                        help="HoloLens: a posed folder of the walk's frames in the frame of "
                        '--map (benchmarks/walkthrough.py writes one for a map from a '
                        'reconstruction); its held-out blocks are played and scored against '
                        'its poses. Needs --model and --map; the offline rows are n/a')
    parser.add_argument('--out', type=Path, default=None,
                        help='markdown file for the table (default: <work>/live_map.md)')
    parser.add_argument('--repeat', type=int, default=1,
                        help='play the held-out frames this many times in a row (stamps go '
                        'on): a longer stream, closer to a steady state (default 1)')
    parser.add_argument('--seed', type=int, default=0, help='odometry drift seed')
    parser.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='a node parameter over the defaults (repeatable), e.g. '
                             'refine.nice:=5')
    parser.add_argument('--capture-hz', type=float, default=CAPTURE_HZ,
                        help='capture rate the stamps assume (the HoloLens walk has no '
                             'stamps: 30 Hz by default; its ~8 cm and 2-8 deg between '
                             'frames are a walk at ~10 Hz); sent at the same rate unless '
                             '--rate is given')
    parser.add_argument('--rate', type=float, default=None,
                        help='frames per second sent (default %(default)s); the stamps stay '
                        'the capture times (index / 30 s): a lower rate gives the node more '
                        'time per frame than a camera would')
    parser.add_argument('--profile', default=str(PROFILE),
                        help="Fast DDS profile XML for both processes, or 'none'")
    parser.add_argument('--startup-timeout', type=float, default=300.0,
                        help='s to wait for the node to come up (ONNX export, map load)')
    args = parser.parse_args(argv)
    for name in ('frames', 'seconds', 'rate', 'repeat', 'capture_hz'):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f'--{name.replace("_", "-")} must be > 0, got {value}')
    if args.data is not None and (args.model is None or args.map is None):
        parser.error('--data needs --model and --map (the checkpoint and map of its frame)')
    if args.rate is None:   # a camera sends at its capture rate
        args.rate = args.capture_hz
    return args


# ---------------------------------------------------------------------------- scoring (pure)

@dataclasses.dataclass
class PoseSample:
    """One pose received for an image stamp: position, quaternion (x, y, z, w), covariance."""

    position: np.ndarray
    quaternion: np.ndarray
    covariance: np.ndarray | None = None   # 6x6 ROS order (x y z rx ry rz); None: not given


def _errors(sample: PoseSample, truth: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """Return (position error m, rotation error deg) of one pose against its ground truth."""
    from camreloc_ros.core.geometry import orientation_error_deg

    pos = float(np.linalg.norm(np.asarray(sample.position) - truth[0]))
    return pos, float(orientation_error_deg(sample.quaternion, truth[1]))


def inside_ellipsoid(error: np.ndarray, covariance: np.ndarray,
                     threshold: float = CHI2_3_95) -> bool | None:
    """Whether a position error lies inside the covariance's 95 % ellipsoid (None: no cov).

    Mahalanobis distance of the error with the 3x3 position block; a singular or non-finite
    block counts as no claim (None), not as inside.
    """
    block = np.asarray(covariance, np.float64).reshape(6, 6)[:3, :3]
    if not np.all(np.isfinite(block)):
        return None
    try:
        d2 = float(error @ np.linalg.solve(block, error))
    except np.linalg.LinAlgError:
        return None
    return bool(d2 <= threshold)


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def localization_helper() -> Any:
    """Return the project's ``localization_metrics`` module, or None where it is missing.

    One definition of availability, false localizations and ellipsoid coverage for the
    offline tools and this benchmark; the numbers computed here are the fallback only.
    """
    try:
        from camreloc_ros.core.evaluation import localization_metrics
    except ImportError:
        return None
    return localization_metrics


def frame_arrays(truth: dict[int, tuple[np.ndarray, np.ndarray]], sent: Sequence[int],
                 published: dict[int, PoseSample], network: dict[int, PoseSample] | None,
                 states: dict[int, dict] | None, helper: Any) -> tuple[dict, int]:
    """Per-frame arrays (in ``sent`` order) as ``localization_metrics`` takes them.

    A frame without a published pose has NaN rows; a state or source the helper does not
    know becomes None (counted, returned second) instead of failing the whole run.
    """
    n = len(sent)
    pos, quat, cov = np.full((n, 3), np.nan), np.full((n, 4), np.nan), np.full((n, 6, 6), np.nan)
    net_pos, net_quat = np.full((n, 3), np.nan), np.full((n, 4), np.nan)
    net_cov = np.full((n, 6, 6), np.nan)
    kinds, sources, unknown = [None] * n, [None] * n, 0
    for i, stamp in enumerate(sent):
        sample = published.get(stamp)
        if sample is not None:
            pos[i], quat[i] = sample.position, sample.quaternion
            if sample.covariance is not None:
                cov[i] = sample.covariance
        net = (network or {}).get(stamp)
        if net is not None:
            net_pos[i], net_quat[i] = net.position, net.quaternion
            if net.covariance is not None:
                net_cov[i] = net.covariance
        entry = (states or {}).get(stamp) or {}
        state, source = entry.get('state'), entry.get('source')
        if state is not None and state not in helper.STATES:
            unknown, state = unknown + 1, None
        if source is not None and source not in helper.SOURCES:
            unknown, source = unknown + 1, None
        kinds[i], sources[i] = state, source
    gt_pos = np.stack([truth[s][0] for s in sent]) if n else np.zeros((0, 3))
    gt_quat = np.stack([truth[s][1] for s in sent]) if n else np.zeros((0, 4))
    arrays = {'states': kinds, 'sources': sources,
              'publish': np.array([s in published for s in sent], bool),
              'pos_n3': pos, 'quat_n4': quat, 'cov_n66': cov,
              'gt_pos_n3': gt_pos, 'gt_quat_n4': gt_quat}
    if network is not None:
        arrays.update(net_pos_n3=net_pos, net_quat_n4=net_quat, net_cov_n66=net_cov)
    return arrays, unknown


def score_run(truth: dict[int, tuple[np.ndarray, np.ndarray]], sent: Sequence[int],
              published: dict[int, PoseSample], network: dict[int, PoseSample] | None = None,
              states: dict[int, dict] | None = None, use_helper: bool = True) -> dict:
    """Score one live run by image stamp.

    ``truth``: stamp (ns) -> ground truth (position, quaternion) of every frame sent;
    ``sent``: the stamps sent, in order; ``published``: the poses on
    ``pose_with_covariance`` by stamp; ``network``: the poses on ``~/network_pose`` (None:
    the node has no such topic); ``states``: ``~/localization_status`` per stamp,
    ``{'state': ..., 'source': ..., ...}`` (None: no such topic). Poses with a stamp that
    was not sent are counted (``unmatched``) and otherwise ignored; a frame that got nothing
    counts as a frame, not as an answer.

    Shares are fractions in [0, 1]: ``answered``/``availability`` of the frames sent,
    ``within_5cm_5deg``/``over_25cm``/``inside_95`` of the poses published (as
    ``localization_metrics`` defines them). Metrics that need a topic the node lacks are
    None. With ``use_helper`` and the project's ``localization_metrics`` present, its numbers
    replace the ones computed here (``metrics`` says which), and its per-kind ellipsoid
    coverage is added (``kinds``).
    """
    sent = list(dict.fromkeys(sent))   # a stamp sent twice is one frame
    n = len(sent)
    sent_set = set(sent)
    pos_err, rot_err, inside, false_loc = [], [], [], 0
    loc_pos, loc_rot = [], []
    for stamp in sent:
        sample = published.get(stamp)
        if sample is None:
            continue
        p, r = _errors(sample, truth[stamp])
        pos_err.append(p)
        rot_err.append(r)
        if sample.covariance is not None:
            claim = inside_ellipsoid(np.asarray(sample.position) - truth[stamp][0],
                                     sample.covariance)
            if claim is not None:
                inside.append(claim)
        if states is not None and (states.get(stamp) or {}).get('state') == LOCALIZED:
            loc_pos.append(p)
            loc_rot.append(r)
            false_loc += p > FALSE_M or r > FALSE_DEG
    pos_a, rot_a = np.asarray(pos_err), np.asarray(rot_err)
    n_pub = len(pos_err)
    answered = sum(1 for s in sent if s in published or (network is not None and s in network))
    result = {
        'metrics': 'benchmark',
        'sent': n,
        'answered': answered,
        'published': n_pub,
        'unmatched': sum(1 for s in published if s not in sent_set)
        + sum(1 for s in (network or {}) if s not in sent_set),
        'median_pos_m': _median(pos_err),
        'median_rot_deg': _median(rot_err),
        'within_5cm_5deg': float(np.sum((pos_a <= GOOD_M) & (rot_a <= GOOD_DEG))) / n_pub
        if n_pub else None,
        'over_25cm': float(np.sum(pos_a > FAR_M)) / n_pub if n_pub else None,
        'inside_95': float(np.mean(inside)) if inside else None,
        'inside_95_n': len(inside),
        'network_answered': None, 'network_median_pos_m': None, 'network_median_rot_deg': None,
        'availability': None, 'false_localizations': None, 'localized_published': None,
        'localized_median_pos_m': None, 'localized_median_rot_deg': None,
        'states': None, 'sources': None, 'tracking': None, 'refinement': None,
        'kinds': None, 'unknown_labels': 0, 'reasons': None,
    }
    if network is not None:
        errs = [_errors(network[s], truth[s]) for s in sent if s in network]
        result['network_answered'] = len(errs)
        result['network_median_pos_m'] = _median([e[0] for e in errs])
        result['network_median_rot_deg'] = _median([e[1] for e in errs])
    if states is not None:
        per_frame = [states.get(s) or {} for s in sent]
        kinds = Counter(st.get('state', 'missing') for st in per_frame)
        sources = Counter(st.get('source') or 'none' for st in per_frame if st)
        result.update({
            'availability': kinds[LOCALIZED] / n if n else None,
            'false_localizations': false_loc,
            'localized_published': len(loc_pos),
            'localized_median_pos_m': _median(loc_pos),
            'localized_median_rot_deg': _median(loc_rot),
            'states': dict(kinds), 'sources': dict(sources),
            'reasons': dict(Counter(st.get('reason') or '-' for st in per_frame
                                    if st and st.get('state') != LOCALIZED).most_common(3)),
            'tracking': sum(v for k, v in sources.items() if 'track' in k) / n if n else None,
            'refinement': sum(v for k, v in sources.items()
                              if 'refin' in k or 'pnp' in k) / n if n else None,
        })
    helper = localization_helper() if use_helper else None
    if helper is not None and n:
        arrays, unknown = frame_arrays(truth, sent, published, network, states, helper)
        m = helper.localization_metrics(**arrays)
        result['reliability'] = helper.reliability_series(**arrays)   # for the plot
        result.update({'metrics': 'localization_metrics', 'unknown_labels': unknown,
                       'median_pos_m': m['position_m'], 'median_rot_deg': m['orientation_deg'],
                       'within_5cm_5deg': m['within'], 'over_25cm': m['beyond'],
                       'kinds': {k: v for k, v in m['kinds'].items() if v['count']}})
        if states is not None:
            result.update({'availability': m['availability'],
                           'false_localizations': m['false_localizations'],
                           'localized_published': m['localized_published'],
                           'states': {k: v for k, v in m['states'].items() if v},
                           'sources': {k: v for k, v in m['sources'].items() if v},
                           'tracking': m['sources']['tracked'] / n,
                           'refinement': m['sources']['refined'] / n})
    return result


def diagnostics_rates(values: dict[str, str] | None, seconds: float) -> dict:
    """Refinement (and any tracking) figures from the node's last ``/diagnostics`` values.

    Counters are cumulative over the node's life (one node per run here), so they are this
    run's. Returns the refiner's ``refinements``, ``refined``, ``refine_hz``, ``refine_ms``
    (the last one's time), the localizer's ``accepted`` / ``rejected`` refinements,
    ``tracked``, ``dead_reckoning``, ``relocalizations``, ``lost`` and ``frames``, the
    node's ``received`` / ``published`` (None where the node does not report them) and
    ``tracking_values``: every ``track*`` value as reported.
    """
    values = values or {}

    def number(key: str) -> float | None:
        try:
            return float(values[key])
        except (KeyError, ValueError):
            return None
    refined, fallbacks = number('refine_refined'), number('refine_fallbacks')
    done = None if refined is None or fallbacks is None else refined + fallbacks
    return {
        'refinements': done, 'refined': refined,
        'refine_hz': None if done is None or seconds <= 0 else done / seconds,
        'refine_ms': number('refine_last_ms'),
        'accepted': number('localization_refinements_accepted'),
        'rejected': number('localization_refinements_rejected'),
        'tracked': number('localization_tracked'),
        'dead_reckoning': number('localization_dead_reckoning'),
        'relocalizations': number('localization_relocalizations'),
        'lost': number('localization_lost'),
        'frames': number('localization_frames'),
        'received': number('received'), 'published': number('published'),
        'dropped': number('dropped_frames'), 'refine_dropped': number('refine_dropped_frames'),
        'tracking_values': {k: v for k, v in values.items() if k.startswith('track')},
    }


# ---------------------------------------------------------------------------- stamps (pure)

def frame_stamps(sequences: Sequence[str], indices: Sequence[int],
                 rate: float = CAPTURE_HZ) -> list[int]:
    """Capture stamps (ns): ``START + index / rate``; each new sequence starts after the last.

    A sequence's frames keep their index gaps (held-out blocks); a later sequence (7-Scenes)
    starts ``SEQUENCE_GAP_FRAMES`` after the previous one's last frame, so stamps never repeat.
    """
    stamps, offset, last_seq, last = [], 0, None, -1
    for seq, idx in zip(sequences, indices):
        if last_seq is not None and seq != last_seq:
            offset = last + SEQUENCE_GAP_FRAMES - idx
        stamp_index = offset + idx
        stamps.append(START_NS + round(stamp_index * 1e9 / rate))
        last_seq, last = seq, stamp_index
    return stamps


# ---------------------------------------------------------------------------- datasets

@dataclasses.dataclass
class Setup:
    """A dataset ready to play: its checkpoint and map, and the frames to send."""

    name: str
    data: Path
    fmt: str
    model: Path
    map: Path
    frames: list            # held-out frames, time order (core Frame)
    stamps: list[int]       # their capture stamps (ns)
    odom: list[np.ndarray]  # camera poses in the odometry frame at those frames
    odom_note: str
    note: str = ''
    passes: int = 1         # frames holds the held-out frames this many times in a row


def _quiet_tools() -> None:
    """Keep the tools' progress out of the table's output (warnings still show)."""
    log = logging.getLogger('camreloc_ros')
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter('%(message)s'))
        log.addHandler(handler)
    log.setLevel(logging.WARNING)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _trained(run: Path, epochs: int) -> bool:
    """Whether ``run`` holds a finished training (else it is trained, or resumed, now)."""
    try:
        history = json.loads((run / 'history.json').read_text())
    except (OSError, ValueError):
        return False
    return (run / 'last.pt').is_file() and bool(history) and history[-1]['epoch'] >= epochs


def _hololens_model(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """Return the demo's checkpoint and map: trained and built by the demo's code, or given."""
    from camreloc_ros.tools import demo

    if args.model is not None:
        model = args.model.resolve()
    else:
        model = work / 'train' / 'last.pt'
        if not _trained(work / 'train', demo.DEMO_TRAIN['train']['epochs']):
            from camreloc_ros.core.training.trainer import train_conf
            from camreloc_ros.tools import train

            _progress(f'hololens: training the demo model into {work / "train"} (once)')
            train.main(train_conf(demo.DEMO_TRAIN), {'data': demo.DEFAULT_DATA,
                                                     'out': work / 'train'}, resume=True,
                       progress_bars=False)
    if args.map is not None:
        return model, args.map.resolve()
    _progress(f'hololens: map of {model.name} in {work} (built once)')
    return model, demo.demo_map(model, demo.DEFAULT_DATA, work / 'map.npz').resolve()


def _sevenscenes_model(work: Path, data: Path) -> tuple[Path, Path]:
    """Return a small regressor of the sample's train sequences and its depth map (cached)."""
    from camreloc_ros.core.evaluation.map_eval import open_map
    from camreloc_ros.tools import map as map_tool

    model = work / 'train' / 'last.pt'
    if not _trained(work / 'train', SEVEN_EPOCHS):
        from camreloc_ros.core.training.trainer import train_conf
        from camreloc_ros.tools import train

        _progress(f'7scenes: training a regressor on the 6 train frames into {work} (once)')
        conf = train_conf({'model': {'head': {'name': 'regressor'}}, 'loss': {'name': 'qeh'},
                           'train': {'epochs': SEVEN_EPOCHS},
                           'data': {'format': '7scenes', 'val_every': 0}})
        train.main(conf, {'data': data, 'out': work / 'train'}, resume=True,
                   progress_bars=False)
    path = work / 'map.npz'
    if path.exists():
        open_map(path, model)   # one of another checkpoint is an error (remove --work)
        return model, path.resolve()
    _progress(f'7scenes: depth map of the train sequences into {path} (once)')
    map_tool.main({'format': '7scenes'}, {'model': model, 'data': data, 'out': path},
                  log=lambda text: None)   # points from depth: build.points 'auto'
    return model, path.resolve()


def prepare(name: str, args: argparse.Namespace, rng: np.random.Generator) -> Setup:
    """Checkpoint, map, held-out frames, their stamps and odometry for dataset ``name``."""
    from camreloc_ros.core.data.formats import read_dataset
    from camreloc_ros.core.data.split import frame_breaks, split_dataset, split_params
    from camreloc_ros.tools.common import shared_data_dir
    from camreloc_ros.tools.demo import DEMO_SPLIT

    work = (args.work / name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if name == 'hololens':
        data, fmt = shared_data_dir() / 'hololens-office', 'posed'
        model, lmap = _hololens_model(args, work)
        block, every = DEMO_SPLIT['block'], DEMO_SPLIT['every']
        if args.data is not None:    # the walk in another frame: the walk's held-out blocks
            data = args.data.resolve()
        elif args.model is not None:   # a given checkpoint: its own split, as evaluate reads it
            from camreloc_ros.core.models.pose_model import PoseModel
            block, every = split_params({'block': None, 'every': None},
                                        PoseModel.from_checkpoint(model).checkpoint_extra)
        note = f'HoloLens walk, held-out blocks (block {block}, every {every})'
        if args.data is not None:
            note += f', poses of {data} (the frame of the map)'
    else:
        data, fmt = shared_data_dir() / '7scenes-stairs-mini', '7scenes'
        model, lmap = _sevenscenes_model(work, data)
        block = every = 0
        note = ('7-Scenes sample: TINY (its test sequences hold 6 frames, 0.2 s of video; '
                'model trained on 6 frames): a smoke check of the depth-map path, not a '
                'benchmark')
    dataset = read_dataset(data, fmt)
    everything = dataset.frames
    test = split_dataset(dataset, 'test', block=block or 25, every=every or 4).frames
    limit = len(test)
    if args.frames is not None:
        limit = min(limit, args.frames)
    if args.seconds is not None:
        limit = min(limit, max(1, int(args.seconds * args.capture_hz)))
    test = test[:limit]
    # odometry over every frame of the sequences played (the walk between held-out blocks
    # drifts too), sampled at the frames sent
    order = {seq: i for i, seq in enumerate(dict.fromkeys(f.sequence for f in test))}
    track = sorted((f for f in everything if f.sequence in order),
                   key=lambda f: (order[f.sequence], f.index))
    passes = args.repeat   # each pass starts like a new sequence: a stamp gap, a pose jump
    poses = [f.pose_c2w for f in track] * passes
    breaks = frame_breaks(track) * passes
    odom_all = drifted_odometry(poses, breaks, rng)
    by_name = {f.name: i for i, f in enumerate(track)}
    odom = [odom_all[k * len(track) + by_name[f.name]] for k in range(passes) for f in test]
    walked = sum(float(np.linalg.norm(b[:3, 3] - a[:3, 3]))
                 for a, b, brk in zip(poses, poses[1:], breaks[1:]) if not brk)
    drift = float(np.linalg.norm((np.linalg.inv(poses[0]) @ poses[-1])[:3, 3]
                                 - (np.linalg.inv(odom_all[0]) @ odom_all[-1])[:3, 3]))
    odom_note = (f'odometry drift at the end of {name}: {drift:.2f} m after {walked:.1f} m '
                 f'walked (seed {args.seed})')
    sent = [f for _ in range(passes) for f in test]
    stamps = frame_stamps([f'{f.sequence}#{k}' for k in range(passes) for f in test],
                          [f.index for f in sent], args.capture_hz)
    if passes > 1:
        note += f'; the {len(test)} frames played {passes} times in a row'
    return Setup(name, data, fmt, model, lmap, sent, stamps, odom, odom_note, note, passes)


def offline_refined(setup: Setup, work: Path) -> dict:
    """``camreloc evaluate --map`` on the same checkpoint, map and frames (cached per count).

    Runs the evaluate tool's Python ``main`` with the ONNX runtime (what the node runs on a
    CPU; the same poses as torch to 1e-4) and returns the network and refined medians.
    """
    from camreloc_ros.core.evaluation.baselines import NETWORK_ROW
    from camreloc_ros.core.evaluation.map_eval import REFINED_ROW
    from camreloc_ros.tools import evaluate

    n = len(setup.frames) // setup.passes
    if setup.note.endswith('(the frame of the map)'):   # --data: evaluate pairs by dataset
        return {'frames': n, 'names': [f.name for f in setup.frames[:n]], 'states': None,
                'network_pos': None, 'network_rot': None, 'refined_pos': None,
                'refined_rot': None, 'refined_share': None}
    out = work / f'eval_test_{n}'
    summary_path = out / 'map_summary.json'
    stale = (not summary_path.is_file()
             or summary_path.stat().st_mtime < setup.map.stat().st_mtime
             or summary_path.stat().st_mtime < setup.model.stat().st_mtime)
    if stale:
        _progress(f'{setup.name}: offline evaluate --map on the same {n} frames')
        with contextlib.redirect_stdout(io.StringIO()):
            evaluate.main({'format': setup.fmt, 'split': 'test', 'limit': n,
                           'runtime': 'onnx', 'device': 'cpu', 'baselines': False},
                          {'checkpoint': setup.model, 'data': setup.data, 'out': out,
                           'map': setup.map})
    summary = json.loads(summary_path.read_text())
    names = [f.name for f in setup.frames[:n]]
    scored = (summary.get('info') or {}).get('limit')
    rows = summary['rows']

    def med(row: str, key: str) -> float | None:
        return ((rows.get(row) or {}).get(key) or {}).get('median')
    machine = next((row for key, row in ((summary.get('localization') or {}).get('rows') or {})
                    .items() if key.startswith('localizer')), None)   # the node's state machine
    return {'frames': n if scored in (None, n) else scored, 'names': names,
            'states': machine,
            'network_pos': med(NETWORK_ROW, 'position_m'),
            'network_rot': med(NETWORK_ROW, 'orientation_deg'),
            'refined_pos': med(REFINED_ROW, 'position_m'),
            'refined_rot': med(REFINED_ROW, 'orientation_deg'),
            'refined_share': (summary.get('shares') or {}).get('refined')}


# ---------------------------------------------------------------------------- live run

def set_environment(args: argparse.Namespace) -> dict[str, str]:
    """Private domain, localhost discovery, logs, the large-image profile, the ONNX cache."""
    from camreloc_ros.ros.domain import allocate_domain

    env = {'ROS_DOMAIN_ID': str(allocate_domain()),
           'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
           'ROS_LOG_DIR': str((args.work / 'ros_log').resolve()),
           'CAMRELOC_CACHE_DIR': str((args.work / 'cache').resolve())}
    if args.profile.lower() != 'none':
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(Path(args.profile).resolve())
    else:
        os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    os.environ.update(env)
    return env


def node_topics() -> dict[str, str]:
    """Full names of the node's topics (its name and namespace from ``ros/qos.py``)."""
    from camreloc_ros.ros.qos import NAMESPACE, NODE_NAME

    ns = '/' + NAMESPACE.strip('/') if NAMESPACE.strip('/') else ''
    private = f'{ns}/{NODE_NAME}'
    return {'image': f'{ns}/image', 'pose_cov': f'{ns}/pose_with_covariance',
            'network': f'{private}/network_pose', 'localized': f'{private}/localized',
            'status': f'{private}/localization_status', 'diagnostics': '/diagnostics'}


def _sample(msg: Any) -> PoseSample:
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return PoseSample(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]),
                      np.asarray(msg.pose.covariance, np.float64).reshape(6, 6))


class Listener:
    """This process' ROS side: images and odometry out, every output of the node in."""

    def __init__(self, topics: dict[str, str]):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data, QoSProfile
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool
        from tf2_msgs.msg import TFMessage

        from camreloc_ros.ros.conversions import stamp_to_ns
        from camreloc_ros.ros.qos import LATCHED_QOS, TF_QOS

        self._ns = stamp_to_ns
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('camreloc_bench_live_map', context=self.context)
        self.lock = threading.Lock()
        self.published: dict[int, PoseSample] = {}
        self.network: dict[int, PoseSample] = {}
        self.states: dict[int, dict] = {}
        self.localized: list[tuple[float, bool]] = []
        self.diagnostics: dict[str, str] | None = None
        self.diagnostics_at = 0.0
        self.last_output = time.monotonic()
        camera = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
        self.image_pub = self.node.create_publisher(Image, topics['image'], camera)
        self.tf_pub = self.node.create_publisher(TFMessage, '/tf', TF_QOS)
        out = QoSProfile(depth=1000)   # reliable, deep: every pose of the run
        self.subs = {
            'pose_cov': self.node.create_subscription(
                PoseWithCovarianceStamped, topics['pose_cov'],
                lambda m: self._pose(self.published, m), out),
            'network': self.node.create_subscription(
                PoseWithCovarianceStamped, topics['network'],
                lambda m: self._pose(self.network, m), out),
            'status': self.node.create_subscription(DiagnosticArray, topics['status'],
                                                    self._status, out),
            'localized': self.node.create_subscription(Bool, topics['localized'],
                                                       self._localized, LATCHED_QOS),
            'diagnostics': self.node.create_subscription(DiagnosticArray,
                                                         topics['diagnostics'],
                                                         self._diagnostics, 10),
        }
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def _pose(self, store: dict, msg: Any) -> None:
        with self.lock:
            store.setdefault(self._ns(msg.header.stamp), _sample(msg))
            self.last_output = time.monotonic()

    def _status(self, msg: Any) -> None:
        if not msg.status:
            return
        status = msg.status[0]
        entry = {kv.key: kv.value for kv in status.values}
        entry['state'] = status.message
        with self.lock:
            self.states.setdefault(self._ns(msg.header.stamp), entry)
            self.last_output = time.monotonic()

    def _localized(self, msg: Any) -> None:
        with self.lock:
            self.localized.append((time.monotonic(), bool(msg.data)))

    def _diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.endswith(': localizer'):
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_at = time.monotonic()

    def has_publisher(self, key: str) -> bool:
        """Whether the node publishes that topic (discovered)."""
        return self.subs[key].get_publisher_count() > 0

    def close(self) -> None:
        """Stop spinning, destroy the node, shut the context down."""
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=5.0)


def serialized_images(setup: Setup) -> list[bytes]:
    """Each frame as the CDR bytes of an rgb8 ``sensor_msgs/Image`` with its capture stamp."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from camreloc_ros.core.data.transforms import read_rgb
    from camreloc_ros.ros.conversions import rgb_to_image

    out, pixels = [], {}
    for frame, stamp in zip(setup.frames, setup.stamps):
        if frame.name not in pixels:
            pixels[frame.name] = read_rgb(frame.image_path)
        header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                        frame_id=CAMERA_FRAME)
        out.append(serialize_message(rgb_to_image(pixels[frame.name], header=header)))
    return out


def odom_messages(setup: Setup) -> list[Any]:
    """``odom -> camera`` TFMessages, one per frame, stamped like the frame."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from camreloc_ros.core.geometry import pose_from_matrix

    msgs = []
    for pose, stamp in zip(setup.odom, setup.stamps):
        t, q = pose_from_matrix(pose)
        tf = TransformStamped()
        tf.header.stamp = Time(sec=stamp // 10**9, nanosec=stamp % 10**9)
        tf.header.frame_id, tf.child_frame_id = ODOM_FRAME, CAMERA_FRAME
        tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = (
            float(v) for v in t)
        (tf.transform.rotation.x, tf.transform.rotation.y, tf.transform.rotation.z,
         tf.transform.rotation.w) = (float(v) for v in q)
        msgs.append(TFMessage(transforms=[tf]))
    return msgs


def start_node(setup: Setup, env: dict[str, str], log_path: Path,
               params: list[str] = ()) -> subprocess.Popen:
    """``camreloc node`` as its own process: the checkpoint, the map, base_frame = camera.

    ``params``: more ``NAME:=VALUE`` node parameters (``--param``), after the defaults.
    """
    command = [sys.executable, '-m', 'camreloc_ros.tools.cli', 'node', '--ros-args',
               '-p', f'model:={setup.model}', '-p', f'map:={setup.map}',
               '-p', 'device:=cpu', '-p', f'base_frame:={CAMERA_FRAME}',
               '-p', f'odom_frame:={ODOM_FRAME}', '-p', 'diagnostics_period:=0.5',
               '-p', 'path_length:=0']
    for param in params:
        command += ['-p', param]
    child_env = dict(os.environ, **env)
    child_env['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p)
    log = open(log_path, 'w')
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env)
    finally:
        log.close()   # the child holds its own descriptor


def run_live(setup: Setup, odometry: str, args: argparse.Namespace,
             env: dict[str, str]) -> dict:
    """One node, one pass over the frames; returns what was sent and everything received."""
    images = serialized_images(setup)
    tfs = odom_messages(setup) if odometry == 'tf' else None
    log_path = (args.work / setup.name / f'node_{odometry}.log').resolve()
    topics = node_topics()
    listener = Listener(topics)
    proc = start_node(setup, env, log_path, args.param)
    try:
        deadline = time.monotonic() + args.startup_timeout
        while not (listener.image_pub.get_subscription_count() > 0
                   and listener.has_publisher('pose_cov')):
            if proc.poll() is not None:
                raise RuntimeError(f'the node exited with {proc.returncode} before it was up:\n'
                                   f'{log_path.read_text()[-2000:]}')
            if time.monotonic() > deadline:
                raise RuntimeError(f'the node did not come up in {args.startup_timeout:.0f} s '
                                   f'(log {log_path})')
            time.sleep(0.05)
        time.sleep(2.0)   # discovery of the node's other endpoints; the node idles meanwhile
        present = {k: listener.has_publisher(k) for k in ('network', 'status', 'localized')}
        load_before = os.getloadavg()[0]
        period = 1.0 / args.rate
        start = time.monotonic()
        for i, data in enumerate(images):
            if tfs is not None:
                listener.tf_pub.publish(tfs[i])
            listener.image_pub.publish(data)
            delay = start + (i + 1) * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        seconds = time.monotonic() - start
        wanted = set(setup.stamps)
        # drain: until every frame has an answer, or nothing new came for 3 s
        while time.monotonic() - listener.last_output < 3.0:
            with listener.lock:
                if wanted <= (set(listener.published) | set(listener.network)):
                    break
            time.sleep(0.05)
        end = time.monotonic()
        active_seconds = max(listener.last_output, start + seconds) - start
        while listener.diagnostics_at <= end and time.monotonic() < end + 3.0:
            time.sleep(0.05)   # counters from after the last frame
        load_after = os.getloadavg()[0]
    finally:
        from camreloc_ros.tools.common import stop_process   # the demo's node stop, too
        code = stop_process(proc)
        listener_state = _take(listener)
        listener.close()
    return {'seconds': seconds, 'active_seconds': active_seconds, 'present': present,
            'exit_code': code,
            'load': f'{load_before:.2f} -> {load_after:.2f}', 'log': str(log_path),
            **listener_state}


def _take(listener: Listener) -> dict:
    with listener.lock:
        return {'published': dict(listener.published), 'network': dict(listener.network),
                'states': dict(listener.states), 'localized': list(listener.localized),
                'diagnostics': dict(listener.diagnostics or {})}


def dump_frames(setup: Setup, live: dict, path: Path) -> None:
    """Write what each frame got (state, status values, errors) as JSON, for a closer look."""
    from camreloc_ros.core.geometry import pose_from_matrix

    rows = []
    for frame, stamp in zip(setup.frames, setup.stamps):
        truth = pose_from_matrix(frame.pose_c2w)
        row = {'frame': frame.name, 'stamp_ns': stamp, **(live['states'].get(stamp) or {})}
        for key, store in (('published', live['published']), ('network', live['network'])):
            if stamp in store:
                row[f'{key}_error_m_deg'] = _errors(store[stamp], truth)
        rows.append(row)
    from camreloc_ros.core.io import atomic_write_text
    atomic_write_text(path, json.dumps({'diagnostics': live['diagnostics'], 'frames': rows},
                                       indent=1) + '\n')


def score_live(setup: Setup, live: dict) -> dict:
    """Score a live run (``run_live``'s result) against the frames' ground truth."""
    from camreloc_ros.core.geometry import pose_from_matrix

    truth = {s: pose_from_matrix(f.pose_c2w) for s, f in zip(setup.stamps, setup.frames)}
    present = live['present']
    scores = score_run(truth, setup.stamps, live['published'],
                       live['network'] if present['network'] else None,
                       live['states'] if present['status'] else None)
    scores['diag'] = diagnostics_rates(live['diagnostics'], live['active_seconds'])
    scores['latched'] = (('true' if live['localized'][-1][1] else 'false')
                         if live['localized'] else ('none received' if present['localized']
                                                    else None))
    return scores


# ---------------------------------------------------------------------------- table

def _pct(value: float | None) -> str:
    return 'n/a' if value is None else f'{100.0 * value:.1f} %'


def _num(value: float | None, digits: int, unit: str = '') -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}{unit}'


def _pair(pos: float | None, rot: float | None) -> str:
    if pos is None or rot is None:
        return 'n/a'
    return f'{pos:.3f} m / {rot:.2f} deg'


def _count_share(count: float | None, total: float | None) -> str:
    if count is None:
        return 'n/a'
    share = f' ({100.0 * count / total:.1f} %)' if total else ''
    return f'{count:.0f}{share}'


def _offline_states(m: dict | None) -> str:
    """Format the offline state machine's row (``localization_metrics``), or n/a."""
    if not m:
        return 'n/a'
    median = _pair(m.get('position_m'), m.get('orientation_deg'))
    return (f'{_pct(m.get("availability"))}, {median} of {m.get("published")}, '
            f'{m.get("false_localizations")} false')


def column(r: dict) -> list[str]:
    """One run's cells, in the order of :data:`ROWS`."""
    s, d, off = r['scores'], r['scores']['diag'], r['offline']
    sent = s['sent']
    refine = 'n/a'
    if d['refinements'] is not None:
        refine = (f'{d["refinements"]:.0f} ({d["refined"]:.0f} refined), '
                  f'{d["refine_hz"]:.2f} Hz')
    states = ('n/a' if s['states'] is None else
              ', '.join(f'{k} {v}' for k, v in sorted(s['states'].items())))
    if s['unknown_labels']:
        states += f' ({s["unknown_labels"]} unknown state/source labels ignored)'
    sources = ('n/a' if s['sources'] is None else
               ', '.join(f'{k} {v}' for k, v in sorted(s['sources'].items())))
    tracking = _pct(s['tracking'])
    if s['tracking'] is None and d['tracking_values']:
        tracking = ', '.join(f'{k} {v}' for k, v in d['tracking_values'].items())
    return [
        f'{sent} in {r["seconds"]:.1f} s ({sent / max(r["seconds"], 1e-9):.1f} Hz)',
        _count_share(d['received'], sent),
        _count_share(s['answered'], sent),
        _count_share(s['published'], sent),
        _count_share(s['network_answered'], sent),
        _pct(s['availability']),
        states,
        _pair(s['median_pos_m'], s['median_rot_deg']),
        _pct(s['within_5cm_5deg']),
        _pct(s['over_25cm']),
        'n/a' if s['false_localizations'] is None else
        f'{s["false_localizations"]} of {s["localized_published"]} localized poses',
        _pair(s['localized_median_pos_m'], s['localized_median_rot_deg']),
        'n/a' if s['inside_95'] is None else f'{_pct(s["inside_95"])} of {s["inside_95_n"]}',
        'n/a' if not s['kinds'] else ', '.join(
            f'{k} {_pct(v["coverage"])} of {v["usable_covariance"]}'
            for k, v in s['kinds'].items()),
        _pair(s['network_median_pos_m'], s['network_median_rot_deg']),
        tracking,
        _pct(s['refinement']),
        sources,
        'n/a' if s['reasons'] is None else
        '; '.join(f'{k} ({v})' for k, v in s['reasons'].items()) or '-',
        refine + ('' if d['refine_ms'] is None else f', last {d["refine_ms"]:.0f} ms'),
        'n/a' if d['accepted'] is None else
        f'{d["accepted"]:.0f} / {_num(d["rejected"], 0)}',
        'n/a' if d['tracked'] is None else
        (f'{_count_share(d["tracked"], d["frames"])} / '
         f'{_count_share(d["dead_reckoning"], d["frames"])}, '
         f'{_num(d["relocalizations"], 0)}, {_num(d["lost"], 0)}'),
        'n/a' if s['latched'] is None else s['latched'],
        _pair(off['refined_pos'], off['refined_rot'])
        + ('' if off['refined_share'] is None else f', {_pct(off["refined_share"])} refined'),
        _pair(off['network_pos'], off['network_rot']),
        _offline_states(off['states']),
        f'{s["unmatched"]}',
        r['load'],
    ]


ROWS = [
    'frames sent (rgb8)',
    'received by the node (diagnostics)',
    'answered (pose_with_covariance or ~/network_pose for the stamp)',
    'poses on pose_with_covariance',
    'poses on ~/network_pose',
    'availability (state localized, ~/localization_status)',
    'states per frame',
    'published median position / rotation',
    'published within 5 cm / 5 deg (of poses published)',
    'published over 25 cm (of poses published)',
    'false localizations (localized, > 0.25 m or > 10 deg)',
    'localized median position / rotation',
    'published position errors inside the claimed 95 % ellipsoid (chi2(3) 7.81)',
    '... per kind of pose (localization_metrics)',
    'raw network median (~/network_pose)',
    'tracking rate (status source)',
    'refinement rate (status source)',
    'status sources per frame',
    'most frequent reasons of frames not localized (status)',
    'refiner (diagnostics): refinements (refined), rate over the run, last time',
    'refinements accepted / rejected by the localizer (diagnostics)',
    'tracked / dead-reckoned frames, relocalizations, lost (diagnostics)',
    '~/localized at the end (latched)',
    'offline evaluate --map: refined median (same frames)',
    'offline evaluate: network median (same frames)',
    'offline evaluate --map state machine: available, published median, false',
    'poses with a stamp not sent',
    'load average (1 min) before -> after',
]


def markdown(results: list[dict], header: list[str]) -> str:
    """Format the table: a row per metric, a column per dataset x odometry run."""
    heads = [f'{r["dataset"]}, odometry {r["odometry"]}' for r in results]
    cols = [column(r) for r in results]
    lines = header + ['', '| metric | ' + ' | '.join(heads) + ' |',
                      '|---|' + '---|' * len(heads)]
    lines += [f'| {name} | ' + ' | '.join(c[i] for c in cols) + ' |'
              for i, name in enumerate(ROWS)]
    return '\n'.join(lines) + '\n'


def _commit() -> str:
    try:
        out = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(['git', '-C', str(ROOT), 'status', '--porcelain', '--',
                                'camreloc_ros'], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + (' (package modified)' if dirty.stdout.strip() else '')
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def main(argv: list[str] | None = None) -> int:
    """Prepare each dataset, play it with and without odometry, print and write the table."""
    args = parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    _quiet_tools()
    env = set_environment(args)
    rng = np.random.default_rng(args.seed)   # the odometry drift: one generator, seeded
    results, header = [], []
    for name in args.dataset:
        setup = prepare(name, args, rng)
        offline = offline_refined(setup, args.work / name)
        header.append(f'- {setup.note}; {len(setup.frames)} frames sent; model {setup.model}, '
                      f'map {setup.map}. {setup.odom_note}.')
        for odometry in args.odometry:
            _progress(f'{name}: live run, odometry {odometry} ({len(setup.frames)} frames)')
            live = run_live(setup, odometry, args, env)
            dump_frames(setup, live, args.work / name / f'frames_{odometry}.json')
            results.append({'dataset': name, 'odometry': odometry, 'seconds': live['seconds'],
                            'load': live['load'], 'offline': offline,
                            'scores': score_live(setup, live), 'present': live['present']})
            missing = [k for k, v in live['present'].items() if not v]
            if missing:
                _progress(f'  the node has no {", ".join(missing)} topic(s): shown as n/a')
    from runtimes import machine   # noqa: I100 - a sibling benchmark script (imports torch)

    present = results[0]['present'] if results else {}
    labels = {'network': '~/network_pose', 'status': '~/localization_status',
              'localized': '~/localized'}
    passes = f', each dataset {args.repeat} times in a row' if args.repeat > 1 else ''
    header = [f'Live node with a map, sent at {args.rate:g} Hz (stamps: capture times, '
              f'{args.capture_hz:g} Hz){passes}, raw rgb8 from this process to `camreloc node` '
              f'in its own process (node defaults{"".join(", " + p for p in args.param)}, '
              f'base_frame {CAMERA_FRAME}, Fast DDS profile '
              f'{Path(args.profile).name}); commit {_commit()}; node topics: '
              + ', '.join(f'{labels[k]} {"yes" if v else "no"}' for k, v in present.items())
              + f'; scores by {results[0]["scores"]["metrics"] if results else "-"}'
              + f'; {machine()}', ''] + header
    text = markdown(results, header)
    print(text, end='')
    out = args.out or args.work / 'live_map.md'
    from camreloc_ros.core.io import atomic_write_text
    atomic_write_text(out, text)
    _progress(f'table written to {out}')
    write_reliability_plots(results, Path(out))
    return 0


def write_reliability_plots(results: list[dict], out: Path) -> None:
    """One reliability plot per run beside the table: claimed sigma against actual error.

    The live counterpart of ``evaluate --map``'s ``reliability.png``, drawn by the same code
    (``core/evaluation/plots.py``): does the node's published covariance say how far off it is?
    """
    from camreloc_ros.core.evaluation.plots import plot_reliability
    for r in results:
        series = r['scores'].get('reliability')
        if not series or not any(len(v[0]) for v in series.values()):
            continue
        path = out.with_name(f'{out.stem}_reliability_{r["dataset"]}_{r["odometry"]}.png')
        plot_reliability(path, series, f'live {r["dataset"]}, odometry {r["odometry"]}')
        _progress(f'reliability plot written to {path}')


if __name__ == '__main__':
    sys.exit(main())
