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
2. evaluate the last epoch on the held-out blocks: thesis table, per-frame file, plots,
3. write the held-out frames into a rosbag, play it through the live node over real ROS 2,
   and score the live poses next to the offline ones.

Outputs go to ``--out`` (default ``runs/demo``); a second run reuses the trained model.
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


def main(conf: dict, paths: dict) -> Path:
    """Run the demo; ``paths``: ``data`` (posed dataset) and ``out``. Returns ``out``."""
    from camreloc_ros.tools import bag_eval, evaluate, train

    tool_logging()
    data, out = Path(paths['data']), Path(paths['out'])
    if not data.is_dir():
        raise FileNotFoundError(f'demo data {data} not found; expected the shared HoloLens '
                                'walk (../shared/data/hololens-office) or --data DIR')
    t0 = time.monotonic()
    run = out / 'train'
    ckpt = run / 'last.pt'
    epochs = conf['train']['epochs']
    _banner(f'1/3 training on {data} ({epochs} epochs; resumes if interrupted)')
    train.main(conf, {'data': data, 'out': run}, resume=True)
    _banner('2/3 evaluating the last epoch on the held-out blocks')
    eval_dir = evaluate.main({'format': 'posed', 'split': 'test'},
                             {'checkpoint': ckpt, 'data': data, 'out': out / 'eval'})
    _banner('3/3 held-out frames -> rosbag -> live node -> scores')
    live = bag_eval.demo_live(ckpt, data, out / 'live')
    _banner(f'done in {(time.monotonic() - t0) / 60:.1f} min')
    logger.info(f'  checkpoint:      {ckpt}')
    logger.info(f'  offline results: {eval_dir} (results.md, per_frame.txt, '
                'trajectory_topdown.png, error_cdf.png, *_tum.txt)')
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
    from camreloc_ros.core.training import train_conf
    conf = train_conf(DEMO_TRAIN)
    conf['train']['epochs'] = args.epochs
    return main(conf, {'data': args.data, 'out': args.out})
