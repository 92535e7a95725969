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

"""A map grown by a second session against one built at once (issue 22, part 5).

On the HoloLens walk: the training side (298 frames) is cut into its 25-frame blocks k (the
held-out test blocks are k % 4 == 3); the map of blocks k % 4 in (0, 1) (A) is built with
ground-truth poses (``camreloc map``), then extended with the images of blocks k % 4 == 2
(B, each just before a test block) given as a plain folder, no poses
(``camreloc map --extend``). Reported: the share of B that registered, their poses against
the ground truth, the time per image, and the 75 held-out frames refined with the same
network priors (``make demo``'s ``eval/per_frame.txt``) against the map of A, the extended
map, and the map of all 298 frames with ground-truth poses (``make demo``'s
``runs/demo/map.npz``), each beside its retrieval top-1 and its oracle nearest map image.
Nothing here is tuned: the extension runs with its defaults.
"""

import argparse
import os
from pathlib import Path
import shutil
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402

from camreloc_ros.core.data.formats import read_dataset  # noqa: E402
from camreloc_ros.core.data.split import split_dataset  # noqa: E402
from camreloc_ros.core.data.transforms import read_rgb  # noqa: E402
from camreloc_ros.core.evaluation.metrics import load_per_frame, pose_errors  # noqa: E402
from camreloc_ros.core.geometry import matrix_from_pose, pose_from_matrix  # noqa: E402
from camreloc_ros.core.localization.map_file import load_map  # noqa: E402
from camreloc_ros.core.localization.refiner import (map_descriptor, pose_neighbours,  # noqa: E402
                                                    Refiner)
from camreloc_ros.tools import map as map_tool  # noqa: E402
from camreloc_ros.tools.common import shared_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOLO = shared_data_dir() / 'hololens-office'
BLOCK = 25


def _posed(dst: Path, frames: list, poses: bool) -> Path:
    (dst / 'images').mkdir(parents=True, exist_ok=True)
    for f in frames:
        shutil.copy2(f.image_path, dst / 'images' / f.image_path.name)
    if poses:
        rows = [' '.join(f'{v:.17g}' for v in f.pose_c2w.reshape(-1)) for f in frames]
        (dst / 'poses.txt').write_text('\n'.join(rows) + '\n')
    shutil.copy2(HOLO / 'K.txt', dst / 'K.txt')
    return dst


def _row(label: str, ok: np.ndarray, p: np.ndarray, r: np.ndarray) -> str:
    sel = ok if ok.any() else np.zeros(len(p), bool)
    med = (f'{np.median(p[sel]):.3f} m / {np.median(r[sel]):.2f}°' if sel.any() else '-')
    return (f'| {label} | {100 * ok.mean():.1f} % | {med} | {int((p[sel] > 0.25).sum())} |')


