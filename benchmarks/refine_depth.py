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

"""The depth-map refiner on the only 7-Scenes-layout data here: leave one frame out.

``../shared/data/7scenes-stairs-mini`` has 12 frames (4 sequences of 3) with Kinect depth.
For each frame, a depth map is built from the 11 others (``build_map``, points lifted from
depth) and the frame is refined against it, with the pose of a frame of another sequence as
the prior (a coarse network pose). It measures the depth path's accuracy where the views
overlap; it is **not** the 1000-frame 7-Scenes benchmark the issue compares with (no full
scene can be downloaded here), and a frame's own sequence neighbours stay in its map, which
makes it easier than an official split. Prints a table; ``--out`` also writes it as markdown.
"""

import argparse
from pathlib import Path
import sys
import time

import numpy as np

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.evaluation.metrics import atomic_write_text, pose_errors
from camreloc_ros.core.geometry import pose_from_matrix
from camreloc_ros.core.localization.build import build_map
from camreloc_ros.core.localization.retrieval import GlobalDescriptor
from camreloc_ros.core.models.pose_model import build_model
from camreloc_ros.core.localization.refiner import Refiner
from camreloc_ros.tools.common import shared_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtimes import machine  # noqa: E402

MINI = shared_data_dir() / '7scenes-stairs-mini'


def leave_one_out(log=print) -> list[dict]:
    """Refine each frame against a depth map of the other eleven; one row per frame."""
    dataset = read_dataset(MINI, '7scenes')
    frames = sorted(dataset.frames, key=lambda f: f.name)
    # retrieval needs only the ImageNet trunk: an untrained head changes nothing here
    desc = GlobalDescriptor(build_model('posenet', head={'width': 64}))
    rows = []
    for query in frames:
        others = [f for f in frames if f is not query]
        t0 = time.perf_counter()
        lmap = build_map(others, dataset.intrinsics, desc, log=lambda s: None)
        build_s = time.perf_counter() - t0
        sequence = query.name.split('/')[0]
        prior = next(f for f in others if not f.name.startswith(sequence))
        prior_pos, prior_quat = pose_from_matrix(prior.pose_c2w)
        res = Refiner(lmap, desc).refine(read_rgb(query.image_path), prior_pos, prior_quat)
        gp, gq = pose_from_matrix(query.pose_c2w)
        pos_err, rot_err = pose_errors(res.position[None], res.quaternion[None], gp[None],
                                       gq[None])
        rows.append({'name': query.name, 'refined': bool(res.refined), 'reason': res.reason,
                     'inliers': int(res.inliers), 'pos_m': float(pos_err[0]),
                     'rot_deg': float(rot_err[0]), 'refine_s': float(res.times['total']),
                     'build_s': build_s, 'points': len(lmap.points)})
        log(f'{query.name}: refined={res.refined} inliers={res.inliers} '
            f'{pos_err[0]:.4f} m {rot_err[0]:.3f} deg ({res.reason})')
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: per-frame rows, then the medians of the refined frames."""
    lines = ['| frame | refined | inliers | position error (m) | rotation error (deg) |',
             '|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["name"]} | {"yes" if r["refined"] else "no: " + r["reason"]} | '
                     f'{r["inliers"]} | {r["pos_m"]:.4f} | {r["rot_deg"]:.3f} |')
    ok = [r for r in rows if r['refined']]
    med = (f'{np.median([r["pos_m"] for r in ok]):.4f} m / '
           f'{np.median([r["rot_deg"] for r in ok]):.3f} deg' if ok else 'none refined')
    return ('\n'.join(lines) + f'\n\nRefined {len(ok)} of {len(rows)} frames; median of the '
            f'refined frames: {med}; refiner median {np.median([r["refine_s"] for r in rows]):.2f}'
            f' s per frame, map of 11 frames built in median '
            f'{np.median([r["build_s"] for r in rows]):.1f} s '
            f'({int(np.median([r["points"] for r in rows]))} points).\n'
            f'Measured on {machine()}.\n')


def main(argv: list[str] | None = None) -> str:
    """Run the leave-one-out and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', type=Path, help='also write the table here (markdown)')
    args = parser.parse_args(argv)
    text = table(leave_one_out())
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return text


if __name__ == '__main__':
    main()
