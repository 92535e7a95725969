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

"""Optuna search: space -> suggestions, and a tiny real study that prunes and resumes."""

import json
from pathlib import Path
import subprocess
import sys
import threading

import optuna
import pytest

from camreloc_ros.core.config import ConfigError, parse_overrides
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.training.search_report import override_value
from camreloc_ros.tools import search
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow   # trains trial runs in subprocesses


def _draws(space: dict, seed: int, n: int) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    return [search.suggest(study.ask(), space) for _ in range(n)]


def test_suggest_respects_ranges_conditions_and_is_seeded():
    space = search.default_conf['space']
    search.check_space(space)
    assert _draws(space, 1, 3) == _draws(space, 1, 3)
    assert _draws(space, 1, 3) != _draws(space, 2, 3)
    draws = _draws(space, 0, 40)
    assert all(1e-5 <= d['train.lr'] <= 1e-3 for d in draws)
    assert all(0.0 <= d['model.head.dropout'] <= 0.5 for d in draws)
    assert {d['loss.name'] for d in draws} == {'posenet', 'nh', 'qeh'}
    assert {d['model.backbone.trainable_stages'] for d in draws} <= {1, 2, 3}
    for d in draws:   # conditional entries: only with the loss they belong to
        assert ('loss.beta' in d) == (d['loss.name'] == 'posenet')
        assert ('loss.s_rot_init' in d) == (d['loss.name'] != 'posenet')
        assert 50 <= d.get('loss.beta', 50) <= 2000
        assert -4 <= d.get('loss.s_rot_init', 0) <= 0


def test_override_values_read_back_as_the_same_value():
    # results.md prints the best trial as `camreloc train` overrides: YAML must read them back
    for value in (1e-05, 1.5e-05, 1e20, 0.00017, 3, 'qeh', 2000.0, True):
        assert parse_overrides([f'k={override_value(value)}'])['k'] == value


def test_bad_space_and_pruner_are_refused():
    study = optuna.create_study()
    with pytest.raises(ValueError, match='unknown distribution'):
        search.suggest(study.ask(), {'train.lr': {'normal': [0, 1]}})
    with pytest.raises(ValueError, match='unknown distribution'):
        search.check_space({'train.lr': {'normal': [0, 1]}})
    with pytest.raises(ValueError, match="'train.lrr'.*unknown config key"):
        search.check_space({'train.lrr': {'uniform': [0.1, 1.0]}})
    with pytest.raises(ValueError, match="'train.lr'.*low > 0"):
        search.check_space({'train.lr': {'log_uniform': [0.0, 1.0]}})
    with pytest.raises(ValueError, match="'train.batch_size'"):   # floats for an int key
        search.check_space({'train.batch_size': {'uniform': [4, 32]}})
    with pytest.raises(ValueError, match='not an earlier entry'):
        search.check_space({'loss.beta': {'uniform': [1, 2], 'when': {'loss.name': 'beta'}},
                            'loss.name': {'choice': ['beta', 'nh']}})
    with pytest.raises(ConfigError, match='pruner.name'):
        search.make_pruner({'name': 'sometimes'})
    with pytest.raises(ConfigError, match='pruner \\(median\\)'):
        search.make_pruner({'name': 'median', 'patience': 3})
    assert isinstance(search.make_pruner(search.default_conf['pruner']),
                      optuna.pruners.MedianPruner)


WORKER = '''
import json, sys
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.tools import search
from camreloc_ros.tools.common import shared_data_dir
frames = split_dataset(read_dataset(shared_data_dir() / 'hololens-office', 'posed'),
                       'train').frames
search.run_study(json.loads(sys.argv[1]), (frames[:24], frames[-8:]), sys.argv[2],
                 log=lambda s: print(s, flush=True))
'''


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float) -> bool:
    """Read the worker's output until a line contains ``text`` (False: it ended or timed out)."""
    found = threading.Event()

    def read():
        for line in proc.stdout:
            if text in line:
                found.set()
                return
    threading.Thread(target=read, daemon=True).start()
    return found.wait(timeout)


def _states(url: str, name: str) -> list[str]:
    study = optuna.load_study(study_name=name, storage=url)
    return [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]


