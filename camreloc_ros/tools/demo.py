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

"""``camreloc demo`` (``make demo``): the whole user story on the shared HoloLens walk.

1. train EfficientNet-Lite0 + Regressor with the QEH loss on the training blocks (CPU),
2. build a localization map of the training frames (SIFT, 3D points triangulated from the
   known poses: the walk is RGB-only) for that checkpoint,
3. evaluate the last epoch on the held-out blocks: thesis table, per-frame file, plots, and
   network vs retrieval vs oracle vs PnP-refined poses (``evaluate --map``),
4. write the held-out frames into a rosbag, play it through the live node over real ROS 2,
   and score the live poses next to the offline ones (:func:`demo_live`).

Outputs go to ``--out`` (default ``runs/demo``); a second run reuses the trained model and
its map. The run ends with one compact table (:func:`demo_summary`, :func:`format_summary`):
median errors of network, retrieval, oracle, refined and live poses, the live node's answered
share, the map's size and the time of each step, also written to ``demo_summary.md``.
"""

import argparse
import json
import logging
import os
from pathlib import Path
import subprocess
import sys
import threading
import time

from camreloc_ros.core.data.split import SPLIT_DEFAULTS
from camreloc_ros.core.io import atomic_write_text
from camreloc_ros.ros.domain import allocate_domain
from camreloc_ros.tools.common import (scoped_environ, shared_data_dir, stop_process,
                                       tool_logging)

logger = logging.getLogger('camreloc_ros')

DEFAULT_DATA = shared_data_dir() / 'hololens-office'

DEMO_SPLIT = {k: SPLIT_DEFAULTS[k] for k in ('block', 'every')}   # the held-out blocks
DEMO_TRAIN = {
    'model': {'head': {'name': 'regressor'}},
    'loss': {'name': 'qeh'},
    'train': {'epochs': 60},
    'data': {'format': 'posed', **DEMO_SPLIT},
}


def _banner(text: str) -> None:
    logger.info(f'\n=== {text}')


def demo_map(ckpt: Path, data: Path, path: Path) -> Path:
    """Build the map of ``ckpt``'s training frames; reuse one that belongs to ``ckpt``.

    A map of an earlier checkpoint (``--epochs`` changed) or of an older map format in the
    demo's own output folder is rebuilt in place; anything else at ``path`` that is not a map
    is left alone (an error).
    """
    from camreloc_ros.core.evaluation.map_eval import open_map
    from camreloc_ros.core.localization.map_file import MapError
    from camreloc_ros.tools import map as map_tool

    overwrite = False
    if path.exists():
        try:
            open_map(path, ckpt)
            logger.info(f'reusing {path} (built for {ckpt})')
            return path
        except MapError as exc:
            stale = 'does not belong' in str(exc)
            if not stale and 'has version' not in str(exc):
                raise
            logger.info(f'{path} ' + ('belongs to an earlier checkpoint' if stale else
                                      'is of an older map format') + ': rebuilding it')
            overwrite = True
    t0 = time.monotonic()
    map_tool.main({'format': 'posed', 'overwrite': overwrite},
                  {'model': ckpt, 'data': data, 'out': path}, log=logger.info)
    logger.info(f'map built in {time.monotonic() - t0:.0f} s')
    return path


DEMO_IMAGE_TOPIC = '/camera/image_raw/compressed'
DEMO_GT_TOPIC = '/ground_truth/pose'


