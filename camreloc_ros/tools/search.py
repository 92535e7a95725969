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

"""``camreloc search``: hyper-parameter search on Optuna (TPE sampler, pruning, resumable).

The thesis ran a random search (Bergstra & Bengio); TPE starts the same way (random trials)
and then samples where the good trials were. Every trial trains for ``epochs`` on the training
split and reports its validation score, median position (m) + median orientation (deg) / 10,
after each epoch, so the pruner (median by default) stops trials that fall behind.

The study lives in an Optuna storage: ``sqlite:///<out>/search.db`` by default, or any RDB URL
(``--storage postgresql://...``) so that workers on many machines share one study. The study
holds ``trials`` finished (COMPLETE or PRUNED) trials in the end: a run killed at any point and
started again continues up to that number; the killed run's trial is marked FAIL (at once on
the same machine, after the heartbeat grace period from another one) and is not counted.
Trials share the frozen-feature cache when they share the frozen trunk, so only the trainable
part is paid for per trial.
"""

import argparse
import json
import logging
import math
import os
from pathlib import Path
import socket
import warnings

import numpy as np

from camreloc_ros.core.config import ConfigError, deep_update, load_yaml, merge_conf, \
    parse_overrides
from camreloc_ros.core.data.formats import FORMATS
from camreloc_ros.core.io import atomic_write_text, pid_alive
from camreloc_ros.core.training.search_report import _counts, _optuna, shown_url, write_results
from camreloc_ros.tools.common import frames_from_paths, tool_logging

logger = logging.getLogger('camreloc_ros')

DISTRIBUTIONS = ('choice', 'uniform', 'log_uniform')

default_conf = {
    'trials': 20,        # finished (COMPLETE + PRUNED) trials the study holds in the end
    'seed': 0,           # TPE seed; each trial's sampler seed also depends on the trial count
    'epochs': 20,        # per trial; the validation score is reported after each epoch
    'study_name': 'camreloc-search',
    'storage': None,     # None = sqlite:///<out>/search.db; any SQLAlchemy URL otherwise
    'heartbeat': 60,     # s between a running trial's heartbeats (RDB storages); None = off
    'grace_period': 180,  # s without heartbeat after which another worker fails a trial
    'tpe_startup_trials': 5,   # random trials before TPE models the good region
    # Optuna pruner: name (median, percentile, threshold, hyperband, none) + the arguments
    # of its Optuna class; another name replaces these arguments, the same name updates them
    'pruner': {'name': 'median', 'n_startup_trials': 5, 'n_warmup_steps': 3},
    # Dotted training-config keys -> one distribution each (choice / uniform / log_uniform),
    # optionally with ``when: {earlier key: value or [values]}`` (searched only then).
    # Ranges around what the thesis searched: Adam learning rate (found 2e-4), L2 and dropout
    # (found 0), the loss norm (found L1), the loss and its weights (PoseNet's beta, the
    # initial log-variances of the learned weighting), the head's width and how many of the
    # last CNN stages are fine-tuned (the thesis trained the last 3 blocks).
    'space': {
        'train.lr': {'log_uniform': [1e-5, 1e-3]},
        'train.weight_decay': {'choice': [0.0, 1e-5, 1e-4, 1e-3]},
        'model.head.dropout': {'uniform': [0.0, 0.5]},
        'loss.p': {'choice': [1, 2]},
        'loss.name': {'choice': ['posenet', 'nh', 'qeh']},
        'loss.beta': {'log_uniform': [50.0, 2000.0], 'when': {'loss.name': 'posenet'}},
        'loss.s_rot_init': {'uniform': [-4.0, 0.0], 'when': {'loss.name': ['nh', 'qeh']}},
        'model.head.width': {'choice': [512, 1024, 2048]},
        'model.backbone.trainable_stages': {'choice': [1, 2, 3]},
    },
    'base': {},   # training-config overrides shared by every trial
}

PRUNERS = ('median', 'percentile', 'threshold', 'hyperband', 'none')
# settings that must match to continue a stored study (another space is another study)
STUDY_KEYS = ('space', 'base', 'epochs')


