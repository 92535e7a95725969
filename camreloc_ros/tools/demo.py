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
   and score the live poses next to the offline ones.

Outputs go to ``--out`` (default ``runs/demo``); a second run reuses the trained model and
its map.
"""

import argparse
import logging
from pathlib import Path
import time

from camreloc_ros.tools.common import shared_data_dir, tool_logging

logger = logging.getLogger('camreloc_ros')

DEFAULT_DATA = shared_data_dir() / 'hololens-office'

DEMO_TRAIN = {
    'model': {'head': {'name': 'regressor'}},
    'loss': {'name': 'qeh'},
    'train': {'epochs': 60},
    'data': {'format': 'posed', 'block': 25, 'every': 4},
}


def _banner(text: str) -> None:
    logger.info(f'\n=== {text}')


def demo_map(ckpt: Path, data: Path, path: Path) -> Path:
    """Build the map of ``ckpt``'s training frames; reuse one that belongs to ``ckpt``.

    A map of an earlier checkpoint in the demo's own output folder (``--epochs`` changed) is
    rebuilt in place; anything else at ``path`` that is not a map is left alone (an error).
    """
    from camreloc_ros.core.localization.map_file import MapError
    from camreloc_ros.tools import map as map_tool

    overwrite = False
    if path.exists():
        try:
            map_tool.open_map(path, ckpt)
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


def main(conf: dict, paths: dict) -> Path:
    """Run the demo; ``paths``: ``data`` (posed dataset) and ``out``. Returns ``out``."""
    from camreloc_ros.tools import bag_live, evaluate, train

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
    live = bag_live.demo_live(ckpt, data, out / 'live')
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
