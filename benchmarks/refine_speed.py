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

"""The refiner on one core (issue 21): matchers, stages, and the map's size, one table.

On the HoloLens walk's held-out frames (the map and checkpoint of ``make demo``, or
``--map`` / ``--model``), with OpenCV, BLAS and ONNX Runtime on one thread:

* the matchers on the refiner's own candidate sets (the points the retrieved and prior map
  images see, query budget ``refine.max_keypoints`` 1024): exact BLAS product (what the
  refiner runs), faiss' flat and HNSW indices when faiss is installed (it is not pinned),
  OpenCV FLANN kd-trees; time and recall of the exact product's ratio-test matches;
* the refiner per frame, stage by stage, as ``evaluate --map`` runs it (network prior and
  retrieval), as the live node runs it once localized (the held pose picks the map images,
  no retrieval), and with the query at half resolution; refined share and median error;
* the map: bytes per 1000 images without the descriptor network, points, observations.

Ratios between rows are what to compare: this machine's speed varies 2-3x between days.
"""

import argparse
import os
from pathlib import Path
import sys
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')          # BLAS on one thread, before numpy
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from camreloc_ros.core.data.formats import read_dataset  # noqa: E402
from camreloc_ros.core.data.split import split_dataset  # noqa: E402
from camreloc_ros.core.data.transforms import read_rgb  # noqa: E402
from camreloc_ros.core.evaluation.metrics import (load_per_frame,  # noqa: E402
                                                  markdown_table, pose_errors)
from camreloc_ros.core.geometry import pose_from_matrix  # noqa: E402
from camreloc_ros.core.localization.map_file import load_map  # noqa: E402
from camreloc_ros.core.localization.refiner import (map_descriptor,  # noqa: E402
                                                    pose_neighbours, Refiner)
from camreloc_ros.core.localization.sift import (extract_sift, match_descriptors,  # noqa: E402
                                                 root_sift)
from camreloc_ros.tools.common import shared_data_dir  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtimes import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir() / 'hololens-office'


def _ratio(dist2_n2: np.ndarray, idx_n2: np.ndarray, ratio: float) -> tuple:
    d = np.sqrt(np.maximum(dist2_n2, 0.0))
    ok = (idx_n2[:, 1] >= 0) & (d[:, 0] < ratio * d[:, 1])
    return np.flatnonzero(ok), idx_n2[ok, 0]


def matcher_rows(lmap, queries: list, ratio: float = 0.8) -> list:
    """Time and recall of each matcher on the refiner's candidate sets."""
    try:
        import faiss
        faiss.omp_set_num_threads(1)
    except ImportError:
        faiss = None
    times: dict = {}
    recall: dict = {}
    hnsw = None
    if faiss is not None:
        hnsw = faiss.IndexHNSWFlat(128, 16)
        hnsw.add(lmap.point_roots(np.arange(len(lmap.points))))
        hnsw.hnsw.efSearch = 64
    for q, chosen in queries:
        cand = lmap.image_points(chosen)
        D = lmap.point_roots(cand)
        t = time.perf_counter()
        qi, ci = match_descriptors(q, D, ratio)
        times.setdefault('exact BLAS product (refiner)', []).append(time.perf_counter() - t)
        recall.setdefault('exact BLAS product (refiner)', []).append(1.0)
        truth = set(zip(qi.tolist(), cand[ci].tolist()))

        def score(name, a, pid, t0):
            times.setdefault(name, []).append(time.perf_counter() - t0)
            found = set(zip(a.tolist(), np.asarray(pid).tolist()))
            recall.setdefault(name, []).append(len(truth & found) / max(len(truth), 1))

        for checks in (32, 128):
            t = time.perf_counter()
            knn = cv2.FlannBasedMatcher({'algorithm': 1, 'trees': 4},
                                        {'checks': checks}).knnMatch(q, D, k=2)
            dd = np.array([[m[0].distance ** 2, m[1].distance ** 2] if len(m) == 2
                           else [0.0, 0.0] for m in knn]).reshape(-1, 2)
            ii = np.array([[m[0].trainIdx, m[1].trainIdx] if len(m) == 2 else [-1, -1]
                           for m in knn]).reshape(-1, 2)
            a, b = _ratio(dd, ii, ratio)
            score(f'OpenCV FLANN, 4 kd-trees, {checks} checks', a, cand[b], t)
        if faiss is not None:
            t = time.perf_counter()
            flat = faiss.IndexFlatL2(128)
            flat.add(D)
            a, b = _ratio(*flat.search(q, 2), ratio)
            score('faiss flat (exact)', a, cand[b], t)
            t = time.perf_counter()
            a, b = _ratio(*hnsw.search(q, 2), ratio)
            score('faiss HNSW over the whole map (no retrieval)', a, b, t)
    rows = [{'matcher': k, 'median ms': f'{1000 * np.median(v):.1f}',
             'recall of exact matches': f'{100 * np.mean(recall[k]):.1f} %'}
            for k, v in times.items()]
    if faiss is None:
        rows.append({'matcher': 'faiss', 'median ms': 'not installed',
                     'recall of exact matches': '-'})
    return rows