def _parse_entry(key: str, dist) -> tuple[str, list, dict]:
    """``(kind, argument, when)`` of one space entry, checked; errors name the entry."""
    if not isinstance(dist, dict):
        raise ValueError(f'search space entry {key!r} must be a mapping like '
                         '{choice: [...]}, {uniform: [lo, hi]} or {log_uniform: [lo, hi]}')
    when = dist.get('when') or {}
    kinds = [k for k in dist if k != 'when']
    if len(kinds) != 1:
        raise ValueError(f'search space entry {key!r} must have exactly one distribution '
                         f'({", ".join(DISTRIBUTIONS)}), got {kinds}')
    kind, arg = kinds[0], dist[kinds[0]]
    if kind not in DISTRIBUTIONS:
        raise ValueError(f'search space entry {key!r}: unknown distribution {kind!r}; '
                         f'valid: {", ".join(DISTRIBUTIONS)}')
    if kind == 'choice':
        if not isinstance(arg, list) or not arg:
            raise ValueError(f'search space entry {key!r}: choice needs a non-empty list')
    else:
        ok = (isinstance(arg, list) and len(arg) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v) for v in arg) and arg[0] < arg[1])
        if not ok:
            raise ValueError(f'search space entry {key!r}: {kind} needs [low, high] with '
                             f'low < high, got {arg!r}')
        if kind == 'log_uniform' and arg[0] <= 0:
            raise ValueError(f'search space entry {key!r}: log_uniform needs low > 0, '
                             f'got {arg!r}')
    if not isinstance(when, dict):
        raise ValueError(f'search space entry {key!r}: when must map an earlier entry to a '
                         'value or a list of values')
    return kind, arg, when


def _nested(flat: dict) -> dict:
    """Nest ``{'a.b': v}`` as ``{'a': {'b': v}}``, values as they are.

    No YAML re-reading: YAML 1.1 would turn ``1e-05`` into a string.
    """
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split('.')
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f'search space entries {key!r} and {part!r} overlap')
        node[leaf] = value
    return out


def check_space(space: dict, base: dict | None = None) -> None:
    """Refuse a bad space before any trial runs: unknown distributions, bad ranges, bad keys.

    Every choice and the ends and middle of every range go through the training config's own
    checks, so a misspelt key or a value of the wrong type is named now, not in trial 7.
    """
    from camreloc_ros.core.training.trainer import train_conf  # torch: not for --help

    if not isinstance(space, dict) or not space:
        raise ValueError('the search space must be a non-empty mapping of dotted training-'
                         'config keys to distributions')
    seen = []
    for key, dist in space.items():
        kind, arg, when = _parse_entry(key, dist)
        for cond in when:
            if cond not in seen:
                raise ValueError(f'search space entry {key!r}: when names {cond!r}, which is '
                                 'not an earlier entry of the space')
        values = arg if kind == 'choice' else \
            [float(arg[0]), float(sum(arg) / 2), float(arg[1])]
        for value in values:   # a range gives floats: an integer key is refused here
            try:
                train_conf(deep_update(base or {}, _nested({key: value})))
            except ValueError as exc:
                raise ValueError(f'search space entry {key!r} ({kind} {arg!r}): {exc}') from None
        seen.append(key)


def _condition_holds(when: dict, params: dict) -> bool:
    for cond, wanted in when.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if cond not in params or params[cond] not in allowed:
            return False
    return True


def suggest(trial, space: dict) -> dict:
    """Draw one value per dotted key from an Optuna trial.

    ``choice`` -> categorical, ``uniform`` -> float, ``log_uniform`` -> float on a log scale;
    entries whose ``when`` fails are left to the base config.
    """
    params = {}
    for key, dist in space.items():
        kind, arg, when = _parse_entry(key, dist)
        if not _condition_holds(when, params):
            continue
        if kind == 'choice':
            params[key] = trial.suggest_categorical(key, arg)
        else:
            params[key] = trial.suggest_float(key, float(arg[0]), float(arg[1]),
                                              log=kind == 'log_uniform')
    return params


def make_pruner(conf: dict):
    """Build the configured Optuna pruner; a bad name or argument names the ``pruner`` key."""
    optuna = _optuna()
    conf = dict(conf or {'name': 'none'})
    name = conf.pop('name', None)
    classes = {'median': optuna.pruners.MedianPruner,
               'percentile': optuna.pruners.PercentilePruner,
               'threshold': optuna.pruners.ThresholdPruner,
               'hyperband': optuna.pruners.HyperbandPruner,
               'none': optuna.pruners.NopPruner}
    if name not in classes:
        raise ConfigError(f'pruner.name: expected one of {", ".join(PRUNERS)}, got {name!r}')
    try:
        return classes[name](**conf)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f'pruner ({name}): bad arguments {conf}: {exc}') from None


def storage_url(conf: dict, out: Path) -> str:
    """Return the study's storage: the configured URL, else a SQLite file in ``out``."""
    return conf['storage'] or f'sqlite:///{(out / "search.db").resolve()}'


