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

"""A map from a reconstruction against a map from ground-truth poses (issue 22, part 3).

On the HoloLens walk: the 298 training-side frames are reconstructed with no poses
(``camreloc reconstruct --images``, ``K.txt`` held fixed, scale from one measured distance),
the map is built from the model's points and tracks (``camreloc map --reconstruction``), and
the 75 held-out frames are refined against it and against the map of the same frames with
ground-truth poses (``make demo``'s ``runs/demo/map.npz``), with the same network priors
(``make demo``'s ``eval/per_frame.txt``). The reconstruction's frame is brought to the ground
truth by a similarity fitted on the training frames only; no test frame is in the
reconstruction.
"""

import argparse
import os
from pathlib import Path
import shutil

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402

from camreloc_ros.core.data.formats import read_dataset  # noqa: E402
from camreloc_ros.core.data.split import split_dataset  # noqa: E402
from camreloc_ros.core.data.transforms import read_rgb  # noqa: E402
from camreloc_ros.core.evaluation.metrics import load_per_frame, pose_errors  # noqa: E402
from camreloc_ros.core.geometry import matrix_from_pose, pose_from_matrix  # noqa: E402
from camreloc_ros.core.localization.map_file import load_map  # noqa: E402
from camreloc_ros.core.localization.refiner import map_descriptor, Refiner  # noqa: E402
from camreloc_ros.core.sfm.scale import similarity  # noqa: E402
from camreloc_ros.tools import map as map_tool, reconstruct  # noqa: E402
from camreloc_ros.tools.common import shared_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOLO = shared_data_dir() / 'hololens-office'


def _moved(T_44: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = R @ T_44[:3, :3]
    out[:3, 3] = s * R @ T_44[:3, 3] + t
    return out


def main(argv: list | None = None) -> None:
    """Reconstruct (or reuse), map, refine the held-out frames against both maps; print."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work', type=Path, default=ROOT / 'runs' / 'reconstruct_map')
    parser.add_argument('--model', type=Path, default=ROOT / 'runs' / 'demo' / 'train' / 'last.pt')
    parser.add_argument('--gt-map', type=Path, default=ROOT / 'runs' / 'demo' / 'map.npz')
    parser.add_argument('--per-frame', type=Path,
                        default=ROOT / 'runs' / 'demo' / 'eval' / 'per_frame.txt')
    args = parser.parse_args(argv)
    full = read_dataset(HOLO, 'posed')
    gt = {f.name: f.pose_c2w for f in full.frames}
    train = split_dataset(full, 'train').frames
    folder, rec_dir = args.work / 'images_only', args.work / 'reconstruction'
    if not rec_dir.is_dir():
        (folder / 'images').mkdir(parents=True, exist_ok=True)
        for f in train:
            shutil.copy2(f.image_path, folder / 'images' / f.image_path.name)
        shutil.copy2(HOLO / 'K.txt', folder / 'K.txt')
        a, b = train[0], train[len(train) // 2]
        d = float(np.linalg.norm(a.pose_c2w[:3, 3] - b.pose_c2w[:3, 3]))
        reconstruct.main({'distance': [a.image_path.name, b.image_path.name, d]},
                         {'images': folder, 'out': rec_dir})
    rec = read_dataset(rec_dir, 'posed')
    s, R, t = similarity(np.array([f.pose_c2w[:3, 3] for f in rec.frames]),
                         np.array([gt[f.name][:3, 3] for f in rec.frames]))
    fit = np.linalg.norm(np.array([_moved(f.pose_c2w, s, R, t)[:3, 3] - gt[f.name][:3, 3]
                                   for f in rec.frames]), axis=1)
    print(f'registered {len(rec.frames)} of {len(train)}; similarity on the training frames: '
          f'scale {s:.4f}, centres median {np.median(fit):.3f} m, max {fit.max():.3f} m')
    rec_map = args.work / 'map.npz'
    if not rec_map.is_file():
        map_tool.main({'calibration': {'enabled': False}, 'block': 10 ** 6, 'every': 2},
                      {'model': args.model, 'reconstruction': rec_dir, 'out': rec_map})
    test = split_dataset(full, 'test').frames
    net = load_per_frame(args.per_frame)
    gp, gq = pose_from_matrix(np.stack([f.pose_c2w for f in test]))
    images = [read_rgb(f.image_path) for f in test]
    inv = (1.0 / s, R.T, -R.T @ t / s)
    results = {}
    for label, path, frame in (('ground-truth poses, triangulated', args.gt_map, None),
                               ('reconstruction points and tracks', rec_map, (s, R, t))):
        lmap = load_map(path)
        ref = Refiner(lmap, map_descriptor(lmap, None), {})
        poses, ok = [], []
        for k, im in enumerate(images):
            T = matrix_from_pose(net['position'][k], net['quaternion'][k])
            if frame is not None:
                T = _moved(T, *inv)
            r = ref.refine(im, *pose_from_matrix(T))
            T = r.pose_c2w if frame is None else _moved(r.pose_c2w, *frame)
            poses.append(T)
            ok.append(r.refined)
        ok = np.array(ok)
        p_err, r_err = pose_errors(*pose_from_matrix(np.stack(poses)), gp, gq)
        results[label] = (ok, p_err, r_err)
        print(f'| {label} | {len(lmap.points)} | {100 * ok.mean():.1f} % | '
              f'{np.median(p_err[ok]):.3f} m / {np.median(r_err[ok]):.2f} deg | '
              f'{int((p_err[ok] > 0.25).sum())} |', flush=True)
    (a_ok, a_p, _), (b_ok, b_p, _) = results.values()
    both = a_ok & b_ok
    print(f'on the {int(both.sum())} frames both refine: {np.median(b_p[both]):.3f} vs '
          f'{np.median(a_p[both]):.3f} m, {np.median(b_p[both]) / np.median(a_p[both]):.2f}x')


if __name__ == '__main__':
    main()
