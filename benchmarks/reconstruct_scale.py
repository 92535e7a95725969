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

"""How far ``camreloc reconstruct`` goes on one machine: time and memory against image count.

``camreloc reconstruct --images`` (the defaults: SIFT 4096, overlap 10, retrieval top 5,
global mapper, ``K.txt`` held fixed, scale from one distance) runs on the first N frames of
the HoloLens walk for several N, each in its own process under ``/usr/bin/time -v``: wall and
CPU seconds per stage (from ``reconstruct.json``), the peak resident memory of the process,
and the size of the COLMAP database on disk. A power law ``a N^b`` fitted per stage over
the sizes says which stage grows faster than linearly; docs/mapping.md ("How far one machine
goes") extrapolates from it, with the caveat that three sizes of one walk are not a hangar.
"""

import argparse
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.tools.common import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
HOLO = shared_data_dir() / 'hololens-office'
STAGES = ('extract', 'retrieval', 'match', 'map')


def run_one(n: int, work: Path) -> dict:
    """Reconstruct the first ``n`` walk frames in a child process; return its measurements."""
    frames = read_dataset(HOLO, 'posed').frames[:n]
    folder = work / f'images_{n}'
    (folder / 'images').mkdir(parents=True, exist_ok=True)
    for f in frames:
        target = folder / 'images' / f.image_path.name
        if not target.exists():
            shutil.copy2(f.image_path, target)
    shutil.copy2(HOLO / 'K.txt', folder / 'K.txt')
    a, b = frames[0], frames[-1]
    dist = float(np.linalg.norm(a.pose_c2w[:3, 3] - b.pose_c2w[:3, 3]))
    out = work / f'rec_{n}'
    if out.exists():
        shutil.rmtree(out)
    cmd = ['/usr/bin/time', '-v', sys.executable, '-m', 'camreloc_ros.tools.cli', 'reconstruct',
           '--images', str(folder), '--out', str(out), '--distance', a.image_path.name,
           b.image_path.name, f'{dist:.4f}']
    env = dict(os.environ, TMPDIR=str(work))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f'reconstruct of {n} images failed:\n{proc.stderr[-3000:]}')
    peak_kb = int(re.search(r'Maximum resident set size \(kbytes\): (\d+)', proc.stderr)[1])
    doc = json.loads((out / 'reconstruct.json').read_text())
    return {'images': n, 'registered': doc['stats']['registered'],
            'points': doc['stats']['points'], 'seconds': doc['seconds'],
            'cpu_seconds': doc.get('cpu_seconds') or {}, 'peak_rss_mb': peak_kb / 1024.0,
            'pairs': doc.get('pairs')}


def power_law(ns: list, values: list) -> tuple[float, float]:
    """Fit ``value = a n^b`` by least squares in log-log: ``(a, b)``."""
    b, log_a = np.polyfit(np.log(ns), np.log(np.maximum(values, 1e-9)), 1)
    return float(np.exp(log_a)), float(b)


def main(argv: list | None = None) -> int:
    """Measure each size, print the table and the per-stage power laws."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[75, 150, 300])
    parser.add_argument('--work', type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix='reconstruct_scale_'))
    work.mkdir(parents=True, exist_ok=True)
    load = open('/proc/loadavg').read().split()[:3]
    rows = []
    for n in args.sizes:
        print(f'== {n} images', file=sys.stderr, flush=True)
        rows.append(run_one(n, work))
    print(f'load average at the start {load}, at the end '
          f'{open("/proc/loadavg").read().split()[:3]}')
    print('| images | registered | points | ' + ' | '.join(f'{s} s' for s in STAGES)
          + ' | total s | s per image | peak RSS (MB) |')
    print('|' + '---|' * (len(STAGES) + 6))
    for r in rows:
        sec = r['seconds']
        total = sum(sec.get(s, 0.0) for s in STAGES)
        print(f'| {r["images"]} | {r["registered"]} | {r["points"]} | '
              + ' | '.join(f'{sec.get(s, 0.0):.0f}' for s in STAGES)
              + f' | {total:.0f} | {total / r["images"]:.2f} | {r["peak_rss_mb"]:.0f} |')
    ns = [r['images'] for r in rows]
    if len(ns) >= 2:
        for key in STAGES:
            a, b = power_law(ns, [r['seconds'].get(key, 0.0) for r in rows])
            print(f'{key}: {a:.3g} N^{b:.2f} s -> 1000 images {a * 1000 ** b:.0f} s, '
                  f'10000 images {a * 10000 ** b:.0f} s')
        a, b = power_law(ns, [r['peak_rss_mb'] for r in rows])
        print(f'peak RSS: {a:.3g} N^{b:.2f} MB -> 1000 images {a * 1000 ** b:.0f} MB, '
              f'10000 images {a * 10000 ** b:.0f} MB')
    print(json.dumps(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
