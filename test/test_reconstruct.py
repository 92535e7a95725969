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

"""``camreloc reconstruct``: a posed dataset in metres from a recording without ground truth.

The real runs reconstruct the first 16 frames of the HoloLens walk: once from a bag whose
odometry topic carries the headset's poses (so the metric frame can be checked against
them), once from a folder of ``frame-N.color.jpg`` images with ``frame-N.depth.png`` depth
images. No depth exists for the walk, so those depth images are made from the first metric
model at its keypoints (what a registered depth sensor would read there): the test checks
that the depth path finds the same scale through its own files and code. Refusals and
``--overwrite`` are checked before any work, so they cost nothing.
"""

import json
from pathlib import Path
import shutil

import cv2
import numpy as np
import pycolmap
import pytest

from camreloc_ros.core.bags import BagError, Every, parse_every, select_keyframes
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.sfm import scale as sfm_scale
from camreloc_ros.core.sfm.pairs import retrieval_pairs, sequential_pairs
from camreloc_ros.tools import bag_from_dataset, cli, reconstruct
from camreloc_ros.tools.common import shared_data_dir

HOLO = shared_data_dir() / 'hololens-office'
N = 16
TOPIC = '/camera/image_raw/compressed'
ODOM = '/ground_truth/pose'
FAST = {'retrieval': 0, 'max_features': 2048, 'overlap': 8}


def _gt() -> list[np.ndarray]:
    return [f.pose_c2w for f in read_dataset(HOLO, 'posed').frames[:N]]


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    """A bag of the first 16 walk frames (JPEG), CameraInfo and the poses as odometry."""
    return bag_from_dataset.main({'format': 'posed', 'limit': N, 'compressed': True},
                                 {'data': HOLO, 'out': tmp_path_factory.mktemp('bag') / 'walk'})


@pytest.fixture(scope='module')
def walk(bag, tmp_path_factory):
    """(the bag, its reconstruction folder)."""
    out = reconstruct.main({'image_topic': TOPIC, 'odom_topic': ODOM, 'sfm': FAST},
                           {'bag': bag, 'out': tmp_path_factory.mktemp('rec') / 'rec'},
                           log=lambda s: None)
    return bag, out


@pytest.mark.slow
def test_bag_with_odometry_gives_a_posed_dataset_in_metres(walk):
    _, out = walk
    data = read_dataset(out, 'posed')
    assert len(data.frames) == N                       # every keyframe registered
    K = np.loadtxt(HOLO / 'K.txt')                     # the bag's CameraInfo, held fixed
    assert np.allclose(data.intrinsics.matrix(), K, atol=1e-6)
    # map frame = the odometry frame: centres sit on the odometry without any alignment
    got = np.array([f.pose_c2w[:3, 3] for f in data.frames])
    want = np.array([p[:3, 3] for p in _gt()])
    err = np.linalg.norm(got - want, axis=1)
    assert np.median(err) < 0.03 and err.max() < 0.08, err
    assert sfm_scale.centre_errors(got, want)['scale'] == pytest.approx(1.0, abs=0.02)
    # orientations too: a 16-frame walk is nearly straight, so its centres leave the roll
    # about it free (1-3 degrees off, measured); the odometry's orientations fix it
    angles = [np.degrees(np.arccos(np.clip((np.trace(a[:3, :3].T @ b[:3, :3]) - 1) / 2, -1, 1)))
              for a, b in zip([f.pose_c2w for f in data.frames], _gt())]
    assert np.median(angles) < 0.5, angles
    # what train and map read: a block split of it works like any posed dataset's
    assert len(split_dataset(data, 'train', 4, 4).frames) == 12
    # the COLMAP model of exactly these images, in the same (metric) frame
    model = pycolmap.Reconstruction(out / 'reconstruction')
    assert sorted(im.name for im in model.images.values()) == sorted(
        p.name for p in (out / 'images').iterdir())
    centre = {im.name: im.projection_center() for im in model.images.values()}
    assert np.allclose(centre[data.frames[5].image_path.name], got[5], atol=1e-6)
    doc = json.loads((out / 'reconstruct.json').read_text())
    assert doc['scale']['source'] == 'odometry' and doc['stats']['registered'] == N
    assert doc['scale']['residual']['median_m'] < 0.03 and doc['unregistered'] == []
    assert doc['scale']['residual']['rotation_from'] == 'odometry orientations'
    report = (out / 'report.md').read_text()
    assert '| images | registered | points | mean track length' in report
    assert f'| {N}     | {N} (100 %) |' in report and 'Scale: odometry: robust Sim(3)' in report
    for stage in ('keyframes', 'extract', 'match', 'map', 'write', 'total'):
        assert f'| {stage}' in report, stage
    assert (out / 'trajectory.png').stat().st_size > 10_000


