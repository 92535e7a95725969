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

"""Per-frame time of the scene-coordinate head (network + PnP) against the Regressor's forward.

Issue 23 asks that the default's forward + any PnP stay within 1.5x of today's forward. One
run, interleaved rounds (each measurement once per round, the least of a few calls kept), and
ratios as medians of per-round ratios, so a busy moment of the shared CPU hits both sides:

* ``regressor torch``: ``InferenceEngine.predict`` of the Regressor checkpoint, eager torch;
* ``regressor onnx``: the same on ONNX Runtime (what the live node runs by default);
* ``scr network``: the scr trunk stages + per-pixel head (eager torch; no ONNX export yet);
* ``scr network + PnP``: ``InferenceEngine.predict`` of the scr checkpoint (the whole pose).

All at batch 1 on one thread, preprocessed input reused (the preprocessing is the same for
both and timed elsewhere: benchmarks/forward.py).

    PYTHONPATH=. .venv/bin/python benchmarks/scr_forward.py --scr runs/scr/best.pt
        [--regressor runs/demo/train/best.pt] [--rounds 15]
"""

import argparse
import os
from pathlib import Path
import statistics
import time

import numpy as np
import torch

from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.tools.common import shared_data_dir


def _least(fn, calls: int = 3) -> float:
    best = float('inf')
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    """Time both heads and print the table with the load average."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scr', type=Path, required=True, help='scr checkpoint')
    parser.add_argument('--regressor', type=Path, default=Path('runs/demo/train/best.pt'))
    parser.add_argument('--rounds', type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    image = read_rgb(sorted((shared_data_dir() / 'hololens-office' / 'images').iterdir())[10])
    engines = {
        'regressor torch': InferenceEngine.from_checkpoint(args.regressor, threads=1),
        'regressor onnx': InferenceEngine.from_checkpoint(args.regressor, runtime='onnx',
                                                          threads=1),
        'scr': InferenceEngine.from_checkpoint(args.scr, threads=1),
    }
    scr = engines['scr']
    scr.pre(image, out=scr._input[0])
    runs = {
        'regressor torch': lambda: engines['regressor torch'].predict(image),
        'regressor onnx': lambda: engines['regressor onnx'].predict(image),
        'scr network': lambda: scr.runtime.coordinates(scr._input),
        'scr network + PnP': lambda: scr.predict(image),
    }
    for fn in runs.values():   # warm-up
        fn()
    times = {k: [] for k in runs}
    load0 = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(_least(fn))
    load1 = os.getloadavg()[0]
    base = times['regressor torch']
    print(f'load average {load0:.2f} -> {load1:.2f}, {args.rounds} rounds, 1 thread, '
          f'{torch.__version__}, inliers of the timed frame {scr.last_inliers}')
    print('| per frame | median ms | ratio to regressor torch | ratio to regressor onnx |')
    print('|---|---|---|---|')
    for name, ts in times.items():
        r_t = statistics.median(np.array(ts) / np.array(base))
        r_o = statistics.median(np.array(ts) / np.array(times['regressor onnx']))
        print(f'| {name} | {1000 * statistics.median(ts):.1f} | {r_t:.2f} | {r_o:.2f} |')


if __name__ == '__main__':
    main()