def demo_live(ckpt: str | Path, data: str | Path, out_dir: str | Path) -> Path:
    """``make demo`` step 3: held-out frames -> JPEG bag -> live node -> offline vs live table.

    The node runs as a separate process (``camreloc node``) in a private ROS domain on this
    host; images go to it in lock-step (the next one once the previous pose came back), so
    every frame is localized whatever the CPU's speed.
    """
    from camreloc_ros.tools import bag_eval, bag_from_dataset

    ckpt, out = Path(ckpt).resolve(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bag = bag_from_dataset.main({'format': 'posed', 'split': 'test', **DEMO_SPLIT,
                                 'compressed': True, 'rate': 10.0, 'overwrite': True},
                                {'data': data, 'out': out / 'heldout_bag'})
    domain = allocate_domain()    # no other run on this host (tests, benchmarks) holds it
    env = {'ROS_DOMAIN_ID': str(domain), 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
           'ROS_LOG_DIR': os.environ.get('ROS_LOG_DIR') or str(out / 'ros_log')}
    root = str(Path(__file__).resolve().parents[2])
    child_env = dict(os.environ, **env)
    child_env['PYTHONPATH'] = os.pathsep.join(
        p for p in (root, os.environ.get('PYTHONPATH')) if p)
    command = [sys.executable, '-m', 'camreloc_ros.tools.cli', 'node', '--ros-args',
               '-p', f'model:={ckpt}', '-p', 'input:=compressed', '-p', 'device:=cpu',
               '-p', 'qos.reliability:=reliable', '-r', f'image/compressed:={DEMO_IMAGE_TOPIC}',
               '-p', 'base_frame:=camera']   # the bag's images are in 'camera': its poses
    log_path = out / 'node.log'
    logger.info(f'starting the localizer node (ROS_DOMAIN_ID={domain}, log {log_path})')
    stop = threading.Event()
    with open(log_path, 'w') as log, scoped_environ(env):
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env)
        watcher = threading.Thread(target=lambda: (proc.wait(), stop.set()), daemon=True)
        watcher.start()
        try:
            conf = {'image_topic': DEMO_IMAGE_TOPIC, 'gt_topic': DEMO_GT_TOPIC, 'live': True,
                    'lockstep': True, 'rate_factor': 1.0, 'max_idle': 0.5, 'wait_node': 120.0,
                    'device': 'cpu', 'title': 'offline'}
            try:
                bag_eval.main(conf, {'bag': bag, 'checkpoint': ckpt, 'out': out}, stop=stop)
            except RuntimeError as exc:
                if proc.poll() is not None:
                    tail = log_path.read_text()[-2000:]
                    raise RuntimeError(f'{exc}; the node exited with {proc.returncode}:\n'
                                       f'{tail}') from None
                raise
        finally:
            code = stop_process(proc)
    logger.info(f'localizer node stopped (exit code {code})')
    return out


# ----------------------------------------------------------------------------- summary

def _read_json(path: Path) -> dict:
    """Return a JSON file's content, or an empty dict when a step did not write it."""
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return {}


def _medians(summary: dict | None) -> dict:
    """``{'position_m': median, 'orientation_deg': median}`` of a summarize() result."""
    summary = summary or {}
    return {k: (summary.get(k) or {}).get('median') for k in ('position_m', 'orientation_deg')}


def demo_summary(out: Path, steps_s: dict) -> dict:
    """Collect the demo's headline numbers from the files its steps wrote under ``out``.

    Reads ``eval/map_summary.json`` (network, retrieval, oracle and refined rows, the refined
    share, the map's build time), ``map.npz``'s size and ``live/live/{summary,bag_eval}.json``
    (the live poses and how many images got one). ``steps_s``: seconds per step, measured by
    :func:`main`. A missing file leaves its numbers None (``-`` in the table).
    """
    from camreloc_ros.core.evaluation.baselines import NETWORK_ROW, ORACLE_ROW, RETRIEVAL_ROW
    from camreloc_ros.core.evaluation.map_eval import REFINED_ROW

    msum = _read_json(out / 'eval' / 'map_summary.json')
    rows = msum.get('rows') or {}
    methods = {label: _medians(rows.get(key)) for label, key in (
        ('network', NETWORK_ROW), ('retrieval top-1', RETRIEVAL_ROW), ('oracle', ORACLE_ROW),
        ('refined', REFINED_ROW))}
    live_eval = _read_json(out / 'live' / 'live' / 'bag_eval.json')
    methods['live node'] = _medians(
        _read_json(out / 'live' / 'live' / 'summary.json').get('summary'))
    images, received = live_eval.get('images'), live_eval.get('received')
    stats = msum.get('map_meta') or {}
    build = [stats.get(k) for k in ('seconds_features', 'seconds_points')]
    map_file = out / 'map.npz'
    return {
        'methods': methods,
        'refined_share': (msum.get('shares') or {}).get('refined'),
        'live': {'images': images, 'received': received,
                 'answered': received / images if images and received is not None else None},
        'map': {'mb': map_file.stat().st_size / 1e6 if map_file.is_file() else None,
                'build_s': sum(build) if None not in build else None},
        'steps_s': dict(steps_s),
    }


