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

"""The evaluate and saliency tools on the real hololens-office data, untrained models (CPU)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from camreloc_ros.core import geometry as g
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import frame_breaks, split_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.core.evaluation.metrics import load_per_frame, load_tum
from camreloc_ros.core.models.pose_model import build_model
from camreloc_ros.tools import cli, evaluate, saliency
from camreloc_ros.tools.common import frame_stamps
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'
BLOCK, EVERY = 25, 4
LIMIT = 30   # the first 30 test frames: two held-out blocks (a gap), ~3 s of CPU inference
pytestmark = pytest.mark.slow   # trains and evaluates


def _checkpoint(path: Path, name: str = 'posenet', backbone: str = 'efficientnet_lite0') -> Path:
    """An untrained model with the training split's pose statistics, saved."""
    train = split_dataset(read_dataset(DATA, 'posed'), 'train', BLOCK, EVERY).frames
    pos = np.stack([f.pose_c2w[:3, 3] for f in train])
    model = build_model(name, backbone={'pretrained': False, 'name': backbone})
    model.set_pose_stats(pos.mean(axis=0), float(np.linalg.norm(pos.std(axis=0))))
    return model.save_checkpoint(
        path, extra={'data': {'format': 'posed', 'block': BLOCK, 'every': EVERY}})


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp('ckpt') / 'posenet.pt')


@pytest.fixture(scope='module')
def split_frames():
    return split_dataset(read_dataset(DATA, 'posed'), 'test', BLOCK, EVERY).frames[:LIMIT]


def test_evaluate_matches_direct_computation(ckpt, split_frames, tmp_path, capsys):
    # format, block and every come from the checkpoint's extra['data'].
    out = evaluate.main({'device': 'cpu', 'batch_size': 16, 'limit': LIMIT}, {
        'checkpoint': ckpt, 'data': DATA, 'out': tmp_path / 'eval'})
    assert out == tmp_path / 'eval'
    printed = capsys.readouterr().out
    assert '| posenet test' in printed and 'median pos (m)' in printed

    per = load_per_frame(out / 'per_frame.txt')
    assert per['names'] == [f.name for f in split_frames]
    indices = [f.index for f in split_frames]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert len(split_frames) == LIMIT and indices[-1] - indices[0] > LIMIT  # spans a gap

    engine = InferenceEngine.from_checkpoint(ckpt, device='cpu')
    preds = engine.predict_frames([read_rgb(f.image_path) for f in split_frames])
    pos = np.stack([p.position for p in preds])
    quat = np.stack([p.quaternion for p in preds])
    gt_pos, gt_quat = g.pose_from_matrix(np.stack([f.pose_c2w for f in split_frames]))
    np.testing.assert_allclose(per['position'], pos, atol=1e-6)
    np.testing.assert_allclose(per['quaternion'], quat, atol=1e-6)
    np.testing.assert_allclose(per['pos_err_m'], g.position_error(pos, gt_pos), atol=1e-6)
    np.testing.assert_allclose(per['rot_err_deg'], g.orientation_error_deg(quat, gt_quat),
                               atol=1e-6)

    # TUM stamps: no timestamps in 'posed' data, so index / 30; gt is the dataset pose.
    stamps, tum_pos, tum_quat = load_tum(out / 'gt_tum.txt')
    np.testing.assert_allclose(stamps, np.array(indices) / 30.0, atol=1e-6)
    np.testing.assert_allclose(tum_pos, gt_pos, atol=1e-9)
    assert np.all(g.orientation_error_deg(tum_quat, gt_quat) < 1e-6)

    summary = json.loads((out / 'summary.json').read_text())
    assert summary['summary']['count'] == len(split_frames)
    assert summary['info']['block'] == BLOCK and summary['info']['format'] == 'posed'
    assert summary['summary']['position_m']['median'] == pytest.approx(
        float(np.median(g.position_error(pos, gt_pos))), abs=1e-9)
    for name in ('results.md', 'trajectory_topdown.png', 'error_cdf.png', 'pred_tum.txt'):
        assert (out / name).is_file()
    assert cv2.imread(str(out / 'trajectory_topdown.png')) is not None


