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

"""Longer or wider fine-tuning (issue 23): whether a deeper or finer trunk is worth its cost.

On the HoloLens walk with the default split (test blocks never trained on, never chosen on;
validation = held-out blocks of the training side), each configuration trains the default
Regressor + QEH from the same seed and is scored on the test blocks with its last and its
best-on-validation checkpoint:

- ``default``: today's default (1 trainable stage, 224 px, one learning rate);
- ``stages3``: 3 trainable stages at the head's learning rate (the old default's trunk);
- ``stages3_lr0.1``: 3 trainable stages, trunk learning rate x ``train.trunk_lr_scale`` 0.1;
- ``input336``: 1 trainable stage, ``model.backbone.input_size`` 336 (1.5x the shorter side);
- ``longer``: the configuration above with the best last-epoch VALIDATION score (seed 0),
  trained on to ``--long-epochs`` (resumed exactly from its ``last.pt``);
- ``lstm`` / ``gru``: the seed's other heads at the default.

Time: each configuration builds its frozen-feature cache in a fresh folder (timed; later
seeds reuse it) and then trains (timed: epochs, validation, checkpoints); both are scaled to
minutes per 1000 training-side frames, measured on this machine in this run with the load
average printed. The baselines (retrieval top-1 and the oracle nearest training pose) are
those of ``benchmarks/accuracy.py``. Every finished row is written to ``results.json`` and
``table.md`` at once, so a run stopped early still leaves its table.
"""

import argparse
from datetime import datetime
import json
import os
from pathlib import Path
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import baselines  # noqa: E402  (benchmarks/ on the path)
from camreloc_ros.core.evaluation.metrics import atomic_write_text  # noqa: E402
from camreloc_ros.core.models.pose_model import PoseModel  # noqa: E402
from camreloc_ros.core.training.feature_cache import frozen_features  # noqa: E402
from camreloc_ros.core.training.trainer import train_conf  # noqa: E402
from camreloc_ros.tools import evaluate, train  # noqa: E402
from camreloc_ros.tools.common import load_frames, shared_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir() / 'hololens-office'

CONFIGS = {
    'default': {},
    'stages3': {'model': {'backbone': {'trainable_stages': 3}}},
    'stages3_lr0.1': {'model': {'backbone': {'trainable_stages': 3}},
                      'train': {'trunk_lr_scale': 0.1}},
    'input336': {'model': {'backbone': {'input_size': 336}}},
    'lstm': {'model': {'head': {'name': 'lstm'}}},
    'gru': {'model': {'head': {'name': 'gru'}}},
}
CANDIDATES = ('default', 'stages3', 'stages3_lr0.1', 'input336')   # for the longer run


def load() -> str:
    """Return the 1-minute load average and the core count, for the table's context."""
    return f'{os.getloadavg()[0]:.2f} (on {os.cpu_count()} cores)'


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def test_errors(ckpt: Path, out: Path) -> tuple[float, float]:
    """Median position and rotation error of ``ckpt`` on the test blocks."""
    eval_dir = evaluate.main({'split': 'test', 'baselines': False},   # once, in main()
                             {'checkpoint': ckpt, 'data': DATA, 'out': out})
    s = json.loads((eval_dir / 'summary.json').read_text())['summary']
    return s['position_m']['median'], s['orientation_deg']['median']


def run(name: str, overrides: dict, epochs: int, seed: int, out: Path,
        cache_s: dict, base: str | None = None) -> dict:
    """Train one configuration to ``epochs`` (resuming ``base``'s run dir); score it.

    ``cache_s`` maps a cache folder to its measured build seconds (built once, then shared by
    the later seeds and by the heads on the same trunk set-up: their rows repeat that time).
    """
    key = base or name
    # one cache per trunk set-up: the heads share the default's frozen features (same key)
    trunk = overrides.get('model', {}).get('backbone', {})
    cache = 'cache_' + ('_'.join(f'{k}{v}' for k, v in sorted(trunk.items())) or 'default')
    conf = _merge({'data': {'format': 'posed'},
                   'train': {'cache_dir': str(out / cache), 'keep_epochs': 0,
                             'seed': seed, 'epochs': epochs}}, overrides)
    run_dir = out / key / f'seed{seed}'
    split = load_frames(DATA, train_conf(conf), log=lambda s: None)
    tr, va = split
    load0 = load()
    if cache not in cache_s:
        model = PoseModel(train_conf(conf)['model'])
        t0 = time.perf_counter()
        for frames in (tr, va):
            frozen_features(model, frames, conf['train']['cache_dir'], workers=1)
        cache_s[cache] = time.perf_counter() - t0
        del model
    resumed = (run_dir / 'last.pt').is_file()
    done_before = len(json.loads((run_dir / 'history.json').read_text())) if resumed else 0
    t0 = time.perf_counter()
    train.fit(conf, split, run_dir, resume=resumed, log=lambda s: None, progress_bars=False)
    train_s = time.perf_counter() - t0
    history = json.loads((run_dir / 'history.json').read_text())
    last = history[-1]
    best = min(history, key=lambda r: r['val_score'])
    frames = len(tr) + len(va)
    per_epoch = train_s / max(epochs - done_before, 1)
    # minutes per 1000 training-side frames: cache + all epochs, per-frame costs scaled
    per_1000 = (cache_s[cache] + per_epoch * epochs) * 1000.0 / frames / 60.0
    row = {'config': name, 'seed': seed, 'epochs': epochs, 'train': len(tr), 'val': len(va),
           'cache_s': cache_s[cache], 'epoch_s': per_epoch, 'min_per_1000': per_1000,
           'val_last': last['val_score'], 'val_best': best['val_score'],
           'best_epoch': best['epoch'], 'load': f'{load0} -> {load()}'}
    for which in ('last', 'best'):
        row[f'test_{which}'] = test_errors(run_dir / f'{which}.pt',
                                           run_dir / f'eval_{which}_{epochs}')
    return row


