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

"""The geometric tracker's time per frame and accuracy on the HoloLens walk, one thread.

Issue #20 budgets tracking at <= 15 ms per VGA frame on one core. For each stretch (seed
frame ``s``), a triangulated map is built from frames ``s-5, s-3, ... s+25`` (every other
frame: the seed is not in the map, half of the tracked frames are), the tracker is seeded
from ground truth at ``s`` (2D-3D pairs matched against the map at that pose, as a
refinement's inliers) and tracks the next ``--steps`` frames. Run at the walk's own size
(540x360) and upscaled to 640x480 (VGA, K scaled per axis), with ``cv2.setNumThreads(1)``.
Times are the tracker's own (``TrackResult.times``: KLT both ways, PnP + covariance,
re-seeding), not the image decoding; ratios between rows are what to compare, since this
machine's speed varies 2-3x from day to day. A failed frame counts in the times and is
reported; the tracker then keeps its tracks (``max_failures``).
"""

import argparse
from pathlib import Path
import sys

import cv2
import numpy as np

from camreloc_ros.core.config import parse_overrides
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.evaluation.metrics import atomic_write_text
from camreloc_ros.core.localization.build import build_map
from camreloc_ros.core.localization.tracker import map_correspondences, motion_error, Tracker
from camreloc_ros.tools.common import shared_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtimes import machine  # noqa: E402

HOLO = shared_data_dir() / 'hololens-office'
SIZES = {'native 540x360': None, 'VGA 640x480 (upscaled)': (640, 480)}


class FlatDescriptor:
    """Constant global descriptor: tracking never retrieves, so no network runs here."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Return the same unit vector for every image."""
        v = np.zeros(8, np.float32)
        v[0] = 1.0
        return v

    def conf(self) -> dict:
        """Return the descriptor settings a map records."""
        return {'input_shorter_side': 64, 'mean': [0.0] * 3, 'std': [1.0] * 3, 'dim': 8}


def run_stretch(frames, K_33, lmap, seed: int, steps: int, size,
                conf: dict | None = None) -> list[dict]:
    """Track ``steps`` frames after ``seed``; one dict per frame (ok, times, errors)."""
    K = K_33.copy()

    def load(f):
        image = read_rgb(f.image_path)
        return image if size is None else cv2.resize(image, size,
                                                     interpolation=cv2.INTER_LINEAR)
    image = load(frames[seed])
    if size is not None:
        K[0] *= size[0] / 540.0
        K[1] *= size[1] / 360.0
    xy_n2, pts_n3 = map_correspondences(lmap, image, frames[seed].pose_c2w, K)
    tracker = Tracker(lmap, conf)
    tracker.seed(image, 0.0, frames[seed].pose_c2w, xy_n2, pts_n3, K)
    in_map = set(lmap.names)
    rows = []
    for n in range(1, steps + 1):
        f = frames[seed + n]
        res = tracker.track(load(f), n / 30.0, K)
        d_m, d_deg = motion_error(res.T_c2w_44, f.pose_c2w) if res.ok else (np.nan, np.nan)
        rows.append({'ok': res.ok, 'reason': res.reason, 'in_map': f.name in in_map,
                     'pos': d_m, 'rot': d_deg, 'inliers': res.inliers,
                     **{k: v * 1e3 for k, v in res.times.items()}})
    return rows


def table(results: dict, steps: int, seeds: list[int]) -> str:
    """Markdown: one row per image size."""
    lines = [f'{machine()}; stretches seeded at frames {seeds}, {steps} frames each, '
             'one thread', '',
             '| size | tracked | ms median | ms p90 | ms max | KLT / PnP / re-seed ms '
             '(median) | inliers (median) | position median / p90 / max | rotation median / '
             'max | median: frames in the map / not |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for name, rows in results.items():
        ok = [r for r in rows if r['ok']]
        tot = np.array([r['total'] for r in rows])
        pos = np.array([r['pos'] for r in ok]) * 100
        rot = np.array([r['rot'] for r in ok])

        def med(key):
            return np.median([r.get(key, 0.0) for r in ok]) if ok else np.nan
        in_m = np.median([r['pos'] for r in ok if r['in_map']] or [np.nan]) * 100
        out_m = np.median([r['pos'] for r in ok if not r['in_map']] or [np.nan]) * 100
        lines.append(
            f'| {name} | {len(ok)} / {len(rows)} | {np.median(tot):.1f} | '
            f'{np.percentile(tot, 90):.1f} | {tot.max():.1f} | {med("klt"):.1f} / '
            f'{med("pnp"):.1f} / {med("reseed"):.1f} | {med("inliers"):.0f} | '
            f'{np.median(pos):.1f} / {np.percentile(pos, 90):.1f} / {pos.max():.1f} cm | '
            f'{np.median(rot):.2f} / {rot.max():.2f} deg | {in_m:.1f} / {out_m:.1f} cm |')
    fails = sorted({r['reason'] for rows in results.values() for r in rows if not r['ok']})
    if fails:
        lines += ['', 'failures: ' + '; '.join(fails)]
    return '\n'.join(lines)


def main(argv=None) -> int:
    """Build the stretches' maps, track at both sizes, print (and write) the table."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', default='20,50,100,290',
                    help='first frame of each stretch (comma separated)')
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--out', type=Path, help='also write the table here (markdown)')
    ap.add_argument('overrides', nargs='*', metavar='KEY=VALUE',
                    help='tracker settings, e.g. max_points=150 klt.window=13')
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    seeds = [int(s) for s in args.seeds.split(',')]
    conf = parse_overrides(args.overrides)
    dataset = read_dataset(HOLO, 'posed')
    frames, K = dataset.frames, dataset.intrinsics.matrix()
    results = {name: [] for name in SIZES}
    for s in seeds:
        lmap = build_map(frames[s - 5:s + 27:2], dataset.intrinsics, FlatDescriptor(),
                         {'sift': {'max_keypoints': 2048}}, log=lambda t: None)
        for name, size in SIZES.items():
            results[name] += run_stretch(frames, K, lmap, s, args.steps, size, conf)
    text = table(results, args.steps, seeds)
    if conf:
        text = f'tracker settings: {" ".join(args.overrides)}\n\n' + text
    print(text)
    if args.out:
        atomic_write_text(args.out, text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