def refiner_rows(lmap, desc, images, net, gp, gq) -> list:
    """Time the refiner per frame, stage by stage, in the ways it runs."""
    rows = []
    half = dict((lmap.meta.get('conf') or {}).get('sift') or {})
    half['max_side'] = max(images[0].shape[:2]) // 2
    settings = [
        ('evaluate --map (network prior + retrieval), 4096 keypoints', {}, 'net'),
        ('live budget 1024 keypoints, network prior + retrieval', {'max_keypoints': 1024},
         'net'),
        ('live once localized: held pose picks the images, no retrieval',
         {'max_keypoints': 1024}, 'held'),
        ('as above, query SIFT at half resolution', {'max_keypoints': 1024, 'sift': half},
         'held'),
    ]
    for label, conf, prior in settings:
        ref = Refiner(lmap, desc, conf)
        out = []
        for k, im in enumerate(images):
            if prior == 'net':
                out.append(ref.refine(im, net['position'][k], net['quaternion'][k]))
            else:   # the pose a localized node holds: centimetres off (ground truth here)
                near = pose_neighbours(lmap.poses_c2w, gp[k], gq[k], conf.get(
                    'top_k_retrieval', ref.conf['top_k_retrieval']))
                out.append(ref.refine(im, gp[k], gq[k], retrieval=near))
        ok = np.array([r.refined for r in out])
        pos, rot = pose_errors(np.stack([r.position for r in out]),
                               np.stack([r.quaternion for r in out]), gp, gq)
        t = {k: 1000 * np.median([r.times[k] for r in out]) for k in out[0].times}
        rows.append({'refiner': label, 'refined': f'{100 * ok.mean():.1f} %',
                     'median (refined)': f'{np.median(pos[ok]):.3f} m / {np.median(rot[ok]):.2f}°',
                     **{f'{k} ms': f'{v:.0f}' for k, v in t.items()}})
        print(rows[-1], flush=True)
    return rows


def map_rows(lmap) -> list:
    """Size of the map per 1000 images, and what it holds."""
    size = lmap.path.stat().st_size
    net = len(lmap.descriptor_onnx or b'')
    stats = lmap.meta.get('stats', {})
    return [{'map': str(lmap.path), 'images': len(lmap), 'points': len(lmap.points),
             'observations': len(lmap.obs_point),
             'mean views per point': f'{lmap.visibility().mean():.2f}',
             'MB per 1000 images (without the network)':
                 f'{(size - net) / len(lmap) * 1000 / 1e6:.1f}',
             'descriptor network MB': f'{net / 1e6:.1f}',
             'build s per image': f'{stats.get("seconds_total", float("nan")) / len(lmap):.3f}'}]


def format_table(rows: list) -> str:
    """Rows (dicts with the same keys) as a markdown table."""
    return markdown_table(list(rows[0]), [[str(v) for v in r.values()] for r in rows])


def main(argv: list | None = None) -> str:
    """Print the three tables."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--map', type=Path, default=ROOT / 'runs' / 'demo' / 'map.npz')
    parser.add_argument('--per-frame', type=Path,
                        default=ROOT / 'runs' / 'demo' / 'eval' / 'per_frame.txt',
                        help="the network's poses of the test frames (evaluate's per_frame.txt)")
    parser.add_argument('--every', type=int, default=1, help='every n-th test frame')
    args = parser.parse_args(argv)
    if not args.map.is_file() or not args.per_frame.is_file():
        raise SystemExit(f'{args.map} or {args.per_frame} missing: run `make demo` first (or '
                         'give --map and --per-frame)')
    cv2.setNumThreads(1)
    lmap = load_map(args.map)
    test = split_dataset(read_dataset(DATA, 'posed'), 'test').frames
    net = load_per_frame(args.per_frame)
    if net['names'] != [f.name for f in test]:
        raise SystemExit(f'{args.per_frame} is not of the HoloLens walk test frames')
    sel = slice(None, None, args.every)
    test = test[sel]
    net = {k: v[sel] for k, v in net.items() if k in ('position', 'quaternion')}
    gp, gq = pose_from_matrix(np.stack([f.pose_c2w for f in test]))
    desc = map_descriptor(lmap, None, threads=1)
    images = [read_rgb(f.image_path) for f in test]
    sift = dict((lmap.meta.get('conf') or {}).get('sift') or {}, max_keypoints=1024)
    ref = Refiner(lmap, desc, {})
    queries = []
    for k, im in enumerate(images):
        _, d = extract_sift(im, sift)
        order = list(ref.retrieve(im, ref.conf['top_k_retrieval'])[0])
        order += [int(i) for i in pose_neighbours(lmap.poses_c2w, net['position'][k],
                                                  net['quaternion'][k], 3) if i not in order]
        queries.append((root_sift(d), order))
    text = '\n\n'.join([
        f'Measured {machine()}; {len(images)} HoloLens test frames; one thread.',
        format_table(map_rows(lmap)),
        format_table(matcher_rows(lmap, queries)),
        format_table(refiner_rows(lmap, desc, images, net, gp, gq))])
    print(text)
    return text


if __name__ == '__main__':
    main()