def main(argv: list | None = None) -> None:
    """Build the map of blocks A, extend it with blocks B, refine the held-out frames; print."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work', type=Path, default=ROOT / 'runs' / 'extend_map')
    parser.add_argument('--model', type=Path, default=ROOT / 'runs' / 'demo' / 'train' / 'last.pt')
    parser.add_argument('--gt-map', type=Path, default=ROOT / 'runs' / 'demo' / 'map.npz')
    parser.add_argument('--per-frame', type=Path,
                        default=ROOT / 'runs' / 'demo' / 'eval' / 'per_frame.txt')
    args = parser.parse_args(argv)
    full = read_dataset(HOLO, 'posed')
    gt = {f.image_path.name: f.pose_c2w for f in full.frames}
    train = split_dataset(full, 'train').frames
    # test blocks are every 4th (k % 4 == 3); B = the blocks just before them, A = the rest
    blocks_a = [f for f in train if (f.index // BLOCK) % 4 in (0, 1)]
    blocks_b = [f for f in train if (f.index // BLOCK) % 4 == 2]
    print(f'training side {len(train)} frames: blocks A {len(blocks_a)}, blocks B '
          f'{len(blocks_b)}')
    base, grown = args.work / 'map_a.npz', args.work / 'map_a_plus_b.npz'
    if not base.is_file():
        data = _posed(args.work / 'blocks_a', blocks_a, poses=True)
        t0 = time.perf_counter()
        map_tool.main({'calibration': {'enabled': False}, 'block': 10 ** 6, 'every': 2},
                      {'model': args.model, 'data': data, 'out': base})
        print(f'map of A built in {time.perf_counter() - t0:.0f} s')
    if grown.exists():
        grown.unlink()
    session = _posed(args.work / 'blocks_b', blocks_b, poses=False)
    t0 = time.perf_counter()
    map_tool.main({}, {'extend': base, 'data': session, 'out': grown})
    wall = time.perf_counter() - t0
    lmap = load_map(grown)
    record = lmap.meta['sessions'][-1]
    n_base = len(load_map(base))
    err = np.array([np.linalg.norm(lmap.poses_c2w[i, :3, 3]
                                   - gt[lmap.names[i].split('/', 1)[1]][:3, 3])
                    for i in range(n_base, len(lmap))])
    print(f'registered {record["registered"]} of {record["images"]} '
          f'({100 * record["registered"] / record["images"]:.1f} %), {wall:.0f} s '
          f'({wall / record["images"]:.2f} s per image; per round '
          f'{record["registered_per_round"]}); registered centres '
          f'vs ground truth: median {np.median(err):.3f} m, max {err.max():.3f} m; '
          f'{record["existing_points_extended"]} map points seen again, '
          f'{record["points_added"]} new; errors over 5 cm: '
          f'{np.round(np.sort(err[err > 0.05]), 3).tolist()}')
    rounds = {r['name']: r['round'] for r in record['registrations']}
    for k in sorted(set(rounds.values())):
        e = err[[rounds[lmap.names[i].split('/', 1)[1]] == k for i in range(n_base, len(lmap))]]
        print(f'  round {k}: {len(e)} registered, centre error median {np.median(e):.3f} m, '
              f'max {e.max():.3f} m')
    for item in record['left_out']:
        print(f'  left out {item["name"]}: {item["reason"]}')
    test = split_dataset(full, 'test').frames
    net = load_per_frame(args.per_frame)
    gp, gq = pose_from_matrix(np.stack([f.pose_c2w for f in test]))
    images = [read_rgb(f.image_path) for f in test]
    print('| map: pose from | with a pose | median | > 25 cm |\n|---|---|---|---|')
    for label, path in (('blocks A', base), ('blocks A + B registered (--extend)', grown),
                        ('all training frames, ground-truth poses', args.gt_map)):
        m = load_map(path)
        ref = Refiner(m, map_descriptor(m, None), {})
        refined, top1, oracle, ok = [], [], [], []
        for k, im in enumerate(images):
            T = matrix_from_pose(net['position'][k], net['quaternion'][k])
            order, _ = ref.retrieve(im, 1)
            top1.append(m.poses_c2w[int(order[0])])
            oracle.append(m.poses_c2w[int(pose_neighbours(m.poses_c2w, gp[k], gq[k], 1)[0])])
            r = ref.refine(im, *pose_from_matrix(T))
            refined.append(r.pose_c2w)
            ok.append(r.refined)
        ok = np.array(ok)
        every = np.ones(len(ok), bool)
        for what, poses, mask in (('retrieval top-1', top1, every),
                                  ('oracle: nearest map image', oracle, every),
                                  ('refined', refined, ok)):
            p_err, r_err = pose_errors(*pose_from_matrix(np.stack(poses)), gp, gq)
            print(_row(f'{label} ({len(m)} images, {len(m.points)} points): {what}',
                       mask, p_err, r_err), flush=True)


if __name__ == '__main__':
    main()
