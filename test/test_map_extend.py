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

"""``camreloc map --extend``: a new session registered into a map's frame (issue 22, part 5).

A map of the even frames 0-40 of the HoloLens walk is extended with a folder of its odd
frames (three held out) plus two frames from far along the walk, given as plain images:
the walk's poses are used only to score the registered ones.
"""

import hashlib
from pathlib import Path
import shutil

import numpy as np
import pytest

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.localization.build import build_map
from camreloc_ros.core.localization.map_file import load_map, save_map
from camreloc_ros.core.localization.refiner import map_descriptor, Refiner
from camreloc_ros.core.localization.retrieval import GlobalDescriptor
from camreloc_ros.core.models.pose_model import build_model
from camreloc_ros.tools import cli
from camreloc_ros.tools import map as map_tool
from camreloc_ros.tools.common import shared_data_dir

HOLO = shared_data_dir() / 'hololens-office'
HELD_OUT = (9, 19, 29)     # odd frames in neither the map nor the session
FAR = (300, 360)           # frames of another part of the office
QUIET = {'log': lambda s: None}
pytestmark = pytest.mark.slow   # builds a SIFT map and registers 20 images


def sha(path: Path) -> str:
    """Return the sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def image_folder(dst: Path, frames: list) -> Path:
    """Copy the frames' images and the walk's K.txt into a plain folder (no poses)."""
    dst.mkdir(parents=True)
    for f in frames:
        shutil.copy2(f.image_path, dst / Path(f.image_path).name)
    shutil.copy2(HOLO / 'K.txt', dst / 'K.txt')
    return dst


@pytest.fixture(scope='module')
def walk(tmp_path_factory):
    """The base map (even frames 0-40), the session folder and the extended map."""
    d = tmp_path_factory.mktemp('extend')
    dataset = read_dataset(HOLO, 'posed')
    frames = dataset.frames
    model = build_model('posenet', head={'width': 64})
    meta = {'checkpoint': {'path': 'ckpt.pt', 'sha256': '0' * 64},
            'scene_frame': {'id': 'f' * 32, 'frames': len(frames), 'source': str(HOLO)}}
    lmap = build_map(frames[0:41:2], dataset.intrinsics, GlobalDescriptor(model),
                     {'sift': {'max_keypoints': 1024}}, meta=meta, log=lambda s: None)
    base = save_map(lmap, d / 'base.npz')
    session = [f for f in frames[1:41:2] if f.index not in HELD_OUT] + [frames[i] for i in FAR]
    folder = image_folder(d / 'session', session)
    digest = sha(base)
    out = map_tool.main({}, {'extend': base, 'data': folder, 'out': d / 'grown.npz'}, **QUIET)
    return {'dir': d, 'base': base, 'base_sha': digest, 'folder': folder, 'out': out,
            'frames': frames, 'session': session}


def test_session_registers_near_ground_truth_and_grows_the_map(walk):
    base, grown = load_map(walk['base']), load_map(walk['out'])    # full validation
    assert sha(walk['base']) == walk['base_sha']                    # untouched without --overwrite
    record = grown.meta['sessions'][-1]
    assert record['name'] == 'session1' and record['images'] == len(walk['session'])
    assert record['kind'] == 'folder' and record['intrinsics'].endswith('K.txt')
    # the two far frames are left out, with why; (nearly) every frame of the stretch is in
    left = {item['name']: item['reason'] for item in record['left_out']}
    far = [Path(walk['frames'][i].image_path).name for i in FAR]
    assert set(far) <= set(left) and all('inliers' in left[n] or 'matches' in left[n]
                                         for n in far)
    assert record['registered'] >= len(walk['session']) - len(FAR) - 2
    assert record['registered'] == len(grown) - len(base)
    # registered poses are the walk's own within centimetres (they were never given)
    truth = {Path(f.image_path).name: f.pose_c2w for f in walk['session']}
    err = [np.linalg.norm(grown.poses_c2w[i, :3, 3] - truth[grown.names[i].split('/', 1)[1]]
                          [:3, 3]) for i in range(len(base), len(grown))]
    assert np.median(err) < 0.02 and max(err) < 0.05, err
    # more points and observations; the old part of the map is unchanged
    assert len(grown.points) > len(base.points) and record['points_added'] > 100
    assert record['existing_points_extended'] > 100
    np.testing.assert_allclose(grown.points[:len(base.points)], base.points, atol=1e-3)
    assert grown.names[:len(base)] == base.names
    assert grown.meta['scene_frame'] == base.meta['scene_frame']
    # every new observation reprojects at the registered pose (points old and new)
    for i in range(len(base), len(grown)):
        xy, ids = grown.image_observations(i)
        assert len(np.unique(ids)) == len(ids) and len(ids) > 50
        T, K = grown.poses_c2w[i], grown.K[i]
        xc = (grown.points[ids] - T[:3, 3]) @ T[:3, :3]
        uv = xc[:, :2] / xc[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
        assert np.all(xc[:, 2] > 0) and np.median(np.linalg.norm(uv - xy, axis=1)) < 2.0


def test_grown_map_refines_held_out_frames_at_least_as_well(walk):
    errors, inliers = {}, {}
    for key in ('base', 'out'):
        lmap = load_map(walk[key])
        refiner = Refiner(lmap, map_descriptor(lmap))
        errors[key], inliers[key] = [], []
        for i in HELD_OUT:
            f = walk['frames'][i]
            res = refiner.refine(read_rgb(f.image_path))
            assert res.refined, (key, f.name, res.reason)
            errors[key].append(np.linalg.norm(res.position - f.pose_c2w[:3, 3]))
            inliers[key].append(res.inliers)
    assert np.median(errors['out']) <= np.median(errors['base']) + 0.005, errors
    assert max(errors['out']) < 0.05 and np.sum(inliers['out']) >= 0.9 * np.sum(
        inliers['base']), (errors, inliers)


def test_extend_writes_over_the_map_only_with_overwrite(walk, tmp_path):
    base = walk['base']
    some = image_folder(tmp_path / 'few', [walk['frames'][i] for i in (5, 7, 305)])
    copy = tmp_path / 'map.npz'
    shutil.copy2(base, copy)
    before = sha(copy)
    for paths, match in (({'extend': copy, 'data': some}, '--out NEW.npz.*--overwrite'),
                         ({'extend': copy, 'data': some, 'out': copy}, 'is the map being'),
                         ({'extend': copy, 'data': some, 'out': some / 'm.npz'},
                          'inside'),
                         ({'extend': copy, 'data': some, 'out': walk['out']},
                          'already exists')):
        with pytest.raises(ValueError, match=match):
            map_tool.main({}, paths, **QUIET)
    assert sha(copy) == before and not (some / 'm.npz').exists()
    # through the command line: --overwrite replaces the map in place, one more session
    assert cli.main(['map', '--extend', str(copy), '--data', str(some), '--overwrite',
                     '--rounds', '1']) == 0
    grown = load_map(copy)
    assert len(grown) == len(load_map(base)) + 2
    assert [s['registered_per_round'] for s in grown.meta['sessions']] == [[2]]
    assert [item['name'] for item in grown.meta['sessions'][0]['left_out']] == [
        Path(walk['frames'][305].image_path).name]
    # a session that registers nothing writes nothing and says why
    nothing = image_folder(tmp_path / 'far', [walk['frames'][i] for i in FAR])
    with pytest.raises(ValueError, match='not written: none of the 2 images.*too few'):
        map_tool.main({}, {'extend': copy, 'data': nothing, 'out': tmp_path / 'x.npz'},
                      **QUIET)
    assert not (tmp_path / 'x.npz').exists()
    # an extended map cannot score a dataset: its session images may be held-out frames
    from camreloc_ros.core.localization.map_file import MapError
    with pytest.raises(MapError, match='extended with 2 images'):
        grown.check_pairing(train_fingerprint='the walk')
    save_map(grown, tmp_path / 'again.npz')      # still a valid map file


def test_extend_from_a_bag_without_ground_truth(walk, tmp_path):
    """A bag with images, CameraInfo and odometry, no ground truth: every 2nd image registers,
    K from the CameraInfo."""
    from camreloc_ros.tools import bag_from_dataset

    frames = [walk['frames'][i] for i in (3, 5, 7, 11, 13, 15)]
    posed = image_folder(tmp_path / 'posed' / 'images', frames).parent
    (posed / 'images' / 'K.txt').rename(posed / 'K.txt')
    (posed / 'poses.txt').write_text('\n'.join(
        ' '.join(f'{v:.17g}' for v in f.pose_c2w.reshape(-1)) for f in frames) + '\n')
    bag = bag_from_dataset.main({'format': 'posed', 'ground_truth': False, 'compressed': True,
                                 'odometry': 'drift'},
                                {'data': posed, 'out': tmp_path / 'session_bag'})
    with pytest.raises(ValueError, match='--image-topic'):
        map_tool.main({}, {'extend': walk['base'], 'bags': [bag], 'out': tmp_path / 'm.npz'},
                      **QUIET)
    out = map_tool.main({'image_topic': '/camera/image_raw/compressed', 'session_every': '2',
                         'cache_dir': str(tmp_path)},
                        {'extend': walk['base'], 'bags': [bag], 'out': tmp_path / 'm.npz'},
                        **QUIET)
    grown = load_map(out)
    record = grown.meta['sessions'][-1]
    assert record['kind'] == 'bag' and record['images_in_bag'] == 6 and record['images'] == 3
    assert record['intrinsics'].startswith('CameraInfo') and record['registered'] == 3
    truth = [f.pose_c2w[:3, 3] for f in frames[::2]]
    err = np.linalg.norm(grown.poses_c2w[-3:, :3, 3] - truth, axis=1)
    assert err.max() < 0.05, err
