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

"""The no-ground-truth walk-through (docs/walkthrough.md) on the whole HoloLens walk.

A recording with no ground truth: the walk's 298 training-block frames written as a robot
records them (``bag-from-dataset --split train --odometry drift --no-ground-truth``: JPEG
images, camera_info, odometry that drifts 2 % of the distance). Then, as the walk-through
types them: ``reconstruct`` (poses, metric scale and frame from the odometry), ``train`` on
the reconstruction (every recorded frame, validation blocks inside it), ``map
--reconstruction``. The 75 held-out frames were never recorded, reconstructed, trained on or
mapped. They are scored against the walk's own poses through a similarity fitted on the
recorded frames only (the map's frame is the odometry's): the network, retrieval top-1 (the
map's own descriptor), the oracle nearest recorded pose and the refined pose.

``--live`` then plays the held-out frames to the node (``benchmarks/live_map.py --data``):
for that the walk's poses are written, moved into the map's frame by the inverse of the
same similarity, as a posed folder beside the run (``aligned/``).

Every step is cached in ``--work`` and reused when present (delete it to rerun).
"""

import argparse
import json
import os
from pathlib import Path
import sys
import time

os.environ.setdefault('OMP_NUM_THREADS', '2')

import numpy as np  # noqa: E402

from camreloc_ros.core.data.formats import read_dataset  # noqa: E402
from camreloc_ros.core.data.split import split_dataset  # noqa: E402
from camreloc_ros.core.data.transforms import read_rgb  # noqa: E402
from camreloc_ros.core.evaluation.metrics import format_table, pose_errors, summarize  # noqa
from camreloc_ros.core.geometry import matrix_from_pose, pose_from_matrix  # noqa: E402
from camreloc_ros.core.sfm.scale import similarity  # noqa: E402
from camreloc_ros.tools.common import shared_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOLO = shared_data_dir() / 'hololens-office'
TOPIC = '/camera/image_raw/compressed'
ALL = {'block': 10 ** 6, 'every': 2}   # one block: every recorded frame is a training frame


