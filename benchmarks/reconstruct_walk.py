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

"""Structure from motion on the shared HoloLens walk: global vs incremental mapping.

The walk's images go through ``camreloc reconstruct``'s pipeline (:mod:`camreloc_ros.core.sfm`:
SIFT, sequential + retrieval pairs, matching) once, then through each mapper (and each seed)
on the same database. Every model is scored against the walk's own poses (the headset's
tracking, used here only to evaluate): camera centres after a least-squares similarity fit,
median / RMSE / max, and after the odometry fit that ``reconstruct`` itself makes (the poses
as odometry), the rotation of the map frame against the truth. Wall and CPU seconds per
stage: the two cores are shared, so the CPU seconds are the stable number.
-> the section "Measured on the HoloLens walk" of docs/mapping.md.
"""

import argparse
import json
from pathlib import Path
import shutil
import sys

import numpy as np

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.evaluation.metrics import atomic_write_text, markdown_table
from camreloc_ros.core.sfm import pipeline
from camreloc_ros.core.sfm.output import c2w
from camreloc_ros.core.sfm.scale import centre_errors, fit_odometry
from camreloc_ros.tools.common import scoped_environ, shared_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtimes import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir() / 'hololens-office'
START, END = '<!-- reconstruct-walk:start -->', '<!-- reconstruct-walk:end -->'


def score(result, truth: dict) -> dict:
    """Score a model: registered share, statistics, camera centre errors against ``truth``."""
    rec = result.reconstruction
    names = result.registered
    by_name = {im.name: im for im in rec.images.values()}
    src = np.array([c2w(by_name[n])[:3, 3] for n in names])
    tgt = np.array([truth[n][:3, 3] for n in names])
    out = dict(pipeline.model_stats(rec), images=len(result.names),
               centres=centre_errors(src, tgt), other_models=result.other_models)
    try:
        fit = fit_odometry(rec, truth, max_error_m=0.3, min_inliers=0.0)
    except ValueError:
        out['odometry_fit'] = {'rotation_median_deg': float('nan')}
        return out
    rot = []
    for n in names:
        got = fit.rotation @ c2w(by_name[n])[:3, :3]
        cos = (np.trace(got.T @ truth[n][:3, :3]) - 1) / 2
        rot.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    out['odometry_fit'] = dict(fit.residual, rotation_median_deg=float(np.median(rot)))
    return out


def run(names: list, work: Path, conf: dict, mappers: list, seeds: list, truth: dict,
        intrinsics) -> dict:
    """Match once; map with every (mapper, seed) on a copy of the database; score each."""
    clock = pipeline.Stopwatch()
    matched = pipeline.match_images(DATA / 'images', names, work, conf, intrinsics,
                                    log=print, clock=clock)
    runs = {}
    for mapper in mappers:
        for seed in seeds:
            key = f'{mapper}, seed {seed}'
            folder = work / f'{mapper}_{seed}'
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            db = folder / 'database.db'
            shutil.copy(matched.database, db)
            copy = pipeline.Matched(db, matched.image_dir, matched.names, matched.fixed,
                                    matched.pairs)
            mclock = pipeline.Stopwatch()
            try:
                result = pipeline.map_images(copy, folder / 'models',
                                             dict(conf, mapper=mapper, seed=seed), log=print,
                                             clock=mclock)
            except ValueError as exc:
                runs[key] = {'error': str(exc)}
                continue
            runs[key] = dict(score(result, truth), seconds=mclock.wall['map'],
                             cpu_seconds=mclock.cpu['map'])
            print(key, json.dumps(runs[key]['centres']), flush=True)
    return {'stages': {'wall': clock.wall, 'cpu': clock.cpu}, 'pairs': matched.pairs,
            'runs': runs}


