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


"""Fixtures several test modules share: real checkpoints, made once per session."""

import pytest
from support import make_checkpoints


@pytest.fixture(scope='session')
def checkpoints(tmp_path_factory):
    """Real lite0 regressor and GRU (window 4) checkpoints (read-only for every test)."""
    return make_checkpoints(tmp_path_factory.mktemp('checkpoints'))


@pytest.fixture(scope='module')
def offline(checkpoints):
    """The offline engine on the regressor, as the evaluation tools use it (CPU)."""
    from camreloc_ros.core.inference.engine import InferenceEngine

    return InferenceEngine.from_checkpoint(checkpoints['reg'], device='cpu')


@pytest.fixture(scope='session')
def ckpt(tmp_path_factory):
    """An untrained lite0 regressor (random head) with pose statistics near the walk."""
    from camreloc_ros.core.models.pose_model import build_model

    model = build_model('posenet', backbone={'pretrained': False})
    model.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    return model.save_checkpoint(tmp_path_factory.mktemp('ckpt') / 'posenet.pt')
