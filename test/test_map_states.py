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

"""``evaluate --map`` runs the node's state machine over the frames and reports its states.

On the 7-Scenes mini scene's six training frames (which the refiner poses to millimetres):
the states per frame land in ``refine_per_frame.txt`` and ``map_summary.json``, the
localization table in ``map_results.md``, ``reliability.png`` beside them; the state
machine's own settings and the frames' stamps reach it (a single refinement is not enough
to be localized by default, one is with ``confirmations: 1``, and time running backwards
resets it every frame).
"""

import json

import cv2
import numpy as np
import pytest

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.evaluation import localization_metrics as lm
from camreloc_ros.core.evaluation.map_eval import (evaluate_map, LOCALIZER_ROW,
                                                   NETWORK_ALWAYS_ROW, open_map,
                                                   REFINER_ALONE_ROW)
from camreloc_ros.core.geometry import pose_from_matrix
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.core.models.pose_model import build_model
from camreloc_ros.tools import map as map_tool
from camreloc_ros.tools.common import shared_data_dir

MINI = shared_data_dir() / '7scenes-stairs-mini'
pytestmark = pytest.mark.slow   # builds a SIFT map and refines 6 frames per run


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """Map, checkpoint, images, predictions and ground truth of the six training frames."""
    import torch
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp('states')
    frames = split_dataset(read_dataset(MINI, '7scenes'), 'train').frames
    pos = np.stack([f.pose_c2w[:3, 3] for f in frames])
    model = build_model('posenet', head={'width': 64})
    model.set_pose_stats(pos.mean(axis=0), max(float(np.linalg.norm(pos.std(axis=0))), 0.1))
    ckpt = model.save_checkpoint(d / 'model.pt', extra={'data': {'format': '7scenes'}})
    path = map_tool.main({}, {'model': ckpt, 'data': MINI, 'out': d / 'map.npz'},
                         log=lambda s: None)
    images = [read_rgb(f.image_path) for f in frames]
    preds = InferenceEngine.from_checkpoint(ckpt, device='cpu').predict_frames(images)
    gt_pos, gt_quat = pose_from_matrix(np.stack([f.pose_c2w for f in frames]))
    return {'lmap': open_map(path, ckpt), 'ckpt': ckpt, 'images': images, 'preds': preds,
            'names': [f.name for f in frames], 'gt_pos': gt_pos, 'gt_quat': gt_quat}


def _run(scene, out, stamps, state_conf=None):
    summary = evaluate_map(scene['lmap'], scene['ckpt'], scene['images'], scene['names'],
                           stamps, scene['preds'], scene['gt_pos'], scene['gt_quat'], out,
                           'mini', state_conf=state_conf, log=lambda s: None)
    rows = (out / 'refine_per_frame.txt').read_text().splitlines()
    assert rows[0].startswith('# name refined reason inliers') and \
        rows[0].endswith(' state source')
    per_frame = [tuple(r.split()[-2:]) for r in rows[1:]]
    return summary, per_frame


def test_the_state_machine_runs_over_the_frames_and_is_reported(scene, tmp_path):
    out = tmp_path / 'ev'
    summary, per_frame = _run(scene, out, [0.1 * i for i in range(6)])
    loc = json.loads((out / 'map_summary.json').read_text())['localization']
    assert per_frame == list(zip(loc['states'], loc['sources']))
    assert all(s in lm.STATES and src in lm.SOURCES for s, src in per_frame)
    # one refinement is a candidate, never localized; the next consistent one confirms it
    assert per_frame[0] == ('not_localized', 'refined') and not loc['published'][0]
    assert per_frame[1][0] == 'localized'
    rows = loc['rows']
    assert list(rows) == [NETWORK_ALWAYS_ROW, REFINER_ALONE_ROW, LOCALIZER_ROW]
    node = rows[LOCALIZER_ROW]
    assert node['frames'] == 6 and node['published'] == sum(loc['published'])
    assert node['availability'] == pytest.approx(loc['states'].count('localized') / 6)
    # the must-show: no wrong pose published as localized (the refiner is exact here)
    assert node['false_localizations'] == 0 and node['localized_published'] >= 1
    # an untrained network is metres off: published blindly, every pose is a false one
    assert rows[NETWORK_ALWAYS_ROW]['false_localizations'] == 6
    assert rows[REFINER_ALONE_ROW]['published'] == round(6 * summary['shares']['refined'])
    text = (out / 'map_results.md').read_text()
    assert '## Localization states' in text
    assert all(row in text for row in rows) and loc['table'] in text
    image = cv2.imread(str(out / 'reliability.png'))
    assert image is not None and image.shape[0] > 100
    assert 'localization' in summary   # the caller gets what the file holds


def test_state_settings_and_stamps_reach_the_state_machine(scene, tmp_path):
    _, once = _run(scene, tmp_path / 'once', None, {'confirmations': 1})
    assert once[0] == ('localized', 'refined')       # one refinement now suffices
    # without stamps a frame's time is its index / 30: the same states as those stamps
    _, by_index = _run(scene, tmp_path / 'index', [i / 30.0 for i in range(6)],
                       {'confirmations': 1})
    assert once == by_index
    # time running backwards resets the state machine at every frame: never confirmed
    _, back = _run(scene, tmp_path / 'back', [10.0 - i for i in range(6)])
    assert all(state == 'not_localized' for state, _ in back)