def _depth_folder(out: Path, folder: Path) -> None:
    """``frame-N.color.jpg`` + ``frame-N.depth.png`` (mm) made from the metric model."""
    folder.mkdir()
    model = pycolmap.Reconstruction(out / 'reconstruction')
    for i, im in enumerate(sorted(model.images.values(), key=lambda im: im.name)):
        shutil.copy(out / 'images' / im.name, folder / f'frame-{i:06d}.color.jpg')
        depth = np.zeros((im.camera.height, im.camera.width), np.uint16)
        for p in im.points2D:
            if p.has_point3D():
                z = (im.cam_from_world() * model.points3D[p.point3D_id].xyz)[2]
                u, v = (int(c) for c in p.xy)
                depth[max(v - 1, 0):v + 2, max(u - 1, 0):u + 2] = round(z * 1000)
        cv2.imwrite(str(folder / f'frame-{i:06d}.depth.png'), depth)
    (folder / 'K.txt').write_text((out / 'K.txt').read_text())


@pytest.mark.slow
def test_depth_images_give_the_same_scale_and_overwrite_replaces_only_a_reconstruction(
        walk, tmp_path):
    _, out = walk
    folder = tmp_path / 'rgbd'
    _depth_folder(out, folder)
    target = tmp_path / 'again'
    shutil.copytree(out, target)              # an older reconstruction at --out
    before = (target / 'poses.txt').read_text()
    conf = {'sfm': FAST}
    with pytest.raises(ValueError, match='already exists; pass --overwrite'):
        reconstruct.main(conf, {'images': folder, 'out': target}, log=lambda s: None)
    assert (target / 'poses.txt').read_text() == before
    reconstruct.main(dict(conf, overwrite=True), {'images': folder, 'out': target},
                     log=lambda s: None)
    doc = json.loads((target / 'reconstruct.json').read_text())
    assert doc['scale']['source'] == 'depth' and doc['stats']['registered'] == N
    # the frame is the first camera's, in metres: the same size as the odometry's walk
    got = np.array([f.pose_c2w[:3, 3] for f in read_dataset(target, 'posed').frames])
    want = np.array([p[:3, 3] for p in _gt()])
    assert np.allclose(got[0], 0, atol=1e-9)
    fit = sfm_scale.centre_errors(got, want)
    assert fit['scale'] == pytest.approx(1.0, abs=0.02) and fit['median'] < 0.03, fit
    assert doc['scale']['residual']['spread'] < 0.02
    assert 'depth images: median sensor / model depth' in (target / 'report.md').read_text()


def test_refuses_without_a_scale_before_any_work(tmp_path, capsys):
    folder = tmp_path / 'plain'
    folder.mkdir()
    for p in sorted((HOLO / 'images').glob('*.jpg'))[:3]:
        shutil.copy(p, folder / p.name)
    out = tmp_path / 'rec'
    assert cli.main(['-q', 'reconstruct', '--images', str(folder), '--out', str(out)]) == 1
    err = capsys.readouterr().err
    for hint in ('no metric scale', '--odom-topic', '--odom-tf', 'depth.png', '--distance',
                 '--no-scale'):
        assert hint in err, hint
    assert not out.exists() and not list(tmp_path.glob('.rec.*'))


def test_overwrite_never_replaces_what_is_not_a_reconstruction(tmp_path, capsys):
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'keep.txt').write_text('mine')
    args = ['-q', 'reconstruct', '--images', str(HOLO), '--no-scale', '--out']
    assert cli.main(args + [str(data), '--overwrite']) == 1
    assert 'is not a reconstruction' in capsys.readouterr().err
    assert (data / 'keep.txt').read_text() == 'mine'
    # nor an input, nor a folder holding one
    assert cli.main(args + [str(HOLO / 'images' / 'new')]) == 1
    assert 'lies inside the image folder' in capsys.readouterr().err
    assert cli.main(args + [str(HOLO.parent), '--overwrite']) == 1
    assert 'holds the image folder' in capsys.readouterr().err


