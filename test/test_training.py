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

"""Training on real posed images: the loss falls, runs repeat, resume after kill -9 is exact."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys

import numpy as np
import pytest

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset, train_val_split
from camreloc_ros.core.training.feature_cache import frozen_features
from camreloc_ros.core.models.pose_model import build_model, PoseModel
from camreloc_ros.core.training.trainer import Trainer, train_conf
from camreloc_ros.tools.common import shared_data_dir
from support import wait_for_file

DATA = shared_data_dir() / 'hololens-office'
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow   # trains past a few epochs


def _conf(tmp_path, **train):
    return {'model': {'backbone': {'trainable_stages': 1}, 'head': {'width': 256}},
            'train': dict({'batch_size': 8, 'limit': 48, 'seed': 3,
                           'cache_dir': str(tmp_path / 'cache')}, **train)}


@pytest.fixture(scope='module')
def frames():
    dataset = read_dataset(DATA, 'posed')
    # as `camreloc train` splits: test blocks set aside, validation from the training side
    train, val = train_val_split(split_dataset(dataset, 'train').frames, 25, 8)
    return train, val[:16]


def test_two_epochs_lower_the_loss(tmp_path, frames):
    trainer = Trainer(_conf(tmp_path, epochs=2, lr=1e-3), frames[0], frames[1],
                      tmp_path / 'run', log=lambda s: None, progress_bars=False)
    trainer.fit()
    losses = [h['loss'] for h in trainer.history]
    assert losses[1] < losses[0]
    for name in ('epoch_001.pt', 'epoch_002.pt', 'last.pt', 'best.pt', 'history.json'):
        assert (tmp_path / 'run' / name).is_file(), name
    model = PoseModel.from_checkpoint(tmp_path / 'run' / 'last.pt')
    assert model.checkpoint_extra['epoch'] == 2
    assert model.checkpoint_extra['data']['block'] == 25
    pos = np.stack([f.pose_c2w[:3, 3] for f in frames[0][:48]])
    assert np.allclose(model.pos_mean.numpy(), pos.mean(0), atol=1e-5)


def test_same_seed_same_run(tmp_path, frames):
    runs = []
    for i in range(2):
        trainer = Trainer(_conf(tmp_path, epochs=1), frames[0], frames[1], tmp_path / f'r{i}',
                          log=lambda s: None, progress_bars=False)
        runs.append(trainer.fit()['loss'])
    assert runs[0] == runs[1]


AUGMENT = {'brightness': 0.2, 'contrast': 0.2, 'crop_scale': 0.1}


@pytest.mark.parametrize('augment', [False, True], ids=['cached', 'augmented'])
def test_resume_after_kill_gives_the_same_next_epoch(tmp_path, frames, augment):
    """Also with augmentation: its draws are seeded per (seed, epoch, frame), so the killed
    run (2 data-loader workers) and the reference (no worker) see the same pixels."""
    conf = _conf(tmp_path, epochs=3, workers=0)
    if augment:
        conf['data'] = {'augment': AUGMENT}
    reference = Trainer(conf, frames[0], frames[1], tmp_path / 'ref', log=lambda s: None,
                        progress_bars=False)
    reference.fit()
    ref_losses = [h['loss'] for h in reference.history]

    run = tmp_path / 'killed'
    code = ('import json, sys\n'
            'from camreloc_ros.tools import train\n'
            'conf = json.loads(sys.argv[1])\n'
            'train.main(conf, {"data": sys.argv[2], "out": sys.argv[3]}, progress_bars=False)\n')
    long_conf = _conf(tmp_path, epochs=50, workers=2)
    if augment:
        long_conf['data'] = {'augment': AUGMENT}
    proc = subprocess.Popen([sys.executable, '-c', code, json.dumps(long_conf), str(DATA),
                             str(run)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_file(run / 'last.pt', proc, 240)   # the first epoch
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    resumed = Trainer(long_conf, frames[0], frames[1], run, log=lambda s: None,
                      progress_bars=False)
    assert resumed.resume()
    done = resumed.epoch
    assert 1 <= done < 3
    record = resumed.train_epoch()
    assert record['epoch'] == done + 1
    assert record['loss'] == pytest.approx(ref_losses[done], rel=1e-6, abs=1e-7)


def test_resume_refuses_another_config(tmp_path, frames):
    Trainer(_conf(tmp_path, epochs=1), frames[0], frames[1], tmp_path / 'a',
            log=lambda s: None, progress_bars=False).fit()
    other = _conf(tmp_path, epochs=2)
    other['loss'] = {'name': 'nh'}
    trainer = Trainer(other, frames[0], frames[1], tmp_path / 'a', log=lambda s: None,
                      progress_bars=False)
    with pytest.raises(ValueError, match='another model or loss'):
        trainer.resume()


def test_feature_cache_is_keyed_by_what_it_depends_on(tmp_path, frames):
    cache = tmp_path / 'cache'
    few = frames[0][:4]
    model = build_model('posenet', backbone={'trainable_stages': 3})
    first = np.array(frozen_features(model, few, cache))
    assert len(list(cache.glob('*.npy'))) == 1
    again = frozen_features(model, few, cache)
    assert np.array_equal(first, again) and len(list(cache.glob('*.npy'))) == 1
    frozen_features(build_model('posenet', backbone={'trainable_stages': 2}), few, cache)
    frozen_features(model, few[:3], cache)
    assert len(list(cache.glob('*.npy'))) == 3
    with __import__('torch').no_grad():
        next(model.backbone.frozen.parameters()).add_(0.01)
    frozen_features(model, few, cache)
    assert len(list(cache.glob('*.npy'))) == 4


def test_cached_features_equal_the_frozen_trunk(tmp_path, frames):
    import torch
    from camreloc_ros.core.data.transforms import Preprocessor, read_rgb
    model = build_model('posenet').eval()
    feats = frozen_features(model, frames[0][:2], tmp_path)
    spec = model.spec
    pre = Preprocessor(spec.input_size, spec.mean, spec.std)
    x = torch.from_numpy(np.stack([pre(read_rgb(f.image_path)) for f in frames[0][:2]]))
    with torch.no_grad():
        direct = model.backbone.forward_frozen(x).numpy()
    assert np.allclose(feats, direct, atol=1e-5)


def test_unknown_training_keys_raise():
    with pytest.raises(ValueError, match='epocs'):
        train_conf({'train': {'epocs': 3}})


def test_temporal_gru_trains_on_windows_inside_blocks(tmp_path, frames):
    conf = _conf(tmp_path, epochs=1, limit=None)
    conf['model']['head'] = {'name': 'gru', 'window': 4, 'width': 64, 'gru_hidden': 32}
    train = frames[0][35:65]       # indices 60..74, then the held-out gap, then 100..114
    assert [train[14].index, train[15].index] == [74, 100]
    trainer = Trainer(conf, train, frames[1], tmp_path / 'gru', log=lambda s: None,
                      progress_bars=False)
    batches = trainer._batches(1)
    windows = [w for b in batches for w in b.tolist()]
    assert windows and all(len(w) == 4 for w in windows)
    for w in windows:
        idx = [train[i].index for i in w]
        assert idx == list(range(idx[0], idx[0] + 4)), 'a window crossed a gap'
    assert len(windows) == 6          # 12 + 12 possible windows, a quarter per epoch
    assert trainer._batches(1)[0].tolist() != trainer._batches(2)[0].tolist()
    record = trainer.fit()
    assert np.isfinite(record['loss']) and np.isfinite(record['val_median_pos'])
