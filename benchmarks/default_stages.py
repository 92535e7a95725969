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

"""Find the default with the best accuracy per minute on a CPU: 1, 2 or 3 trainable stages.

The default model (EfficientNet-Lite0 + Regressor, QEH) trains on the HoloLens walk with the
default split (validation = held-out blocks of the training side) for each number of
trainable trunk stages. Each run is trained in segments (``--at``, e.g. 20, 40, 60 epochs),
resuming from ``last.pt``; resuming is exact (no LR schedule, seeded epochs), so epoch 40 of
the segmented run is epoch 40 of an uninterrupted one. After each segment the last-epoch
and best-on-validation checkpoints are scored on the TEST blocks.

The default is chosen on the VALIDATION score (median m + median deg / 10), never on the
test numbers: the cheapest (stages, epochs) whose last-epoch validation score is within
``--tolerance`` of the best one measured. Test numbers are printed next to it.

Times: the frozen-feature cache (train + val frames) is built and timed first, in a fresh
cache folder; training time is the wall time of ``camreloc train`` (epochs, validation,
checkpoints). The 1000-frame figure is an estimate scaled from the measured per-frame costs.
"""

import argparse
from datetime import datetime
import json
import os
from pathlib import Path
import platform
import time

import numpy as np
import torch

from camreloc_ros.core.training.feature_cache import frozen_features
from camreloc_ros.core.models.pose_model import PoseModel
from camreloc_ros.core.training.trainer import train_conf
from camreloc_ros.tools import evaluate, train
from camreloc_ros.tools.common import load_frames, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir() / 'hololens-office'


def load() -> str:
    """Return the 1-minute load average and the core count, for the table's context."""
    return f'{os.getloadavg()[0]:.2f} (on {os.cpu_count()} cores)'


def score(pos: float, rot: float) -> float:
    """Return the validation score of training (m + deg / 10)."""
    return pos + rot / 10.0


def test_errors(ckpt: Path, out: Path) -> tuple[float, float]:
    """Median position and rotation error of ``ckpt`` on the test blocks."""
    eval_dir = evaluate.main({'split': 'test'}, {'checkpoint': ckpt, 'data': DATA, 'out': out})
    s = json.loads((eval_dir / 'summary.json').read_text())['summary']
    return s['position_m']['median'], s['orientation_deg']['median']