def test_a_bag_without_the_image_topic_names_its_topics(bag, tmp_path):
    with pytest.raises(BagError, match=r"'/camera/image' is not in the bag; its topics are: "
                       r'.*/camera/image_raw/compressed'):
        reconstruct.main({'image_topic': '/camera/image', 'scale': 'none'},
                         {'bag': bag, 'out': tmp_path / 'rec'}, log=lambda s: None)
    with pytest.raises(ValueError, match='spaces keyframes by odometry'):
        reconstruct.main({'image_topic': TOPIC, 'every': '0.5m', 'scale': 'none'},
                         {'bag': bag, 'out': tmp_path / 'rec'}, log=lambda s: None)
    with pytest.raises(ValueError, match='no metric scale'):      # no odometry given
        reconstruct.main({'image_topic': TOPIC}, {'bag': bag, 'out': tmp_path / 'rec'},
                         log=lambda s: None)
    with pytest.raises(ValueError, match='both odometry and --distance'):
        reconstruct.main({'image_topic': TOPIC, 'odom_topic': ODOM,
                          'distance': ['000000', '000009', 1.0]},
                         {'bag': bag, 'out': tmp_path / 'rec'}, log=lambda s: None)
    assert not (tmp_path / 'rec').exists()


def test_keyframes_by_count_time_and_motion():
    assert parse_every(None) == Every(1, 'images') and parse_every('3') == Every(3, 'images')
    assert parse_every('0.5s') == Every(0.5, 'seconds')
    assert parse_every('0.25m') == Every(0.25, 'metres')
    for bad in ('0', '-1s', '1.5', 'x', '2h'):
        with pytest.raises(ValueError, match='--every'):
            parse_every(bad)
    stamps = np.arange(10) * 100_000_000                       # 10 Hz
    assert select_keyframes(stamps, Every(3, 'images')) == [0, 3, 6, 9]
    assert select_keyframes(stamps, Every(0.25, 'seconds')) == [0, 3, 6, 9]
    pos = np.zeros((10, 3))
    pos[:, 0] = [0, 0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.4, 0.6]   # walks, stops, walks
    quat = np.tile([0.0, 0.0, 0.0, 1.0], (10, 1))
    half = np.radians(20) / 2                                   # a 20 degree turn on the spot
    quat[6] = [0.0, 0.0, np.sin(half), np.cos(half)]
    quat[7:] = quat[6]
    assert select_keyframes(stamps, Every(0.2, 'metres'), pos, quat) == [0, 2, 6, 9]
    with pytest.raises(ValueError, match='odometry'):
        select_keyframes(stamps, Every(0.2, 'metres'))


def test_pairs_from_the_sequence_and_from_look_alikes():
    assert sequential_pairs(4, 2) == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)}
    rng = np.random.default_rng(0)
    desc = rng.normal(size=(20, 8))
    desc[15] = desc[2] + 0.01 * rng.normal(size=8)              # a revisit of image 2
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    pairs = retrieval_pairs(desc, 1, min_gap=5)
    assert (2, 15) in pairs
    assert all(j - i >= 5 for i, j in pairs)


@pytest.mark.slow
def test_scale_from_a_distance_and_from_odometry_recovers_a_known_similarity(walk):
    _, out = walk
    model = pycolmap.Reconstruction(out / 'reconstruction')      # metric, odometry frame
    names = sorted(im.name for im in model.images.values())
    truth = {im.name: np.linalg.inv(im.cam_from_world().matrix().tolist() + [[0, 0, 0, 1]])
             for im in model.images.values()}                   # a camera odometry
    shrunk = pycolmap.Reconstruction(out / 'reconstruction')
    rot = pycolmap.Rotation3d(np.array([0.3, -0.2, 0.5]))
    shrunk.transform(pycolmap.Sim3d(0.25, rot, np.array([1.0, 2.0, 3.0])))
    fit = sfm_scale.fit_odometry(shrunk, truth, 0.05)
    assert fit.scale == pytest.approx(4.0, rel=1e-6) and fit.residual['max_m'] < 1e-6
    assert fit.residual['rotation_from'] == 'odometry orientations'
    assert np.allclose(fit.rotation, rot.matrix().T, atol=1e-6)
    # odometry of a body the camera looks sideways from: its orientations are not the
    # camera's, so the rotation comes from the centres alone
    body = {n: T @ np.array([[0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]])
            for n, T in truth.items()}
    fit = sfm_scale.fit_odometry(shrunk, body, 0.05)
    assert fit.residual['rotation_from'] == 'camera centres'
    assert fit.scale == pytest.approx(4.0, rel=1e-6) and fit.residual['max_m'] < 1e-6
    a, b = names[0], names[-1]
    metres = float(np.linalg.norm(truth[a][:3, 3] - truth[b][:3, 3]))
    fit = sfm_scale.fit_distance(shrunk, names[0], a, b, metres)
    assert fit.scale == pytest.approx(4.0, rel=1e-9)
    fit.apply(shrunk)
    first = next(im for im in shrunk.images.values() if im.name == names[0])
    assert np.allclose(first.projection_center(), 0, atol=1e-9)
    slipped = {n: truth[n].copy() for n in names}           # 3 in 4 odometry slips
    for i, n in enumerate(names):
        if i % 4:
            slipped[n][:3, 3] += np.random.default_rng(i).normal(size=3)
    with pytest.raises(ValueError, match='disagree'):
        sfm_scale.fit_odometry(shrunk, slipped, 0.05)