def _moved(T_n44: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Apply the similarity ``x -> s R x + t`` to camera poses ``(N, 4, 4)``."""
    out = np.array(T_n44, np.float64, copy=True)
    out[:, :3, :3] = R @ out[:, :3, :3]
    out[:, :3, 3] = s * out[:, :3, 3] @ R.T + t
    return out


def _step(label: str, done: bool) -> bool:
    print(f'== {label}' + (' (cached)' if done else ''), file=sys.stderr, flush=True)
    return not done


def run_pipeline(work: Path, every: str, seed: int) -> dict:
    """Bag -> reconstruct -> train -> map, each once; return paths and seconds per step."""
    from camreloc_ros.core.training.trainer import train_conf
    from camreloc_ros.tools import bag_from_dataset, map as map_tool, reconstruct, train

    paths = {'bag': work / 'walk', 'scene': work / 'scene', 'run': work / 'run',
             'map': work / 'map.npz'}
    seconds = {}
    t = time.perf_counter()
    if _step('bag-from-dataset', paths['bag'].exists()):
        bag_from_dataset.main({'format': 'posed', 'split': 'train', 'compressed': True,
                               'odometry': 'drift', 'odometry_seed': seed,
                               'ground_truth': False}, {'data': HOLO, 'out': paths['bag']})
        seconds['bag'] = time.perf_counter() - t
    t = time.perf_counter()
    if _step('reconstruct', paths['scene'].exists()):
        reconstruct.main({'image_topic': TOPIC, 'odom_topic': '/odom', 'every': every},
                         {'bag': paths['bag'], 'out': paths['scene']})
        seconds['reconstruct'] = time.perf_counter() - t
    t = time.perf_counter()
    if _step('train', (paths['run'] / 'last.pt').is_file()):
        train.main(train_conf({'data': {'format': 'posed', **ALL}}),
                   {'data': paths['scene'], 'out': paths['run']}, progress_bars=False)
        seconds['train'] = time.perf_counter() - t
    t = time.perf_counter()
    if _step('map --reconstruction', paths['map'].is_file()):
        map_tool.main(dict(ALL), {'model': paths['run'] / 'last.pt',
                                  'reconstruction': paths['scene'], 'out': paths['map']})
        seconds['map'] = time.perf_counter() - t
    return {'paths': paths, 'seconds': seconds}


def fit_frame(scene: Path) -> dict:
    """Similarity from the reconstruction's frame to the walk's, on the recorded frames only."""
    walk = read_dataset(HOLO, 'posed')
    recorded = split_dataset(walk, 'train').frames          # the bag's frames, in its order
    rec = read_dataset(scene, 'posed')
    positions = json.loads((scene / 'reconstruct.json').read_text())['input']['positions']
    by_name = {f'{k:06d}': recorded[k] for k in positions}
    truth = np.stack([by_name[f.name].pose_c2w for f in rec.frames])
    mine = np.stack([f.pose_c2w for f in rec.frames])
    s, R, t = similarity(mine[:, :3, 3], truth[:, :3, 3])
    moved = _moved(mine, s, R, t)
    res = np.linalg.norm(moved[:, :3, 3] - truth[:, :3, 3], axis=1)
    raw = np.linalg.norm(mine[:, :3, 3] - truth[:, :3, 3], axis=1)
    return {'s': s, 'R': R, 't': t, 'registered': len(rec.frames),
            'recorded': len(recorded), 'keyframes': len(positions),
            'residual_median_m': float(np.median(res)),
            'residual_rmse_m': float(np.sqrt(np.mean(res ** 2))),
            'residual_max_m': float(res.max()), 'unaligned_median_m': float(np.median(raw)),
            'walk': walk, 'poses_map': moved}


def score_held_out(paths: dict, frame: dict) -> dict:
    """Network, retrieval top-1, oracle and refined poses of the held-out frames, in metres."""
    from camreloc_ros.core.evaluation.baselines import oracle_indices
    from camreloc_ros.core.inference.engine import InferenceEngine
    from camreloc_ros.core.localization.map_file import load_map
    from camreloc_ros.core.localization.refiner import map_descriptor, Refiner

    test = split_dataset(frame['walk'], 'test').frames
    gp, gq = pose_from_matrix(np.stack([f.pose_c2w for f in test]))
    engine = InferenceEngine.from_checkpoint(paths['run'] / 'last.pt', runtime='torch',
                                             device='cpu')
    lmap = load_map(paths['map'])
    refiner = Refiner(lmap, map_descriptor(lmap, None), {})
    s, R, t = frame['s'], frame['R'], frame['t']
    recorded = frame['poses_map']                    # the recorded frames, walk frame
    rows = {'network': [], 'retrieval top-1': [], 'refined (or network)': []}
    refined = []
    for f in test:
        image = read_rgb(f.image_path)
        pred = engine.predict(image)
        res = refiner.refine(image, pred.position, pred.quaternion, pred.covariance)
        top = refiner.retrieve(image, 1)[0][0]
        rows['network'].append(matrix_from_pose(pred.position, pred.quaternion))
        rows['retrieval top-1'].append(lmap.poses_c2w[top])
        rows['refined (or network)'].append(res.pose_c2w)
        refined.append(bool(res.refined))
    out = {}
    for name, poses in rows.items():
        p, q = pose_from_matrix(_moved(np.stack(poses), s, R, t))
        out[name] = pose_errors(p, q, gp, gq)
    # the oracle: the recorded frame nearest to the truth (metres + degrees / 10, as
    # evaluate's): a perfect retrieval
    near = oracle_indices(recorded, gp, gq)
    out['oracle nearest recorded pose'] = pose_errors(*pose_from_matrix(recorded[near]), gp, gq)
    ok = np.array(refined)
    pe, re = out['refined (or network)']
    out['refined frames only'] = (pe[ok], re[ok])
    return {'errors': out, 'refined_share': float(ok.mean()), 'n': len(test)}


def write_aligned(work: Path, frame: dict) -> Path:
    """Write the walk's frames with poses in the map's frame (what ``live_map --data`` plays)."""
    from camreloc_ros.core.io import atomic_write_text

    out = work / 'aligned'
    (out / 'images').mkdir(parents=True, exist_ok=True)
    s, R, t = frame['s'], frame['R'], frame['t']
    inv = (1.0 / s, R.T, -R.T @ t / s)
    poses = _moved(np.stack([f.pose_c2w for f in frame['walk'].frames]), *inv)
    for f in frame['walk'].frames:
        link = out / 'images' / f.image_path.name
        if not link.exists():
            link.symlink_to(f.image_path.resolve())
    atomic_write_text(out / 'poses.txt', ''.join(
        ' '.join(f'{v:.9f}' for v in T.ravel()) + '\n' for T in poses))
    atomic_write_text(out / 'K.txt', (HOLO / 'K.txt').read_text())
    return out


def main(argv: list | None = None) -> int:
    """Run the walk-through once, print its reconstruction fit and held-out table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work', type=Path, default=ROOT / 'runs' / 'walkthrough')
    parser.add_argument('--every', default='1', help="reconstruct's --every (default 1)")
    parser.add_argument('--seed', type=int, default=0, help='odometry drift seed')
    parser.add_argument('--live', action='store_true',
                        help='then play the held-out frames to the node (live_map.py --data)')
    parser.add_argument('--capture-hz', default='10', help='live: capture rate (live_map)')
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pipe = run_pipeline(args.work, args.every, args.seed)
    frame = fit_frame(pipe['paths']['scene'])
    scores = score_held_out(pipe['paths'], frame)
    rows = {name: summarize(*errs) for name, errs in scores['errors'].items()}
    print(f'recorded {frame["recorded"]} frames, {frame["keyframes"]} keyframes, '
          f'{frame["registered"]} registered; map frame = odometry frame: recorded centres '
          f'{100 * frame["unaligned_median_m"]:.1f} cm (median) from the walk as they are, '
          f'{100 * frame["residual_median_m"]:.1f} cm (RMSE '
          f'{100 * frame["residual_rmse_m"]:.1f}, max {100 * frame["residual_max_m"]:.1f}) '
          f'after the similarity (scale {frame["s"]:.4f})')
    print('seconds per step (this run; cached steps absent): '
          + ', '.join(f'{k} {v:.0f}' for k, v in pipe['seconds'].items())
          + f'; load {open("/proc/loadavg").read().split()[:3]}')
    print(f'{scores["n"]} held-out frames, refined {100 * scores["refined_share"]:.1f} %:')
    print(format_table(rows))
    aligned = write_aligned(args.work, frame)
    print(f'walk poses in the map frame: {aligned} ({time.perf_counter() - t0:.0f} s in all)')
    if args.live:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import live_map   # noqa: I100 - the sibling benchmark
        return live_map.main(['--dataset', 'hololens', '--model',
                              str(pipe['paths']['run'] / 'last.pt'), '--map',
                              str(pipe['paths']['map']), '--data', str(aligned),
                              '--capture-hz', args.capture_hz, '--work',
                              str(args.work / 'live'), '--seed', str(args.seed)])
    return 0


if __name__ == '__main__':
    sys.exit(main())
