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

"""The fault suite: what a hostile or unlucky user does, and that nothing is lost or executed.

Checkpoints from strangers (pickle payloads), damaged files, outputs over existing paths,
bad overrides, a full disk and the litter of killed runs. Bag and node faults are in
``test_faults_bags.py`` and ``test_faults_node.py``.
"""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from camreloc_ros.core.config import ConfigError, parse_overrides
from camreloc_ros.core.engine import InferenceEngine
from camreloc_ros.core.io import atomic_write_text, clean_stale_temps, temp_prefix
from camreloc_ros.core.models.pose_model import (build_model, CheckpointError,
                                                 load_checkpoint_file, PoseModel, save_atomic)
from camreloc_ros.core.training import train_conf, Trainer
from camreloc_ros.tools import evaluate, export, train
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'
ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Pickles as a call of ``os.system``: what a hostile checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    model = build_model('posenet', head={'width': 64})
    model.set_pose_stats([1.0, 0.0, 0.5], 2.0)
    return model.save_checkpoint(tmp_path_factory.mktemp('ckpt') / 'model.pt')


def _payload_copy(checkpoint: Path, folder: Path) -> tuple[Path, Path]:
    """A real checkpoint with a code payload added: it would evaluate normally if unpickled."""
    marker = folder / 'payload_ran'
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt['extra'] = {'note': Payload(marker)}
    path = folder / 'payload.pt'
    torch.save(ckpt, path)
    return path, marker


def test_payload_checkpoint_is_refused_everywhere_and_never_runs(checkpoint, tmp_path):
    path, marker = _payload_copy(checkpoint, tmp_path)
    entries = {
        'load': lambda: PoseModel.from_checkpoint(path),
        'evaluate': lambda: evaluate.main({'format': 'posed', 'split': 'test'},
                                          {'checkpoint': path, 'data': DATA,
                                           'out': tmp_path / 'eval'}),
        'export': lambda: export.main({}, {'checkpoint': path, 'out': tmp_path / 'x.onnx'}),
        'engine torch (node, bag-eval)': lambda: InferenceEngine.from_checkpoint(
            path, runtime='torch'),
        'engine onnx (node default on a CPU)': lambda: InferenceEngine.from_checkpoint(
            path, runtime='onnx', cache_dir=tmp_path / 'onnx'),
    }
    for name, call in entries.items():
        with pytest.raises(CheckpointError, match='refused') as info:
            call()
        assert str(path) in str(info.value), name
        assert 'GLOBAL' in str(info.value), name
        assert not marker.exists(), f'{name} ran the payload'
    run = tmp_path / 'run'
    run.mkdir()
    shutil.copy(path, run / 'last.pt')
    trainer = Trainer({'model': {'backbone': {'trainable_stages': 1}}, 'train': {'limit': 4}},
                      _frames()[:4], [], run, log=lambda s: None, progress_bars=False)
    with pytest.raises(CheckpointError, match='refused'):
        trainer.resume()
    assert not marker.exists(), 'train --resume ran the payload'