def run_stages(stages: int, at: list[int], out: Path, scored: bool = True,
               seed: int = 0) -> list[dict]:
    """Train ``stages`` trainable stages up to each epoch count in ``at``; one row each."""
    run_dir = out / f'stages{stages}' / f'seed{seed}'
    conf = {'model': {'backbone': {'trainable_stages': stages}}, 'data': {'format': 'posed'},
            'train': {'cache_dir': str(out / f'cache{stages}'), 'keep_epochs': 0,
                      'seed': seed}}
    split = load_frames(DATA, train_conf(conf), log=lambda s: None)
    tr, va = split
    model = PoseModel(train_conf(conf)['model'])
    load0 = load()
    t0 = time.perf_counter()
    for frames in (tr, va):
        frozen_features(model, frames, conf['train']['cache_dir'], workers=1)
    cache_s = time.perf_counter() - t0
    del model
    rows, train_s = [], 0.0
    for epochs in at:
        conf['train']['epochs'] = epochs
        t0 = time.perf_counter()
        train.fit(conf, split, run_dir,
                  resume=(run_dir / 'last.pt').is_file(), log=lambda s: None,
                  progress_bars=False)
        train_s += time.perf_counter() - t0
        history = json.loads((run_dir / 'history.json').read_text())
        last = history[-1]
        best = min(history, key=lambda r: r['val_score'])
        row = {'stages': stages, 'epochs': epochs, 'seed': seed, 'train': len(tr), 'val': len(va),
               'cache_s': cache_s, 'train_s': train_s,
               'epoch_s': sorted(r['seconds'] for r in history)[len(history) // 2],
               'minutes': (cache_s + train_s) / 60.0,
               'val_last': score(last['val_median_pos'], last['val_median_rot']),
               'best_epoch': best['epoch'], 'val_best': best['val_score'],
               'load': f'{load0} -> {load()}'}
        for name in ('last', 'best'):
            row[f'test_{name}'] = test_errors(run_dir / f'{name}.pt',
                                              run_dir / f'eval_{name}_{epochs}') \
                if scored else (float('nan'), float('nan'))
        rows.append(row)
        print(fmt_row(row), flush=True)
    return rows


HEADER = ('| trainable stages | seed | epochs | cache build (s) | s/epoch (train loop, median) '
          '| training (s) | total (min) | val score last (best @ epoch) '
          '| test last: m / deg | test best-on-val: m / deg | load avg start -> end |\n'
          '|---|---|---|---|---|---|---|---|---|---|---|')


def fmt_row(r: dict) -> str:
    """One markdown table row."""
    (lp, lr), (bp, br) = r['test_last'], r['test_best']
    return (f'| {r["stages"]} | {r["seed"]} | {r["epochs"]} | {r["cache_s"]:.1f} | '
            f'{r["epoch_s"]:.2f} | {r["train_s"]:.0f} | {r["minutes"]:.1f} | {r["val_last"]:.3f} '
            f'({r["val_best"]:.3f} @ {r["best_epoch"]}) | {lp:.2f} / {lr:.1f} | '
            f'{bp:.2f} / {br:.1f} | {r["load"]} |')


def projection(rows: list[dict], epochs: int, frames: int | None = None) -> str:
    """Minutes of an ``epochs`` run of one stage count, from its first and last segment.

    Per epoch (training loop, validation, checkpoint): the time between the two segments over
    the epochs between them; set-up: the first segment minus its epochs. With ``frames``,
    every per-frame cost is scaled from the measured training-side frames to ``frames``.
    """
    a, b = rows[0], rows[-1]
    per_epoch = (b['train_s'] - a['train_s']) / max(b['epochs'] - a['epochs'], 1)
    setup = max(a['train_s'] - a['epochs'] * per_epoch, 0.0)
    k = frames / (a['train'] + a['val']) if frames else 1.0
    minutes = (a['cache_s'] * k + setup + epochs * per_epoch * k) / 60.0
    return (f'{a["stages"]} stages: cache {a["cache_s"] * k:.0f} s + set-up {setup:.0f} s + '
            f'{epochs} x {per_epoch * k:.2f} s = {minutes:.1f} min')


def mean_over_seeds(rows: list[dict]) -> list[dict]:
    """One row per (stages, epochs): scores and errors averaged over the seeds."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r['stages'], r['epochs']), []).append(r)
    out = []
    for group in groups.values():
        row = dict(group[0], seed='mean')
        for key in ('train_s', 'epoch_s', 'val_last', 'val_best'):
            row[key] = float(np.mean([g[key] for g in group]))
        row['cache_s'] = max(g['cache_s'] for g in group)   # later seeds reuse the cache
        row['minutes'] = (row['cache_s'] + row['train_s']) / 60.0
        for key in ('test_last', 'test_best'):
            row[key] = tuple(np.mean([g[key] for g in group], axis=0))
        row['best_epoch'] = '/'.join(str(g['best_epoch']) for g in group)
        out.append(row)
    return out


def choose(rows: list[dict], tolerance: float, costs: dict | None = None) -> dict:
    """Cheapest row whose last-epoch validation score is within ``tolerance`` of the best.

    ``costs``: ``{stages: (cache s, s per epoch)}`` measured on the CPU the default is for,
    when the accuracy runs happen elsewhere (a GPU); else the minutes measured here.
    """
    best = min(r['val_last'] for r in rows)
    ok = [r for r in rows if r['val_last'] <= best * (1.0 + tolerance)]
    if costs:
        return min(ok, key=lambda r: costs[r['stages']][0] + r['epochs'] * costs[r['stages']][1])
    return min(ok, key=lambda r: r['minutes'])


def main(argv: list[str] | None = None) -> str:
    """Run every stage count, print the table, the choice and the 1000-frame estimate."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--stages', type=int, nargs='+', default=[1, 2, 3])
    parser.add_argument('--at', type=int, nargs='+', default=[20, 40, 60],
                        help='epoch counts at which to score (segments of one run)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='train.seed values (the choice uses their mean validation score)')
    parser.add_argument('--tolerance', type=float, default=0.05)
    parser.add_argument('--cpu-costs', nargs='*', default=[],
                        help='STAGES=CACHE_S,EPOCH_S measured on the CPU: choose by them')
    parser.add_argument('--no-eval', action='store_true',
                        help='timing only: do not score the test blocks')
    parser.add_argument('--project', type=int, default=60,
                        help='project the CPU time of a run of this many epochs')
    parser.add_argument('--out', default=None, help='new folder (default runs/default_stages'
                        '/<time>)')
    args = parser.parse_args(argv)
    out = Path(args.out or ROOT / 'runs' / 'default_stages' /
               datetime.now().strftime('%Y%m%d-%H%M%S'))
    if out.exists():
        raise ValueError(f'--out {out} exists; choose a new folder')
    print(f'{platform.machine()}, {torch.get_num_threads()} torch threads, torch '
          f'{torch.__version__}; load average {load()}; runs in {out}\n\n{HEADER}', flush=True)
    rows = []
    for stages in args.stages:
        for seed in args.seeds:
            rows += run_stages(stages, sorted(args.at), out, not args.no_eval, seed)
    (out / 'results.json').write_text(json.dumps(rows, indent=1, default=list))
    rows_all, rows = rows, mean_over_seeds(rows)
    costs = {int(k): tuple(float(x) for x in v.split(','))
             for k, v in (c.split('=') for c in args.cpu_costs)}
    pick = choose(rows, args.tolerance, costs)
    lines = [HEADER] + [fmt_row(r) for r in rows_all]
    if len(args.seeds) > 1:
        lines += ['', f'Mean over seeds {args.seeds}:', '', HEADER]
        lines += [fmt_row(r) for r in rows]
    lines += ['', f'Chosen (cheapest here within {args.tolerance:.0%} of the best last-epoch '
              f'validation score): {pick["stages"]} trainable stages, {pick["epochs"]} epochs, '
              f'{pick["minutes"]:.1f} min here' + (f' (ranked by the CPU costs {costs})'
                                                   if costs else '') + '.',
              f'CHOSEN {pick["stages"]} {pick["epochs"]}', '']
    by_stage = {}
    for r in rows_all:
        if r['seed'] != args.seeds[0]:
            continue
        by_stage.setdefault(r['stages'], []).append(r)
    for stage_rows in by_stage.values():
        if len(stage_rows) > 1:
            lines.append(f'- projected {args.project} epochs, these frames: '
                         f'{projection(stage_rows, args.project)}; ESTIMATE for 1000 '
                         f'training-side frames: {projection(stage_rows, args.project, 1000)}')
    lines.append(f'- load average at the end: {load()}')
    text = '\n'.join(lines)
    print('\n' + text, flush=True)
    return text


if __name__ == '__main__':
    main()
