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

"""``camreloc search``: random hyper-parameter search (Bergstra & Bengio), as the thesis did.

Each trial samples every entry of ``space`` (dotted training-config keys) independently,
trains for ``epochs`` on the training split and is scored on the validation split by
median position (m) + median orientation (deg) / 10. Trials share the frozen-feature cache
when they share the frozen trunk, so only the trainable part is paid for per trial.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np

from camreloc_ros.core.config import deep_update, load_yaml, merge_conf, parse_overrides
from camreloc_ros.core.data.datasets import FORMATS
from camreloc_ros.core.evaluation import atomic_write_text
from camreloc_ros.core.training import train_conf, Trainer
from camreloc_ros.tools.train import load_frames

default_conf = {
    'trials': 8,
    'seed': 0,
    'epochs': 20,
    'space': {
        'train.lr': {'log_uniform': [5e-5, 1e-3]},
        'loss.name': {'choice': ['nh', 'qeh']},
        'loss.s_rot_init': {'uniform': [-4.0, 0.0]},
        'model.head.dropout': {'choice': [0.0, 0.1, 0.3]},
        'model.head.width': {'choice': [512, 1024, 2048]},
        'model.backbone.trainable_stages': {'choice': [1, 2, 3]},
    },
    'base': {},   # training-config overrides shared by every trial
}


def sample(space: dict, rng: np.random.Generator) -> dict:
    """One value per dotted key from its distribution (choice, uniform, log_uniform)."""
    out = {}
    for key, dist in space.items():
        if len(dist) != 1:
            raise ValueError(f'search space entry {key!r} must have exactly one distribution')
        (kind, arg), = dist.items()
        if kind == 'choice':
            value = arg[int(rng.integers(len(arg)))]
        elif kind == 'uniform':
            value = float(rng.uniform(arg[0], arg[1]))
        elif kind == 'log_uniform':
            value = float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
        else:
            raise ValueError(f'search space entry {key!r}: unknown distribution {kind!r}; '
                             'valid: choice, uniform, log_uniform')
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def _nested(flat: dict) -> dict:
    return parse_overrides(f'{k}={json.dumps(v)}' for k, v in flat.items())


def format_results(results: list[dict]) -> str:
    """Markdown table of trials sorted by validation score (best first)."""
    keys = sorted({k for r in results for k in r['params']})
    head = '| rank | trial | median pos (m) | median rot (deg) | ' + ' | '.join(keys) + ' |'
    rows = [head, '|' + '---|' * (head.count('|') - 1)]
    for rank, r in enumerate(sorted(results, key=lambda r: r['score']), 1):
        vals = [f'{v:.3g}' if isinstance(v, float) else str(v)
                for v in (r['params'].get(k, '') for k in keys)]
        rows.append(f'| {rank} | {r["trial"]} | {r["val_median_pos"]:.3f} | '
                    f'{r["val_median_rot"]:.2f} | ' + ' | '.join(vals) + ' |')
    return '\n'.join(rows)


def main(conf: dict, paths: dict, log=print) -> Path:
    """Run the search; ``paths``: ``data`` and ``out``; returns the results file."""
    conf = dict(conf)
    space = conf.pop('space', None)     # a given space replaces the default one entirely
    conf = merge_conf(default_conf, conf)
    conf['space'] = space or conf['space']
    out = Path(paths['out'])
    out.mkdir(parents=True, exist_ok=True)
    base = train_conf(conf['base'])
    train, val = paths.get('frames') or load_frames(paths['data'], base)
    if not val:
        raise ValueError('the search needs validation frames to score trials')
    rng = np.random.default_rng(conf['seed'])
    results = []
    for trial in range(conf['trials']):
        params = sample(conf['space'], rng)
        tconf = train_conf(deep_update(base, _nested(params)))
        tconf['train']['epochs'] = conf['epochs']
        log(f'trial {trial + 1}/{conf["trials"]}: {params}')
        trainer = Trainer(tconf, train, val, out / f'trial_{trial:03d}', log=log,
                          progress_bars=False)
        record = trainer.fit()
        results.append({'trial': trial, 'params': params, 'score': record['val_score'],
                        'val_median_pos': record['val_median_pos'],
                        'val_median_rot': record['val_median_rot']})
        atomic_write_text(out / 'results.json', json.dumps(results, indent=1))
    table = format_results(results)
    atomic_write_text(out / 'results.md', table + '\n')
    log(table)
    return out / 'results.md'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``camreloc search``."""
    parser.add_argument('--data', required=True, help='dataset folder')
    parser.add_argument('--format', required=True, choices=FORMATS)
    parser.add_argument('--config', help='YAML with search settings (trials, epochs, space, base)')
    parser.add_argument('--trials', type=int)
    parser.add_argument('--epochs', type=int)
    parser.add_argument('--out', default='runs/search')
    parser.add_argument('overrides', nargs='*', metavar='key=value',
                        help='search-config overrides, e.g. base.train.batch_size=16')


def from_args(args: argparse.Namespace) -> Path:
    """Run from parsed command-line arguments."""
    conf = load_yaml(args.config) if args.config else {}
    conf = deep_update(conf, parse_overrides(args.overrides))
    conf = deep_update(conf, {'base': {'data': {'format': args.format}}})
    for key in ('trials', 'epochs'):
        if getattr(args, key):
            conf[key] = getattr(args, key)
    return main(conf, {'data': args.data, 'out': args.out})