def test_payload_refused_by_the_cli_with_exit_1(checkpoint, tmp_path):
    path, marker = _payload_copy(checkpoint, tmp_path)
    result = subprocess.run([sys.executable, '-m', 'camreloc_ros.tools.cli', 'export',
                             str(path), '--out', str(tmp_path / 'x.onnx')],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'refused' in result.stderr and str(path) in result.stderr
    assert not marker.exists()
    assert not (tmp_path / 'x.onnx').exists()


def test_damaged_checkpoint_names_the_file(checkpoint, tmp_path):
    data = bytearray(checkpoint.read_bytes())
    rng = np.random.default_rng(7)
    start = len(data) // 2          # inside the weights (most of the file)
    data[start:start + 1000] = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()
    damaged = tmp_path / 'last.pt'
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        PoseModel.from_checkpoint(damaged)
    assert str(damaged) in str(info.value)
    assert 'damaged' in str(info.value)
    with pytest.raises(CheckpointError, match='damaged'):
        InferenceEngine.from_checkpoint(damaged, runtime='onnx', cache_dir=tmp_path / 'onnx')


def test_non_finite_weights_are_refused(tmp_path):
    model = build_model('posenet', head={'width': 64})
    with torch.no_grad():
        model.head.out['pos'].weight[0, 0] = float('nan')
    path = model.save_checkpoint(tmp_path / 'nan.pt')
    with pytest.raises(CheckpointError, match='non-finite weights'):
        PoseModel.from_checkpoint(path)


def test_checkpoint_path_that_is_a_directory(tmp_path):
    for call in (lambda: PoseModel.from_checkpoint(tmp_path),
                 lambda: InferenceEngine.from_checkpoint(tmp_path, runtime='onnx')):
        with pytest.raises(CheckpointError, match='is a directory'):
            call()


# ----------------------------------------------------------------------------- training

def _frames():
    from camreloc_ros.core.data.datasets import read_dataset
    return read_dataset(DATA, 'posed').frames


def _tiny(tmp_path: Path, **train_keys) -> dict:
    return {'model': {'backbone': {'trainable_stages': 1}, 'head': {'width': 64}},
            'train': dict({'epochs': 1, 'batch_size': 4, 'limit': 8,
                           'cache_dir': str(tmp_path / 'cache')}, **train_keys)}


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_train_into_an_existing_run_is_refused(tmp_path):
    run = tmp_path / 'run'
    quiet = {'log': lambda s: None, 'progress_bars': False}
    train.main(_tiny(tmp_path), {'data': DATA, 'out': run}, **quiet)
    before = _snapshot(run)
    assert {'last.pt', 'best.pt', 'epoch_001.pt', 'train_conf.yaml'} <= before.keys()
    with pytest.raises(ValueError, match='already holds a training run.*--resume'):
        train.main(_tiny(tmp_path, epochs=2), {'data': DATA, 'out': run}, **quiet)
    assert _snapshot(run) == before
    # --resume with another model config is refused before train_conf.yaml is rewritten
    other = _tiny(tmp_path, epochs=2)
    other['model']['head']['width'] = 32
    with pytest.raises(ValueError, match='another model or loss'):
        train.main(other, {'data': DATA, 'out': run}, resume=True, **quiet)
    assert _snapshot(run) == before
    # a bad override is refused before anything is read or written
    with pytest.raises(ConfigError, match='train.epochs'):
        train.main(_tiny(tmp_path, epochs=0), {'data': DATA, 'out': run}, resume=True,
                   **quiet)
    assert _snapshot(run) == before
    # a folder with run files but no last.pt cannot be "resumed" into a mix of two runs
    (run / 'last.pt').unlink()
    with pytest.raises(ValueError, match='no last.pt'):
        train.main(_tiny(tmp_path), {'data': DATA, 'out': run}, resume=True, **quiet)


@pytest.mark.parametrize('override, key', [
    ('train.epochs=0', 'train.epochs'),
    ('train.epochs=abc', 'train.epochs'),
    ('train.lr=nan', 'train.lr'),
    ('train.lr=.nan', 'train.lr'),
    ('train.lr=-1e-3', 'train.lr'),
    ('train.batch_size=0', 'train.batch_size'),
    ('train.limit=-5', 'train.limit'),
    ('train.cache=maybe', 'train.cache'),
    ('data.every=1', 'data.every'),
    ('loss.name=l3', 'loss.name'),
    ('model.head.dropout=1.5', 'model.head.dropout'),
    ('model.head.window=0', 'model.head.window'),
    ('model.backbone.trainable_stages=-1', 'model.backbone.trainable_stages'),
])
def test_overrides_are_type_and_range_checked(override, key):
    with pytest.raises(ConfigError) as info:
        train_conf(parse_overrides([override]))
    assert repr(key) in str(info.value)


def test_cli_bad_override_exits_1_and_writes_nothing(tmp_path):
    run = tmp_path / 'run'
    result = subprocess.run([sys.executable, '-m', 'camreloc_ros.tools.cli', 'train',
                             '--data', str(DATA), '--format', 'posed', '--out', str(run),
                             'train.batch_size=0'],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "'train.batch_size'" in result.stderr and 'Traceback' not in result.stderr
    assert not run.exists()


def test_stale_temporaries_of_killed_runs_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    ours = tmp_path / f'{temp_prefix("last.pt")}abc'
    litter = [tmp_path / f'.last.pt.{dead.pid}.tmpx1y2',
              tmp_path / f'.abc.npy.{dead.pid}.tmpq.npy']
    keep = [ours, tmp_path / '.last.pt.notes', tmp_path / 'epoch_001.pt']
    for p in litter + keep:
        p.write_bytes(b'x')
    removed = clean_stale_temps(tmp_path)
    assert sorted(removed) == sorted(litter)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in litter)


# ----------------------------------------------------------------------------- full disk

@pytest.fixture
def tiny_disk(tmp_path):
    """A 40 MiB tmpfs (needs root and mount rights; skipped with the reason otherwise)."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which('mount') is None:
        pytest.skip('a full-disk test needs root to mount a small tmpfs')
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here: {result.stderr.strip()}')
    try:
        yield mount
    finally:
        subprocess.run(['umount', str(mount)], check=False)


def test_full_disk_names_the_file_and_keeps_earlier_checkpoints(tiny_disk):
    model = build_model('posenet')        # ~30 MB: one fits in 40 MiB, two do not
    first = model.save_checkpoint(tiny_disk / 'last.pt')
    saved_bias = model.head.out['pos'].bias.detach().clone()
    with torch.no_grad():
        model.head.out['pos'].bias.add_(1.0)
    with pytest.raises(OSError, match='no space left') as info:
        model.save_checkpoint(tiny_disk / 'last.pt')
    assert str(tiny_disk / 'last.pt') in str(info.value)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ['last.pt']   # no litter
    reloaded = load_checkpoint_file(first)                               # intact
    assert torch.equal(reloaded['state_dict']['head.out.pos.bias'], saved_bias)
    with pytest.raises(OSError, match=f'no space left.*{tiny_disk / "big.txt"}'):
        atomic_write_text(tiny_disk / 'big.txt', 'x' * (30 << 20))
    with pytest.raises(OSError, match='no space left'):
        save_atomic({'state_dict': {}, 'blob': torch.zeros(20 << 20)}, tiny_disk / 'x.pt')