def test_split_params_priority():
    extra = {'data': {'block': 10, 'every': 3}}
    assert evaluate.split_params({'block': None, 'every': None}, extra) == (10, 3)
    assert evaluate.split_params({'block': 50, 'every': None}, extra) == (50, 3)
    assert evaluate.split_params({'block': None, 'every': None}, {}) == (25, 4)


def test_window_runs_and_stamps_break_at_gaps(split_frames):
    runs = np.cumsum(frame_breaks(split_frames)).tolist()   # the run id of each frame
    # Two held-out blocks (25 frames, then the first 5 of the next): two runs, so no
    # temporal window spans the gap between them.
    assert [runs.count(r) for r in dict.fromkeys(runs)] == [25, LIMIT - 25]
    stamps = frame_stamps(split_frames)
    assert stamps == pytest.approx([f.index / 30.0 for f in split_frames])


def test_evaluate_cli_and_errors(ckpt, tmp_path):
    out = tmp_path / 'cli'
    rc = cli.main(['evaluate', str(ckpt), str(DATA), '--format', 'posed', '--split', 'train',
                   '--limit', '5', '--device', 'cpu', '--out', str(out)])
    assert rc == 0
    assert len(load_per_frame(out / 'per_frame.txt')['names']) == 5
    with pytest.raises(FileNotFoundError, match='checkpoint'):
        evaluate.main({}, {'checkpoint': tmp_path / 'missing.pt', 'data': DATA})
    with pytest.raises(FileNotFoundError, match='dataset'):
        evaluate.main({}, {'checkpoint': ckpt, 'data': tmp_path / 'no-data'})
    assert cli.main(['evaluate', str(tmp_path / 'missing.pt'), str(DATA)]) == 1


def test_saliency_writes_one_png_per_image(ckpt, tmp_path):
    images = sorted((DATA / 'images').iterdir())[:2]
    paths = {'checkpoint': ckpt, 'images': images, 'out': tmp_path / 'sal'}
    out = saliency.main({'device': 'cpu'}, paths)
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f'{p.stem}_saliency.png' for p in images]
    for p in written:
        img = cv2.imread(str(p))
        assert img is not None and img.shape == (224, 448, 3)
        assert img[:, 224:].std() > 0   # a heatmap, not a blank


def test_saliency_temporal_model_and_folder(tmp_path):
    ckpt = _checkpoint(tmp_path / 'gru.pt', 'gru', 'resnet18')
    folder = tmp_path / 'imgs'
    folder.mkdir()
    src = sorted((DATA / 'images').iterdir())[0]
    (folder / src.name).write_bytes(src.read_bytes())
    out = saliency.main({'device': 'cpu'}, {'checkpoint': ckpt, 'images': [folder]})
    assert out == tmp_path / 'saliency'
    img = cv2.imread(str(out / f'{src.stem}_saliency.png'))
    assert img is not None and img.shape == (224, 448, 3)


def test_evaluate_onnx_runtime_gives_the_torch_numbers(ckpt, tmp_path):
    rows = {}
    for runtime in ('torch', 'onnx'):
        out = evaluate.main({'device': 'cpu', 'limit': 6, 'runtime': runtime, 'format': 'posed',
                             'baselines': False},
                            {'checkpoint': ckpt, 'data': DATA, 'out': tmp_path / runtime})
        rows[runtime] = load_per_frame(out / 'per_frame.txt')
    assert rows['torch']['names'] == rows['onnx']['names']
    assert np.allclose(rows['torch']['position'], rows['onnx']['position'], atol=1e-4)
    assert np.allclose(rows['torch']['rot_err_deg'], rows['onnx']['rot_err_deg'], atol=1e-2)