def test_docs_name_every_option_and_conf_key():
    """docs/mapping.md's option table keeps up with the command line and ``default_conf``."""
    doc = (Path(__file__).resolve().parents[1] / 'docs' / 'mapping.md').read_text()
    parser = cli.subcommand_parser('reconstruct')
    options = {o for a in parser._actions for o in a.option_strings
               if o.startswith('--') and o not in ('--help', '--verbose', '--quiet')}
    assert options and not [o for o in options if f'`{o}' not in doc]
    keys = [k for k in reconstruct.default_conf if k != 'sfm']
    keys += [f'sfm.{k}' for k in reconstruct.default_conf['sfm']]
    assert not [k for k in keys if f'`{k}`' not in doc]


@pytest.mark.slow
def test_map_from_the_reconstruction_keeps_its_tracks_and_refines(walk, tmp_path):
    """``map --reconstruction``: the model's points and tracks, no re-triangulation."""
    from camreloc_ros.core.geometry import pose_from_matrix
    from camreloc_ros.core.evaluation.metrics import pose_errors
    from camreloc_ros.core.data.transforms import read_rgb
    from camreloc_ros.core.localization.calibration import submap
    from camreloc_ros.core.localization.map_file import load_map
    from camreloc_ros.core.localization.refiner import map_descriptor, Refiner
    from camreloc_ros.core.models.pose_model import build_model
    from camreloc_ros.tools import map as map_tool

    _, rec = walk
    data = read_dataset(rec, 'posed')
    model = build_model('posenet', head={'width': 64})   # ImageNet trunk: the descriptor
    pos = np.stack([f.pose_c2w[:3, 3] for f in data.frames])
    model.set_pose_stats(pos.mean(axis=0), 1.0)
    ckpt = model.save_checkpoint(tmp_path / 'model.pt', extra={'data': {'format': 'posed'}})
    out = map_tool.main({'calibration': {'enabled': False}},
                        {'model': ckpt, 'reconstruction': rec, 'out': tmp_path / 'map.npz'},
                        log=lambda s: None)
    lmap = load_map(out)
    sfm = pycolmap.Reconstruction(rec / 'reconstruction')
    stats = lmap.meta['stats']
    assert lmap.meta['points_from'] == 'reconstruction' and lmap.names == [
        f.name for f in data.frames]
    assert stats['model_points'] == len(sfm.points3D) >= len(lmap.points) > 500
    assert stats['observations_without_keypoint'] < 0.5 * stats['observations_in_map_frames']
    # the model's own points (not re-triangulated), each seen where the model saw it
    model_xyz = np.array([p.xyz for p in sfm.points3D.values()])
    nearest = np.min(np.linalg.norm(lmap.points[:50, None] - model_xyz[None], axis=2), axis=1)
    assert nearest.max() < 1e-5
    assert lmap.visibility().min() >= 1 and stats['mean_track_length'] >= 3.0
    for i in range(len(lmap)):
        xy, ids = lmap.image_observations(i)
        T = lmap.poses_c2w[i]
        xc = (lmap.points[ids] - T[:3, 3]) @ T[:3, :3]
        uv = xc[:, :2] / xc[:, 2:] * lmap.K[i][[0, 1], [0, 1]] + lmap.K[i][:2, 2]
        assert np.median(np.linalg.norm(uv - xy, axis=1)) < 1.5
    # a frame left out of it (with its neighbours) refines to its reconstructed pose and to
    # the walk's own (the odometry here, so the map frame is the walk's)
    keep = np.ones(len(lmap), bool)
    keep[7:10] = False
    ref = Refiner(submap(lmap, keep), map_descriptor(lmap, ckpt))
    res = ref.refine(read_rgb(data.frames[8].image_path))
    assert res.refined, res.reason
    for truth in (data.frames[8].pose_c2w, _gt()[8]):
        gp, gq = pose_from_matrix(truth)
        p_err, r_err = pose_errors(res.position[None], res.quaternion[None], gp[None], gq[None])
        assert p_err[0] < 0.08 and r_err[0] < 2.0, (p_err, r_err, res.inliers)