def table(result: dict) -> str:
    """Tabulate one row per (mapper, seed): registered, model, accuracy, mapping time."""
    rows = []
    for key, r in result['runs'].items():
        if 'error' in r:
            rows.append([key, 'failed', '', '', '', '', '', '', ''])
            continue
        c, o = r['centres'], r['odometry_fit']
        rows.append([key, f'{r["registered"]}/{r["images"]}'
                     + (f' (+{r["other_models"]})' if r['other_models'] else ''),
                     str(r['points']), f'{r["mean_track_length"]:.2f}',
                     f'{r["mean_reprojection_error_px"]:.2f}',
                     f'{100 * c["median"]:.1f} / {100 * c["rmse"]:.1f} / {100 * c["max"]:.1f}',
                     f'{o["rotation_median_deg"]:.2f}',
                     f'{r["seconds"]:.0f}', f'{r["cpu_seconds"]:.0f}'])
    return markdown_table(['mapper', 'registered', 'points', 'track length', 'reproj. (px)',
                           'centres median / RMSE / max (cm)', 'frame rot. (deg)', 'map s',
                           'map CPU s'], rows)


def main(argv: list[str] | None = None) -> str:
    """Reconstruct the walk with each mapper; print and write the docs section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--every', type=int, nargs='+', default=[1],
                        help='subsampling(s) of the walk to measure (every N-th frame)')
    parser.add_argument('--mappers', nargs='+', default=list(pipeline.MAPPERS))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    parser.add_argument('--retrieval', type=int, default=pipeline.default_conf['retrieval'])
    parser.add_argument('--limit', type=int, default=None, help='first N frames only')
    parser.add_argument('--out', type=Path, default=ROOT / 'runs' / 'reconstruct_walk')
    parser.add_argument('--doc', type=Path, default=ROOT / 'docs' / 'mapping.md')
    args = parser.parse_args(argv)
    argv_used = [a for a in (sys.argv[1:] if argv is None else argv)
                 if not a.startswith(('--out', '--doc')) and '/' not in a]
    where = machine()
    data = read_dataset(DATA, 'posed')
    frames = data.frames[:args.limit]
    truth = {f.image_path.name: f.pose_c2w for f in frames}
    conf = dict(pipeline.default_conf, retrieval=args.retrieval)
    parts, doc_json = [], {}
    for every in args.every:
        names = [f.image_path.name for f in frames[::every]]
        work = args.out / f'every{every}'
        shutil.rmtree(work, ignore_errors=True)
        # a fresh cache: the retrieval descriptors are computed, not read from an earlier run
        with scoped_environ({'CAMRELOC_CACHE_DIR': str(work / 'cache')}):
            result = run(names, work, conf, args.mappers, args.seeds, truth, data.intrinsics)
        doc_json[f'every{every}'] = result
        st = result['stages']
        n = len(names)
        stages = ', '.join(f'{k} {v:.0f} s wall / {st["cpu"][k]:.0f} s CPU'
                           for k, v in st['wall'].items())
        p = result['pairs']
        parts.append(f'**Every {"" if every == 1 else f"{every}th "}frame ({n} images):** '
                     f'{p["pairs"]} pairs ({p["sequential"]} sequential, {p["retrieval"]} by '
                     f'retrieval), {p["verified"]} verified. Shared stages: {stages} '
                     f'({sum(st["cpu"].values()) / n:.2f} CPU s per image).\n\n'
                     + table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / 'results.json', json.dumps(doc_json, indent=1, default=float))
    section = f'''{START}
## Measured on the HoloLens walk

Measured {where}. Intrinsics from `K.txt` (held fixed), SIFT {conf['max_features']} keypoints,
overlap {conf['overlap']}, retrieval top {conf['retrieval']}, the walk's poses used only to
score: camera centres after a least-squares similarity fit (median / RMSE / max), and the
median rotation error of the cameras after `reconstruct`'s own odometry fit with the poses
as odometry ("frame rot."). Mapping time per run; the extraction and matching are shared by
all runs of a row group.

{chr(10).join(parts)}
Regenerate: `.venv/bin/python benchmarks/reconstruct_walk.py {' '.join(argv_used)}`.
{END}
'''
    write_section(args.doc, section, START, END)
    print(section)
    return section


if __name__ == '__main__':
    main()
