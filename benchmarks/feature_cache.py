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

"""One training epoch with the frozen-feature cache vs running the frozen trunk every epoch.

Same frames (real HoloLens images), same model and batch size, measured in one run; the
cache is built before timing (it is a one-off cost, printed separately).
"""

import argparse
from pathlib import Path
import tempfile
import time

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.training.trainer import Trainer
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'


def epoch_seconds(frames, cache: bool, stages: int, cache_dir: str) -> tuple[float, float]:
    """Return set-up seconds and the faster of two epochs' seconds."""
    conf = {'model': {'backbone': {'trainable_stages': stages}},
            'train': {'cache': cache, 'cache_dir': cache_dir, 'batch_size': 16}}
    t0 = time.perf_counter()
    trainer = Trainer(conf, frames, [], Path(cache_dir) / f'run-{cache}-{stages}',
                      log=lambda s: None, progress_bars=False)
    trainer._source('train')
    setup = time.perf_counter() - t0
    times = [trainer.train_epoch()['seconds'] for _ in range(2)]
    return setup, min(times)


def main(argv: list[str] | None = None) -> str:
    """Print (and return) the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--frames', type=int, default=96)
    parser.add_argument('--stages', type=int, nargs='*', default=[0, 1, 3])
    args = parser.parse_args(argv)
    frames = split_dataset(read_dataset(DATA, 'posed'), 'train').frames[:args.frames]
    rows = ['| trainable stages | frames | epoch, trunk every epoch (s) | epoch, cached (s) '
            '| speed-up | cache build (s) |', '|---|---|---|---|---|---|']
    with tempfile.TemporaryDirectory() as tmp:
        for stages in args.stages:
            _, slow = epoch_seconds(frames, False, stages, tmp)
            build, fast = epoch_seconds(frames, True, stages, tmp)
            rows.append(f'| {stages} | {len(frames)} | {slow:.2f} | {fast:.3f} | '
                        f'{slow / fast:.1f}x | {build:.1f} |')
            print(rows[-1], flush=True)
    table = '\n'.join(rows)
    print('\n' + table)
    return table


if __name__ == '__main__':
    main()
