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

"""Plain ``camreloc evaluate`` (no map) scores retrieval top-1 and the oracle beside the network.

On the first 100 frames of the HoloLens walk (75 training, 25 held out) with test_map's
ImageNet-trunk checkpoint: the rows and the verdict are written, the retrieval row is the
training poses of the retrieved images, and the oracle is never worse than retrieval.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_bags import _posed_folder
from test_map import _checkpoint

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import checkpoint_train_frames, split_dataset
from camreloc_ros.core.evaluation.metrics import load_per_frame, pose_errors
from camreloc_ros.core.geometry import pose_from_matrix
from camreloc_ros.tools import cli, evaluate

LIMIT = 10
pytestmark = pytest.mark.slow   # evaluates with retrieval baselines


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp('eval_baselines')
    data = _posed_folder(d / 'walk100', 100)
    return _checkpoint(d / 'model.pt', data, 'posed'), data


def test_evaluate_writes_retrieval_and_oracle_rows_and_the_verdict(setup, tmp_path, capsys):
    ckpt, data = setup
    out = evaluate.main({'device': 'cpu', 'limit': LIMIT},
                        {'checkpoint': ckpt, 'data': data, 'out': tmp_path / 'ev'})
    printed = capsys.readouterr().out
    md = (out / 'results.md').read_text()
    for text in (printed, md):
        assert '| model test' in text and '| retrieval top-1' in text
        assert '| oracle: nearest training pose' in text
        assert 'network beats retrieval: ' in text
    base = json.loads((out / 'summary.json').read_text())['baselines']
    rows = base['rows']
    assert list(rows) == ['retrieval top-1', 'oracle: nearest training pose']
    assert isinstance(base['network_beats_retrieval'], bool)
    # the training frames are the map's (the checkpoint's split), never a scored one
    train = checkpoint_train_frames(data, 'posed', {}, {})[1]
    assert base['train_frames'] == len(train) == 75
    test = split_dataset(read_dataset(data, 'posed'), 'test').frames[:LIMIT]
    assert not {f.name for f in test} & {f.name for f in train}
    # the retrieval row is the error of the retrieved training poses
    by_name = {f.name: f for f in train}
    assert len(base['top1']) == LIMIT and set(base['top1']) <= set(by_name)
    per = load_per_frame(out / 'per_frame.txt')
    assert per['names'] == [f.name for f in test]
    gt_pos, gt_quat = pose_from_matrix(np.stack([f.pose_c2w for f in test]))
    ret_pos, ret_quat = pose_from_matrix(np.stack([by_name[n].pose_c2w for n in base['top1']]))
    pos_err, rot_err = pose_errors(ret_pos, ret_quat, gt_pos, gt_quat)
    assert rows['retrieval top-1']['position_m']['median'] == pytest.approx(np.median(pos_err))
    assert rows['retrieval top-1']['orientation_deg']['median'] == pytest.approx(
        np.median(rot_err))
    # The oracle is the best any retrieval can do by its measure (metres + degrees / 10 per
    # frame; not by the median of one of them): recomputed by brute force over the training
    # poses, it is the row written, and per frame never costlier than the retrieved pose.
    oracle, retrieval = rows['oracle: nearest training pose'], rows['retrieval top-1']
    assert oracle['count'] == retrieval['count'] == LIMIT
    tr_pos, tr_quat = pose_from_matrix(np.stack([f.pose_c2w for f in train]))
    best_pos, best_rot, best_cost = [], [], []
    for p, q in zip(gt_pos, gt_quat):
        e_pos, e_rot = pose_errors(tr_pos, tr_quat, np.broadcast_to(p, tr_pos.shape),
                                   np.broadcast_to(q, tr_quat.shape))
        i = int(np.argmin(e_pos + e_rot / 10.0))
        best_pos.append(e_pos[i])
        best_rot.append(e_rot[i])
        best_cost.append(e_pos[i] + e_rot[i] / 10.0)
    assert oracle['position_m']['median'] == pytest.approx(np.median(best_pos), abs=1e-6)
    assert oracle['orientation_deg']['median'] == pytest.approx(np.median(best_rot), abs=1e-4)
    assert np.all(np.array(best_cost) <= pos_err + rot_err / 10.0 + 1e-9)


def test_training_frames_retrieve_themselves_and_the_verdict_says_so(setup, tmp_path):
    ckpt, data = setup
    out = evaluate.main({'device': 'cpu', 'limit': 3, 'split': 'train'},
                        {'checkpoint': ckpt, 'data': data, 'out': tmp_path / 'ev'})
    base = json.loads((out / 'summary.json').read_text())['baselines']
    assert base['rows']['retrieval top-1']['position_m']['max'] < 1e-9
    assert base['top1'] == load_per_frame(out / 'per_frame.txt')['names']
    assert '3 of the 3 scored frames are training frames' in base['verdict']
    assert base['verdict'] in (out / 'results.md').read_text()


def test_no_baselines_and_onnx_models(setup, tmp_path, capsys):
    ckpt, data = setup
    assert cli.main(['evaluate', str(ckpt), str(data), '--limit', '3', '--device', 'cpu',
                     '--no-baselines', '--out', str(tmp_path / 'ev')]) == 0
    assert 'retrieval' not in capsys.readouterr().out
    assert 'retrieval' not in (tmp_path / 'ev' / 'results.md').read_text()
    assert 'baselines' not in json.loads((tmp_path / 'ev' / 'summary.json').read_text())
    # an exported model has no trunk for the descriptor: said, not silently left out
    base = evaluate.retrieval_baselines(Path('model.onnx'), [], [], [], None, None, 'x')
    assert base['rows'] == {} and base['network_beats_retrieval'] is None
    assert base['verdict'].startswith('retrieval baseline not shown: model.onnx is an ONNX')


def test_training_descriptors_are_cached_by_trunk_and_file(setup, tmp_path, monkeypatch):
    """The second evaluation of a checkpoint describes nothing; a changed image is redone."""
    from camreloc_ros.core.localization.retrieval import describe_files, GlobalDescriptor

    ckpt, data = setup
    files = []
    for src in sorted((data / 'images').iterdir())[:3]:
        files.append(tmp_path / src.name)
        files[-1].write_bytes(src.read_bytes())
    desc = GlobalDescriptor.from_checkpoint(ckpt)
    cache = tmp_path / 'cache'
    first = describe_files(desc, files, cache)
    assert first.shape == (3, desc.dim) and len(list(cache.glob('*.npy'))) == 1
    real, calls = GlobalDescriptor.__call__, []

    def counting(self, images):
        calls.append(1)
        return real(self, images)
    monkeypatch.setattr(GlobalDescriptor, '__call__', counting)
    np.testing.assert_array_equal(describe_files(desc, files, cache), first)
    assert calls == []
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    np.testing.assert_allclose(describe_files(desc, files, cache), first, atol=1e-6)
    assert len(calls) == 3 and len(list(cache.glob('*.npy'))) == 2
