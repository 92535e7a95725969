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

"""``camreloc map --bag``: a map from training bags, its camera from the bag's CameraInfo.

The bags are written by ``bag-from-dataset`` from the HoloLens walk (it writes
``/camera/camera_info`` when the folder has ``K.txt``); the checkpoint is test_map's
ImageNet-trunk model.
"""

import json

import numpy as np
import pytest
from test_bags import _posed_folder
from test_map import _checkpoint, map_table

from camreloc_ros.core.bags import Bag, camera_matrix
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.localization.map_file import load_map
from camreloc_ros.tools import bag_eval, bag_from_dataset, cli
from camreloc_ros.tools import map as map_tool
from camreloc_ros.tools.common import shared_data_dir

HOLO = shared_data_dir() / 'hololens-office'
IMAGE_TOPIC = '/camera/image_raw'
GT_TOPIC = '/ground_truth/pose'
N_FRAMES = 16
FAST = {'build': {'sift': {'max_keypoints': 1024}}}
pytestmark = pytest.mark.slow   # builds maps from bags


def _conf(tmp, **conf) -> dict:
    return dict(FAST, image_topic=IMAGE_TOPIC, gt_topic=GT_TOPIC, cache_dir=str(tmp), **conf)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """(checkpoint, bag, map) of the first 16 walk frames, built with ``--bag``."""
    d = tmp_path_factory.mktemp('map_bag')
    ckpt = _checkpoint(d / 'model.pt', HOLO, 'posed')
    bag = bag_from_dataset.main({'format': 'posed', 'limit': N_FRAMES},
                                {'data': HOLO, 'out': d / 'walk'})
    out = map_tool.main(_conf(d / 'cache'), {'model': ckpt, 'bags': [bag], 'out': d / 'map.npz'},
                        log=lambda s: None)
    return ckpt, bag, out


def test_map_from_a_bag_has_points_and_the_bags_camera(setup):
    ckpt, bag, path = setup
    lmap = load_map(path)
    assert len(lmap) == N_FRAMES                      # every image with ground truth
    assert all(name.startswith('walk/') for name in lmap.names)
    assert lmap.meta['points_from'] == 'triangulation' and len(lmap.points) > 100
    with Bag(bag) as b:
        K = camera_matrix(b, IMAGE_TOPIC)
    assert K is not None
    for k in lmap.K:
        np.testing.assert_allclose(k, K, atol=1e-9)
    # the bag's camera is the folder's K.txt (same image size)
    np.testing.assert_allclose(K, read_dataset(HOLO, 'posed').intrinsics.matrix(), atol=1e-6)
    ds = lmap.meta['dataset']
    assert ds['format'] == 'rosbag' and ds['frames'] == N_FRAMES
    assert [r['path'] for r in ds['bags']] == [str(bag.resolve())]
    assert len(ds['bags'][0]['sha256']) == 64
    assert ds['bags'][0]['intrinsics'] == 'CameraInfo /camera/camera_info'
    # the ground truth of the bag is the dataset's (as quaternions: rotations to 1e-5)
    frames = read_dataset(HOLO, 'posed').frames[:N_FRAMES]
    np.testing.assert_allclose(lmap.poses_c2w, np.stack([f.pose_c2w for f in frames]),
                               atol=1e-5)
    assert lmap.meta['split'] == {'name': 'train', 'all_frames': True}