def open_storage(conf: dict, url: str):
    """Optuna RDB storage with heartbeats (so dead workers' trials get failed)."""
    optuna = _optuna()
    kwargs = {}
    if url.startswith('sqlite'):
        # several workers on one machine: wait for the file lock instead of failing
        kwargs['engine_kwargs'] = {'connect_args': {'timeout': 60}}
    if conf['heartbeat']:
        kwargs['heartbeat_interval'] = int(conf['heartbeat'])
        kwargs['grace_period'] = int(conf['grace_period'])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:   # noqa: BLE001 - driver, network and URL errors alike
        raise ValueError(f'--storage {shown_url(url)}: cannot open the study storage: '
                         f'{type(exc).__name__}: {exc}') from None


def _worker_id() -> str:
    return f'{socket.gethostname()}:{os.getpid()}'


def fail_dead_trials(study, storage, log=None) -> list[int]:
    """Mark RUNNING trials of dead processes FAIL; returns their numbers.

    A trial started on this machine by a process that no longer runs is failed at once;
    other machines' trials are failed by Optuna's heartbeat check after the grace period.
    """
    log = log or logger.info
    optuna = _optuna()
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get('worker', ''))
        whost, _, pid = worker.rpartition(':')
        if whost != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), trial.number)
        try:
            storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue   # finished meanwhile
        failed.append(trial.number)
        log(f'trial {trial.number} of dead worker {worker} marked FAIL (not counted)')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return failed


def _load_conf(conf: dict) -> dict:
    conf = dict(conf)
    space = conf.pop('space', None)     # a given space replaces the default one entirely
    pruner = conf.pop('pruner', default_conf['pruner'])   # null: no pruning
    conf = merge_conf(default_conf, conf)
    conf['space'] = space or conf['space']
    if isinstance(pruner, dict) and pruner.get('name', conf['pruner']['name']) == \
            conf['pruner']['name']:
        pruner = {**conf['pruner'], **pruner}   # e.g. only pruner.n_warmup_steps=5 given
    conf['pruner'] = pruner if pruner is not None else {'name': 'none'}
    for key in ('trials', 'epochs'):
        if isinstance(conf[key], bool) or not isinstance(conf[key], int) or conf[key] < 1:
            raise ConfigError(f'{key}: expected an integer >= 1, got {conf[key]!r}')
    return conf


