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
its map.
"""

import argparse
import logging
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time

from camreloc_ros.core.data.split import SPLIT_DEFAULTS
from camreloc_ros.ros.domain import allocate_domain
from camreloc_ros.tools.common import scoped_environ, shared_data_dir, tool_logging

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

    A map of an earlier checkpoint in the demo's own output folder (``--epochs`` changed) is
    rebuilt in place; anything else at ``path`` that is not a map is left alone (an error).
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
            if 'does not belong' not in str(exc):
                raise
            logger.info(f'{path} belongs to an earlier checkpoint: rebuilding it')
            overwrite = True
    t0 = time.monotonic()
    map_tool.main({'format': 'posed', 'overwrite': overwrite},
                  {'model': ckpt, 'data': data, 'out': path}, log=logger.info)
    logger.info(f'map built in {time.monotonic() - t0:.0f} s')
    return path


DEMO_IMAGE_TOPIC = '/camera/image_raw/compressed'
DEMO_GT_TOPIC = '/ground_truth/pose'


def _stop_process(proc: subprocess.Popen, timeout_s: float = 15.0) -> int:
    """SIGINT (rclpy shuts down cleanly), then SIGTERM, then SIGKILL."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


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
            code = _stop_process(proc)
    logger.info(f'localizer node stopped (exit code {code})')
    return out


def main(conf: dict, paths: dict) -> Path:
    """Run the demo; ``paths``: ``data`` (posed dataset) and ``out``. Returns ``out``."""
    from camreloc_ros.tools import evaluate, train

    tool_logging()
    data, out = Path(paths['data']), Path(paths['out'])
    if not data.is_dir():
        raise FileNotFoundError(f'demo data {data} not found; expected the shared HoloLens '
                                'walk (../shared/data/hololens-office) or --data DIR')
    t0 = time.monotonic()
    run = out / 'train'
    ckpt = run / 'last.pt'
    epochs = conf['train']['epochs']
    _banner(f'1/4 training on {data} ({epochs} epochs; resumes if interrupted)')
    train.main(conf, {'data': data, 'out': run}, resume=True)
    _banner('2/4 localization map of the training frames (SIFT, triangulated: RGB only)')
    map_path = demo_map(ckpt, data, out / 'map.npz')
    _banner('3/4 evaluating the last epoch on the held-out blocks: network vs refined')
    eval_dir = evaluate.main({'format': 'posed', 'split': 'test'},
                             {'checkpoint': ckpt, 'data': data, 'out': out / 'eval',
                              'map': map_path})
    _banner('4/4 held-out frames -> rosbag -> live node -> scores')
    live = demo_live(ckpt, data, out / 'live')
    _banner(f'done in {(time.monotonic() - t0) / 60:.1f} min')
    logger.info(f'  checkpoint:      {ckpt}')
    logger.info(f'  offline results: {eval_dir} (results.md, per_frame.txt, '
                'trajectory_topdown.png, error_cdf.png, *_tum.txt)')
    logger.info(f'  refined poses:   {eval_dir / "map_results.md"} (map {map_path}; '
                "refined/ holds the refined row's files)")
    logger.info(f'  live results:    {live}')
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
