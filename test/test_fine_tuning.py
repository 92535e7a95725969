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

"""The fine-tuning knobs of issue 23: a trunk learning rate and the input resolution."""

import numpy as np
import pytest
import torch

from camreloc_ros.core.config import ConfigError
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset, train_val_split
from camreloc_ros.core.data.transforms import Preprocessor, read_rgb
from camreloc_ros.core.inference.runtimes import TorchRuntime
from camreloc_ros.core.models.pose_model import build_model, model_conf, PoseModel
from camreloc_ros.core.training.feature_cache import cache_key, frozen_features
from camreloc_ros.core.training.trainer import Trainer, train_conf
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'


@pytest.fixture(scope='module')
def frames():
    dataset = read_dataset(DATA, 'posed')
    train, val = train_val_split(split_dataset(dataset, 'train').frames, 25, 8)
    return train[:8], val[:4]


def _trainer(tmp_path, frames, scale: float) -> Trainer:
    conf = {'model': {'backbone': {'trainable_stages': 2}, 'head': {'width': 64}},
            'train': {'lr': 1e-3, 'trunk_lr_scale': scale, 'batch_size': 8, 'epochs': 1,
                      'keep_epochs': 0, 'cache_dir': str(tmp_path / 'cache'),
                      'calibrate_covariance': False}}
    return Trainer(conf, frames[0], frames[1], tmp_path / f'run{scale}', log=lambda s: None,
                   progress_bars=False)


def test_trunk_lr_scale_sets_the_trunk_group_and_its_step(tmp_path, frames):
    trainer = _trainer(tmp_path, frames, 0.1)
    groups = {g['name']: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {'head', 'trunk'}
    assert groups['head']['lr'] == pytest.approx(1e-3)
    assert groups['trunk']['lr'] == pytest.approx(1e-4)
    trunk = [p for p in trainer.model.backbone.trainable.parameters() if p.requires_grad]
    assert {id(p) for p in groups['trunk']['params']} == {id(p) for p in trunk}
    head = list(trainer.model.head.parameters())
    assert {id(p) for p in head} <= {id(p) for p in groups['head']['params']}
    before = {id(p): p.detach().clone() for p in trunk + head}
    trainer.fit()   # 8 frames, batch 8: exactly one Adam step
    # Adam's first step moves every weight by about lr (sign of the gradient): the trunk's
    # by lr * scale, the head's by the full lr
    trunk_step = max(float((p.detach() - before[id(p)]).abs().max()) for p in trunk)
    head_step = max(float((p.detach() - before[id(p)]).abs().max()) for p in head)
    assert 0.5e-4 < trunk_step <= 1.01e-4
    assert 0.5e-3 < head_step <= 1.01e-3


def test_trunk_lr_scale_one_is_the_single_group_of_before(tmp_path, frames):
    trainer = _trainer(tmp_path, frames, 1.0)
    assert len(trainer.optimizer.param_groups) == 1
    assert trainer.optimizer.param_groups[0]['lr'] == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match='train.trunk_lr_scale'):
        train_conf({'train': {'trunk_lr_scale': 0.0}})


def test_resuming_with_another_trunk_lr_scale_is_refused(tmp_path, frames):
    _trainer(tmp_path, frames, 1.0).fit()
    other = _trainer(tmp_path, frames, 0.5)
    other.out_dir = tmp_path / 'run1.0'
    with pytest.raises(ValueError, match='trunk_lr_scale'):
        other.resume()


def test_input_size_changes_the_input_the_features_and_the_cache_key(tmp_path, frames):
    small = build_model('posenet')
    large = build_model('posenet', backbone={'input_size': 320})
    assert small.spec.input_size == 224 and large.spec.input_size == 320
    few = frames[0][:2]
    pre = Preprocessor(large.spec.input_size, large.spec.mean, large.spec.std)
    assert pre(read_rgb(few[0].image_path)).shape == (3, 320, 320)
    # the frozen map grows with the input (Lite0, stride 32: 7x7 at 224, 10x10 at 320)
    assert large.backbone.frozen_shape[0] == small.backbone.frozen_shape[0]
    assert large.backbone.frozen_shape[1:] == tuple(
        s * 320 // 224 for s in small.backbone.frozen_shape[1:])
    pre_small = Preprocessor(small.spec.input_size, small.spec.mean, small.spec.std)
    assert cache_key(small, pre_small, few) != cache_key(large, pre, few)
    cache = tmp_path / 'cache'
    a = frozen_features(small, few, cache)
    b = frozen_features(large, few, cache)
    assert len(list(cache.glob('*.npy'))) == 2   # never one file for both sizes
    assert a.shape[2:] != b.shape[2:] and b.shape[2:] == large.backbone.frozen_shape[1:]
    # the whole model runs at the new size, and inference reads it from the model config
    with torch.no_grad():
        out = large.eval()(torch.zeros(1, 3, 320, 320))
    assert out['pos'].shape == (1, 3)
    assert TorchRuntime(large).preprocessing['size'] == 320
    assert TorchRuntime(small).preprocessing['size'] == 224


def test_input_size_survives_a_checkpoint_and_bad_values_are_refused(tmp_path):
    model = build_model('posenet', backbone={'input_size': 256}, head={'width': 32})
    path = model.save_checkpoint(tmp_path / 'm.pt')
    again = PoseModel.from_checkpoint(path)
    assert again.spec.input_size == 256
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert np.allclose(model.eval()(x)['pos'].numpy(), again(x)['pos'].numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match='model.backbone.input_size'):
        model_conf(None, {'backbone': {'input_size': 16}})