HEADER = ('| configuration | seed | epochs | val score last (best @ epoch) '
          '| test last: m / deg | test best-on-val: m / deg | cache (s) | s/epoch '
          '| min per 1000 frames | load avg start -> end |\n'
          '|---|---|---|---|---|---|---|---|---|---|')


def fmt_row(r: dict) -> str:
    """One markdown table row."""
    (lp, lr), (bp, br) = r['test_last'], r['test_best']
    return (f'| {r["config"]} | {r["seed"]} | {r["epochs"]} | {r["val_last"]:.3f} '
            f'({r["val_best"]:.3f} @ {r["best_epoch"]}) | {lp:.2f} / {lr:.1f} | '
            f'{bp:.2f} / {br:.1f} | {r["cache_s"]:.1f} | {r["epoch_s"]:.2f} | '
            f'{r["min_per_1000"]:.1f} | {r["load"]} |')


def mean_rows(rows: list[dict]) -> list[str]:
    """Per (configuration, epochs): mean over seeds of the scores and errors."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r['config'], r['epochs']), []).append(r)
    lines = []
    for (name, epochs), group in groups.items():
        seeds = ','.join(str(g['seed']) for g in group)
        val = np.mean([g['val_last'] for g in group])
        tl = np.mean([g['test_last'] for g in group], axis=0)
        tb = np.mean([g['test_best'] for g in group], axis=0)
        per = np.mean([g['min_per_1000'] for g in group])
        lines.append(f'| {name} | {seeds} | {epochs} | {val:.3f} | {tl[0]:.2f} / {tl[1]:.1f} | '
                     f'{tb[0]:.2f} / {tb[1]:.1f} | {per:.1f} |')
    return ['| configuration | seeds | epochs | val score last (mean) | test last (mean) '
            '| test best-on-val (mean) | min per 1000 frames |',
            '|---|---|---|---|---|---|---|'] + lines


def write(out: Path, head: str, rows: list[dict], base_rows: dict, note: str = '') -> str:
    """Write ``results.json`` and ``table.md`` (atomically) and return the table text."""
    lines = [head, '', HEADER] + [fmt_row(r) for r in rows]
    lines += ['', 'Mean over the seeds run:', ''] + mean_rows(rows)
    if base_rows:
        lines += ['', '| baseline (test blocks) | median m | median deg |', '|---|---|---|']
        lines += [f'| {k} | {v["position_m"]["median"]:.2f} | '
                  f'{v["orientation_deg"]["median"]:.1f} |' for k, v in base_rows.items()]
    if note:
        lines += ['', note]
    text = '\n'.join(lines) + '\n'
    atomic_write_text(out / 'results.json', json.dumps(
        {'rows': rows, 'baselines': base_rows}, indent=1, default=list))
    atomic_write_text(out / 'table.md', text)
    return text


def main(argv: list[str] | None = None) -> str:
    """Run every configuration and seed, then the longer run of the best on validation."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--configs', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument('--epochs', type=int, default=None,
                        help='default: the training default (train.epochs)')
    parser.add_argument('--long-epochs', type=int, default=None,
                        help='epochs of the longer run (default 2x --epochs; 0 = none)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--no-baselines', action='store_true',
                        help='skip retrieval top-1 and the oracle (deterministic: a rerun '
                        'cites the rows of an earlier run or of benchmarks/accuracy.py)')
    parser.add_argument('--out', default=None,
                        help='new folder (default runs/fine_tuning/<time>)')
    args = parser.parse_args(argv)
    epochs = args.epochs or train_conf({})['train']['epochs']
    long_epochs = 2 * epochs if args.long_epochs is None else args.long_epochs
    out = Path(args.out or ROOT / 'runs' / 'fine_tuning' /
               datetime.now().strftime('%Y%m%d-%H%M%S'))
    if out.exists():
        raise ValueError(f'--out {out} exists; choose a new folder')
    out.mkdir(parents=True)
    head = (f'{platform.machine()}, {torch.get_num_threads()} torch threads, torch '
            f'{torch.__version__}; load average {load()} at the start; {epochs} epochs '
            f'(longer run: {long_epochs}); runs in {out}')
    print(head + '\n\n' + HEADER, flush=True)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    base_rows = {} if args.no_baselines else baselines(device)
    rows: list[dict] = []
    cache_s: dict = {}
    for seed in args.seeds:
        for name in args.configs:
            rows.append(run(name, CONFIGS[name], epochs, seed, out, cache_s))
            print(fmt_row(rows[-1]), flush=True)
            write(out, head, rows, base_rows)
        if long_epochs > epochs:
            seed0 = [r for r in rows if r['seed'] == args.seeds[0] and r['epochs'] == epochs
                     and r['config'] in CANDIDATES]
            if seed0:
                pick = min(seed0, key=lambda r: r['val_last'])['config']
                rows.append(run(f'longer ({pick})', CONFIGS[pick], long_epochs, seed, out,
                                cache_s, base=pick))
                print(fmt_row(rows[-1]), flush=True)
                write(out, head, rows, base_rows)
    note = (f'Longer run: the candidate ({", ".join(CANDIDATES)}) with the best last-epoch '
            f'validation score of seed {args.seeds[0]}, chosen on validation only. '
            f'Load average at the end: {load()}.')
    text = write(out, head, rows, base_rows, note)
    print('\n' + text, flush=True)
    return text


if __name__ == '__main__':
    main()