def _check_out(out: Path, study_name: str, url: str) -> None:
    """Refuse to overwrite another study's results in ``out``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f'--out {out} is a file; expected a search folder')
    results = out / 'results.json'
    if not results.exists():
        return
    try:
        old = json.loads(results.read_text())
        same = old['study']['name'] == study_name and old['study']['storage'] == shown_url(url)
    except (ValueError, KeyError, TypeError):
        same = False
    if not same:
        raise ValueError(f'--out {out} holds the results of another search ({results}); '
                         'use the same --study-name and --storage to continue it, or choose '
                         'a new --out')


def _study_settings(conf: dict, n_train: int, n_val: int) -> dict:
    settings = {k: conf[k] for k in STUDY_KEYS}
    settings['frames'] = [n_train, n_val]
    return json.loads(json.dumps(settings))   # what the storage gives back (lists, not tuples)


def main(conf: dict, paths: dict, log=None) -> Path:
    """Run (or continue) the study; ``paths``: ``data`` (+ ``val_data``) and ``out``.

    Returns results.md. Validation frames come from the training side
    (:func:`camreloc_ros.tools.common.frames_from_paths`); the test split is never read.
    """
    if log is None:
        tool_logging()
        log = logger.info
    from camreloc_ros.core.training.trainer import train_conf  # torch: not for --help

    conf = _load_conf(conf)
    split = frames_from_paths(train_conf(conf['base']), paths, log=log)
    return run_study(conf, split, paths['out'], log=log)


def run_study(conf: dict, split: tuple, out: Path, log=None) -> Path:
    """Run the study on frames already loaded (``(train, val)``): :func:`main` after the data."""
    log = log or logger.info
    from camreloc_ros.core.training.trainer import train_conf, Trainer  # torch: not for --help

    optuna = _optuna()
    conf = _load_conf(conf)
    out = Path(out)
    url = storage_url(conf, out)
    _check_out(out, conf['study_name'], url)
    train_conf(conf['base'])      # a bad base config is refused before any trial
    check_space(conf['space'], conf['base'])
    pruner = make_pruner(conf['pruner'])
    train, val = split
    if not val:
        raise ValueError('the search needs validation frames to score trials')
    if conf['storage'] is None:
        out.mkdir(parents=True, exist_ok=True)   # the default SQLite file lives there
    storage = open_storage(conf, url)
    out.mkdir(parents=True, exist_ok=True)
    direction = 'minimize'
    study = optuna.create_study(storage=storage, study_name=conf['study_name'],
                                direction=direction, load_if_exists=True)
    settings = _study_settings(conf, len(train), len(val))
    stored = study.user_attrs.get('settings')
    if stored is None:
        study.set_user_attr('settings', settings)
    elif stored != settings:
        diff = [k for k in settings if settings[k] != stored.get(k)]
        raise ValueError(f'study {conf["study_name"]!r} in {shown_url(url)} was made with '
                         f'other settings ({", ".join(diff)} differ); continue it with the '
                         'same config, or choose another --study-name')
    log(f'study {conf["study_name"]!r} in {shown_url(url)}: target {conf["trials"]} finished '
        f'trials; {len(train)} training and {len(val)} validation frames')

    def objective(trial) -> float:
        trial.set_user_attr('worker', _worker_id())
        params = suggest(trial, conf['space'])
        tconf = train_conf(deep_update(conf['base'], _nested(params)))
        tconf['train']['epochs'] = conf['epochs']
        log(f'trial {trial.number}: {params}')
        trainer = Trainer(tconf, train, val, out / 'trials' / f'{trial.number:04d}',
                          log=log, progress_bars=False)
        history = []
        for epoch in range(1, conf['epochs'] + 1):
            record = trainer.train_epoch()
            record.update(trainer.validate())
            history.append(record)
            atomic_write_text(trainer.out_dir / 'history.json', json.dumps(history, indent=1))
            for key in ('val_median_pos', 'val_median_rot'):
                trial.set_user_attr(key, record[key])
            trial.set_user_attr('epochs', epoch)
            score = record['val_score']
            log(f'  trial {trial.number} epoch {epoch}: val median {record["val_median_pos"]:.3f}'
                f' m {record["val_median_rot"]:.2f} deg, score {score:.4f}')
            trial.report(score, epoch)
            if trial.should_prune():
                log(f'  trial {trial.number} pruned after epoch {epoch}')
                raise optuna.TrialPruned()
        return score

    while True:
        fail_dead_trials(study, storage, log)
        counts = _counts(study)
        finished = counts['COMPLETE'] + counts['PRUNED']
        if finished + counts['RUNNING'] >= conf['trials']:
            break
        # a fresh seeded sampler per trial: resumed and parallel runs do not repeat the
        # random draws of earlier trials, and one worker's sequence is reproducible
        sampler = optuna.samplers.TPESampler(
            seed=int(np.random.SeedSequence([conf['seed'], sum(counts.values())])
                     .generate_state(1)[0]),   # mixed: nearby seeds give nearby draws
            n_startup_trials=conf['tpe_startup_trials'])
        study = optuna.load_study(study_name=conf['study_name'], storage=storage,
                                  sampler=sampler, pruner=pruner)
        study.optimize(objective, n_trials=1, catch=())
    counts = _counts(study)
    log(f'study holds {counts["COMPLETE"]} complete, {counts["PRUNED"]} pruned, '
        f'{counts["FAIL"]} failed and {counts["RUNNING"]} running trials')
    return write_results(study, out, url, log)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``camreloc search``."""
    parser.add_argument('--data', required=True, help='dataset folder')
    parser.add_argument('--format', required=True, choices=FORMATS, help='dataset layout')
    parser.add_argument('--val-data', help='validation dataset folder (same format; default: '
                        'held-out blocks of the training side)')
    parser.add_argument('--config', help='YAML with search settings (trials, epochs, space, '
                        'base, pruner, ...)')
    parser.add_argument('--trials', type=int,
                        help='finished (complete + pruned) trials the study should hold')
    parser.add_argument('--epochs', type=int, help='epochs per trial')
    parser.add_argument('--storage', help='Optuna storage URL shared by all workers, e.g. '
                        'postgresql://user:pass@host/db (default: sqlite:///OUT/search.db)')
    parser.add_argument('--study-name', help='study to create or continue '
                        f'(default {default_conf["study_name"]})')
    parser.add_argument('--out', default='runs/search',
                        help='results folder (default runs/search; the sqlite study lives here)')
    parser.add_argument('overrides', nargs='*', metavar='key=value',
                        help='search-config overrides, e.g. base.train.batch_size=16')


def from_args(args: argparse.Namespace) -> Path:
    """Run from parsed command-line arguments."""
    conf = load_yaml(args.config) if args.config else {}
    conf = deep_update(conf, parse_overrides(args.overrides))
    conf = deep_update(conf, {'base': {'data': {'format': args.format}}})
    for key in ('trials', 'epochs', 'storage', 'study_name'):
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    return main(conf, {'data': args.data, 'out': args.out, 'val_data': args.val_data})