def test_bag_eval_runs_with_a_bag_map(setup, tmp_path, capsys):
    ckpt, bag, path = setup
    conf = {'image_topic': IMAGE_TOPIC, 'gt_topic': GT_TOPIC, 'device': 'cpu'}
    out = bag_eval.main(conf, {'bag': bag, 'checkpoint': ckpt, 'out': tmp_path / 'ev',
                               'map': path})
    map_table(out)
    summary = json.loads((out / 'map_summary.json').read_text())
    assert summary['rows']['retrieval top-1']['count'] == N_FRAMES
    # a training frame retrieves itself: retrieval and the oracle are exact on the map's bag
    assert summary['rows']['oracle: nearest training pose']['position_m']['max'] < 1e-6
    assert summary['shares']['refined'] > 0.5
    assert 'retrieval' not in json.loads((out / 'bag_eval.json').read_text())
    # without a map there are no training images to retrieve from: said and recorded
    plain = bag_eval.main(conf, {'bag': bag, 'checkpoint': ckpt, 'out': tmp_path / 'plain'})
    line = json.loads((plain / 'bag_eval.json').read_text())['retrieval']
    assert line.startswith('retrieval baseline not shown: it needs the training images')
    assert 'pass --map' in line and line in capsys.readouterr().out


def test_bag_without_camera_info_needs_intrinsics(setup, tmp_path, capsys):
    ckpt, _, _ = setup
    folder = _posed_folder(tmp_path / 'walk4', 4)
    (folder / 'K.txt').unlink()                       # no intrinsics: no CameraInfo written
    bag = bag_from_dataset.main({'format': 'posed'}, {'data': folder, 'out': tmp_path / 'nocam'})
    with Bag(bag) as b:
        assert camera_matrix(b, IMAGE_TOPIC) is None
    out = tmp_path / 'map.npz'
    with pytest.raises(ValueError, match=rf'bag {bag} has no sensor_msgs/CameraInfo.*'
                       r'--intrinsics fx,fy,cx,cy'):
        map_tool.main(_conf(tmp_path / 'cache'), {'model': ckpt, 'bags': [bag], 'out': out},
                      log=lambda s: None)
    with pytest.raises(ValueError, match='--intrinsics must be fx,fy,cx,cy'):
        map_tool.main(_conf(tmp_path / 'cache', intrinsics='500,500,320'),
                      {'model': ckpt, 'bags': [bag], 'out': out}, log=lambda s: None)
    assert not out.exists()
    # --intrinsics: that camera for every image (sized as stored in the bag)
    # (4 frames triangulate too few points for the refusal floor: this checks the camera only)
    K = read_dataset(HOLO, 'posed').intrinsics
    few = {'build': dict(FAST['build'], min_points_per_image=0)}
    map_tool.main(dict(_conf(tmp_path / 'cache', intrinsics=f'{K.fx},{K.fy},{K.cx},{K.cy}'),
                       **few), {'model': ckpt, 'bags': [bag], 'out': out}, log=lambda s: None)
    lmap = load_map(out)
    np.testing.assert_allclose(lmap.K, np.broadcast_to(K.matrix(), lmap.K.shape), atol=1e-9)
    assert lmap.meta['dataset']['bags'][0]['intrinsics'] == '--intrinsics'


def test_data_and_bag_are_exclusive(setup, tmp_path, capsys):
    ckpt, bag, _ = setup
    with pytest.raises(ValueError, match='either --data .* or --bag, not both'):
        map_tool.main({}, {'model': ckpt, 'data': HOLO, 'bags': [bag],
                           'out': tmp_path / 'm.npz'}, log=lambda s: None)
    with pytest.raises(ValueError, match='--data .* or --bag .* is required'):
        map_tool.main({}, {'model': ckpt, 'out': tmp_path / 'm.npz'}, log=lambda s: None)
    with pytest.raises(ValueError, match='--bag needs --image-topic'):
        map_tool.main({'image_topic': IMAGE_TOPIC}, {'model': ckpt, 'bags': [bag],
                                                     'out': tmp_path / 'm.npz'},
                      log=lambda s: None)
    with pytest.raises(SystemExit) as exit_:
        cli.main(['map', '--model', str(ckpt), '--data', str(HOLO), '--bag', str(bag),
                  '--out', str(tmp_path / 'm.npz')])
    assert exit_.value.code == 2
    assert 'not allowed with argument' in capsys.readouterr().err
    assert not (tmp_path / 'm.npz').exists()