def test_study_prunes_resumes_and_fails_dead_trials(tmp_path):
    frames = split_dataset(read_dataset(DATA, 'posed'), 'train').frames
    train, val = frames[:24], frames[-8:]     # validation from the training side
    out = tmp_path / 's'
    conf = {'trials': 2, 'epochs': 2, 'seed': 3,
            'space': {'train.lr': {'log_uniform': [1e-4, 3e-3]},
                      'loss.name': {'choice': ['nh', 'qeh']}},
            # prune from the 3rd trial on, at any epoch, when worse than the median
            'pruner': {'name': 'median', 'n_startup_trials': 2, 'n_warmup_steps': 0},
            'base': {'model': {'backbone': {'trainable_stages': 0}, 'head': {'width': 64}},
                     'train': {'batch_size': 8, 'cache_dir': str(tmp_path / 'cache')}}}
    split = (train, val)
    quiet = lambda s: None   # noqa: E731
    search.run_study(conf, split, out, log=quiet)
    url = f'sqlite:///{out / "search.db"}'
    name = search.default_conf['study_name']
    assert _states(url, name) == ['COMPLETE', 'COMPLETE']

    # A third trial that repeats the trial worse at epoch 1 is above the median there:
    # the median pruner stops it after one epoch (training is deterministic).
    study = optuna.load_study(study_name=name, storage=url)
    worse = max(study.trials, key=lambda t: t.intermediate_values[1])
    assert min(t.intermediate_values[1] for t in study.trials) < worse.intermediate_values[1]
    study.enqueue_trial(worse.params)
    result = search.run_study(dict(conf, trials=3), split, out, log=quiet)
    assert _states(url, name) == ['COMPLETE', 'COMPLETE', 'PRUNED']
    pruned = optuna.load_study(study_name=name, storage=url).trials[2]
    assert pruned.params == worse.params and list(pruned.intermediate_values) == [1]
    assert pruned.intermediate_values[1] == pytest.approx(worse.intermediate_values[1])

    rows = json.loads((out / 'results.json').read_text())
    assert rows['study']['counts']['PRUNED'] == 1
    assert [r['state'] for r in rows['trials']] == ['COMPLETE', 'COMPLETE', 'PRUNED']
    table = result.read_text()
    best = min(study.trials, key=lambda t: t.value)
    assert f'| 1 | {best.number} | COMPLETE | 2 |' in table
    assert '| 3 | 2 | PRUNED | 1 |' in table
    assert (out / 'history.png').stat().st_size > 1000
    assert (out / 'importances.png').stat().st_size > 1000
    assert json.loads((out / 'trials' / '0002' / 'history.json').read_text())[0]['epoch'] == 1

    # Resuming: the study already holds 3 finished trials, so nothing new runs.
    search.run_study(dict(conf, trials=3), split, out, log=quiet)
    assert len(_states(url, name)) == 3

    # kill -9 of a worker in the middle of a trial: its trial stays RUNNING in the storage;
    # the next run on this machine marks it FAIL, does not count it, and runs one more.
    proc = subprocess.Popen([sys.executable, '-c', WORKER, json.dumps(dict(conf, trials=4)),
                             str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        started = _wait_for_line(proc, 'trial 3: ', timeout=120)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    assert started, 'the worker never started trial 3'
    assert _states(url, name) == ['COMPLETE', 'COMPLETE', 'PRUNED', 'RUNNING']
    search.run_study(dict(conf, trials=4), split, out, log=quiet)
    states = _states(url, name)
    assert states[:4] == ['COMPLETE', 'COMPLETE', 'PRUNED', 'FAIL']
    assert len(states) == 5 and states[4] in ('COMPLETE', 'PRUNED')
    assert json.loads((out / 'results.json').read_text())['study']['counts']['FAIL'] == 1

    # Another space is another study: refused before any trial, nothing written.
    before = (out / 'results.md').read_text()
    other = dict(conf, trials=5, space={'train.lr': {'log_uniform': [1e-5, 1e-4]}})
    with pytest.raises(ValueError, match='other settings .*space'):
        search.run_study(other, split, out, log=quiet)
    assert len(_states(url, name)) == 5 and (out / 'results.md').read_text() == before
    # Results of another study in the same folder are never overwritten.
    with pytest.raises(ValueError, match='results of another search'):
        search.run_study(dict(conf, study_name='other'), split, out, log=quiet)


def test_cli_refuses_bad_pruner_and_storage_before_writing(tmp_path, capsys):
    from camreloc_ros.tools import cli
    out = tmp_path / 'out'
    base = ['search', '--data', str(DATA), '--format', 'posed', '--out', str(out)]
    assert cli.main(base + ['pruner.name=sometimes']) == 1
    assert 'pruner.name' in capsys.readouterr().err
    assert cli.main(base + ['--storage', 'postgresql+nodriver://u:secret@db.invalid/x']) == 1
    err = capsys.readouterr().err
    assert '--storage postgresql+nodriver://u:***@db.invalid/x' in err and 'secret' not in err
    assert not out.exists()