def _num(value: float | None, digits: int) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def format_summary(summary: dict) -> str:
    """Format the demo's closing table (markdown) and three lines: live share, map, steps.

    ``summary`` as :func:`demo_summary` returns it; None values print as ``-``.
    """
    header = ('method', 'median pos (m)', 'median rot (deg)')
    cells = [(name, _num(m.get('position_m'), 3), _num(m.get('orientation_deg'), 2))
             for name, m in summary['methods'].items()]
    widths = [max(len(r[i]) for r in [header] + cells) for i in range(3)]

    def row(r: tuple) -> str:
        return '| ' + ' | '.join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))) + ' |'

    rule = '|:' + '-' * (widths[0] + 1) + '|' + '|'.join('-' * (w + 1) + ':'
                                                         for w in widths[1:]) + '|'
    live, lmap = summary['live'], summary['map']
    share = summary.get('refined_share')
    answered = live.get('answered')
    lines = ['demo summary: median errors on the held-out blocks', row(header), rule]
    lines += [row(r) for r in cells]
    lines.append(f'live node: answered {_num(None if answered is None else 100 * answered, 1)} % '
                 f'of the images ({live.get("received", "-")} of {live.get("images", "-")})')
    lines.append(f'map: {_num(lmap.get("mb"), 1)} MB, built in {_num(lmap.get("build_s"), 0)} s; '
                 f'refined {_num(None if share is None else 100 * share, 1)} % of the frames')
    steps = summary['steps_s']
    total = sum(v for v in steps.values() if v is not None)
    lines.append('steps: ' + ', '.join(f'{k} {_num(v, 0)} s' for k, v in steps.items())
                 + f' (total {total:.0f} s)')
    return '\n'.join(lines) + '\n'


def main(conf: dict, paths: dict) -> Path:
    """Run the demo; ``paths``: ``data`` (posed dataset) and ``out``. Returns ``out``."""
    from camreloc_ros.tools import evaluate, train

    tool_logging()
    data, out = Path(paths['data']), Path(paths['out'])
    if not data.is_dir():
        raise FileNotFoundError(f'demo data {data} not found; expected the shared HoloLens '
                                'walk (../shared/data/hololens-office) or --data DIR')
    t0 = time.monotonic()
    steps = {}
    run = out / 'train'
    ckpt = run / 'last.pt'
    epochs = conf['train']['epochs']
    _banner(f'1/4 training on {data} ({epochs} epochs; resumes if interrupted)')
    train.main(conf, {'data': data, 'out': run}, resume=True)
    steps['train'] = time.monotonic() - t0
    _banner('2/4 localization map of the training frames (SIFT, triangulated: RGB only)')
    map_path = demo_map(ckpt, data, out / 'map.npz')
    steps['map'] = time.monotonic() - t0 - sum(steps.values())
    _banner('3/4 evaluating the last epoch on the held-out blocks: network vs refined')
    eval_dir = evaluate.main({'format': 'posed', 'split': 'test'},
                             {'checkpoint': ckpt, 'data': data, 'out': out / 'eval',
                              'map': map_path})
    steps['evaluate'] = time.monotonic() - t0 - sum(steps.values())
    _banner('4/4 held-out frames -> rosbag -> live node -> scores')
    live = demo_live(ckpt, data, out / 'live')
    steps['live'] = time.monotonic() - t0 - sum(steps.values())
    _banner(f'done in {(time.monotonic() - t0) / 60:.1f} min')
    logger.info(f'  checkpoint:      {ckpt}')
    logger.info(f'  offline results: {eval_dir} (results.md, per_frame.txt, '
                'trajectory_topdown.png, error_cdf.png, *_tum.txt)')
    logger.info(f'  refined poses:   {eval_dir / "map_results.md"} (map {map_path}; '
                "refined/ holds the refined row's files)")
    logger.info(f'  live results:    {live}')
    table = format_summary(demo_summary(out, steps))
    atomic_write_text(out / 'demo_summary.md', table)
    print(table, end='')   # the product: always printed, last
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``camreloc demo``."""
    parser.add_argument('--data', default=str(DEFAULT_DATA), help='posed dataset folder')
    parser.add_argument('--out', default='runs/demo', help='output folder')
    parser.add_argument('--epochs', type=int, default=DEMO_TRAIN['train']['epochs'],
                        help='training epochs (default %(default)s)')


def from_args(args: argparse.Namespace) -> Path:
    """Run from parsed command-line arguments."""
    from camreloc_ros.core.training.trainer import train_conf
    conf = train_conf(DEMO_TRAIN)
    conf['train']['epochs'] = args.epochs
    return main(conf, {'data': args.data, 'out': args.out})
