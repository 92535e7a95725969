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

"""The scene-coordinate head (``model.head.name=scr``): geometry, training, PnP, engine."""

import numpy as np
import pytest
import torch

from camreloc_ros.core.config import ConfigError
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.data.transforms import crop_box, read_rgb
from camreloc_ros.core.evaluation.metrics import pose_errors
from camreloc_ros.core.geometry import pose_from_matrix
from camreloc_ros.core.models.pose_model import build_model, PoseModel
from camreloc_ros.core.models.scr import input_box, pixel_centres, pose_from_coordinates
from camreloc_ros.core.robot.camera import camera_record
from camreloc_ros.core.training.scr import camera_matrix, curriculum_clamp, \
    reprojection_loss, SCR_TRAIN_DEFAULTS, ScrTrainer
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'


def _look_at_plane(n: int = 300, seed: int = 0):
    """A camera 3 m in front of a textured wall: pixels, their world points, pose, K."""
    rng = np.random.default_rng(seed)
    K = np.array([[500.0, 0, 270], [0, 500.0, 180], [0, 0, 1]])
    xy = rng.uniform([0, 0], [540, 360], (n, 2))
    depth = rng.uniform(2.5, 3.5, n)
    cam = np.c_[(xy - K[:2, 2]) / [K[0, 0], K[1, 1]], np.ones(n)] * depth[:, None]
    angle = 0.3
    R_c2w = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                      [-np.sin(angle), 0, np.cos(angle)]])
    C = np.array([1.0, -0.5, 2.0])
    return xy, cam @ R_c2w.T + C, R_c2w, C, K


def test_pixels_are_tied_to_the_preprocessing_crop():
    assert input_box(360, 540)[:2] == crop_box(360, 540)[:2]
    assert input_box(480, 640)[2] == crop_box(480, 640)[2]
    xy = pixel_centres((28, 28), (360, 540), 224)
    assert xy.shape == (28 * 28, 2)
    # the 28 columns span the centre square (x 90..450), evenly, row-major
    assert 90 < xy[0, 0] < 90 + 360 / 28 and 450 - 360 / 28 < xy[27, 0] < 450
    assert np.allclose(np.diff(xy[:28, 0]), 360 / 28)
    assert np.allclose(xy[28, 1] - xy[0, 1], 360 / 28)


def test_pnp_recovers_a_pose_through_outliers_and_ranks_by_inliers():
    xy, X, R_c2w, C, K = _look_at_plane()
    noisy = X.copy()
    bad = np.random.default_rng(1).random(len(X)) < 0.4   # 40 % wrong coordinates
    noisy[bad] += np.random.default_rng(2).normal(0, 1.0, (bad.sum(), 3))
    pose = pose_from_coordinates(noisy, xy, K, (360, 540), threshold_px=5.0)
    assert pose.ok and abs(pose.inliers - (~bad).sum()) <= 5
    assert np.linalg.norm(pose.centre - C) < 1e-3
    assert np.allclose(pose.R_c2w, R_c2w, atol=1e-4)
    worse = X.copy()
    bad2 = np.random.default_rng(3).random(len(X)) < 0.8
    worse[bad2] += np.random.default_rng(4).normal(0, 1.0, (bad2.sum(), 3))
    worse += np.random.default_rng(5).normal(0, 0.01, X.shape)
    pose2 = pose_from_coordinates(worse, xy, K, (360, 540), threshold_px=5.0)
    # fewer inliers, noisier points: a larger claimed position variance
    assert np.trace(pose2.covariance[:3, :3]) > np.trace(pose.covariance[:3, :3])
    garbage = np.random.default_rng(6).normal(0, 5.0, X.shape)
    failed = pose_from_coordinates(garbage, xy, K, (360, 540), min_inliers=50)
    assert not failed.ok and failed.covariance[0, 0] >= 1e6


def test_reprojection_loss_is_zero_for_exact_points_and_pulls_points_to_the_front():
    xy, X, R_c2w, C, K = _look_at_plane(64)
    n = len(xy)
    R_w2c = torch.from_numpy(np.repeat(R_c2w.T[None], n, 0)).float()
    t_w2c = torch.from_numpy(np.repeat((-R_c2w.T @ C)[None], n, 0)).float()
    K4 = torch.tensor([[K[0, 0], K[1, 1], K[0, 2], K[1, 2]]]).float().repeat(n, 1)
    xy_t = torch.from_numpy(xy).float()
    exact = torch.from_numpy(X).float()
    loss, stats = reprojection_loss(exact, xy_t, R_w2c, t_w2c, K4, 10.0, SCR_TRAIN_DEFAULTS)
    assert stats['valid'] == 1.0 and float(loss) < 0.05
    behind = (2 * torch.from_numpy(C).float() - exact).requires_grad_(True)   # mirrored
    loss, stats = reprojection_loss(behind, xy_t, R_w2c, t_w2c, K4, 10.0, SCR_TRAIN_DEFAULTS)
    assert stats['valid'] < 0.5 and loss.item() > 1.0
    loss.backward()
    assert torch.isfinite(behind.grad).all() and behind.grad.abs().sum() > 0
    # the curriculum tightens from the soft clamp to its minimum, along a quarter circle
    assert curriculum_clamp(0.0, 50, 1) == 50 and curriculum_clamp(1.0, 50, 1) == 1
    assert 40 < curriculum_clamp(0.5, 50, 1) < 50


def test_scr_model_shapes_checkpoint_round_trip_and_config_errors(tmp_path):
    model = build_model('scr', backbone={'pretrained': False})
    model.set_pose_stats([1.0, 2.0, 3.0], 2.0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        coords = model.eval().scene_coordinates(x)
    assert coords.shape == (2, 3) + model.scr_grid == (2, 3, 28, 28)
    path = model.save_checkpoint(tmp_path / 'scr.pt')
    loaded = PoseModel.from_checkpoint(path)
    assert loaded.conf['head']['name'] == 'scr' and loaded.scr
    with torch.no_grad():
        assert torch.allclose(loaded.scene_coordinates(x), coords, atol=1e-5)
    # the trunk is stored once (the hypercolumn is built on demand, never registered)
    regressor = build_model('posenet', backbone={'pretrained': False, 'trainable_stages': 0})
    trunk_keys = [k for k in regressor.state_dict() if k.startswith('backbone.')]
    assert [k for k in loaded.state_dict() if k.startswith('backbone.')] == trunk_keys
    with pytest.raises(ConfigError, match='trainable_stages must be 0'):
        build_model('scr', backbone={'pretrained': False, 'trainable_stages': 1})
    with pytest.raises(ValueError, match="no stage 'blocks9'"):
        build_model('scr', backbone={'pretrained': False}, head={'scr_stages': 'blocks9'})


def test_training_needs_intrinsics():
    with pytest.raises(ValueError, match='needs the camera intrinsics'):
        camera_matrix({'camera': {'width': 540, 'height': 360}}, 540, 360)
    K = camera_matrix({'camera': {'width': 540, 'height': 360, 'fx': 500.0, 'fy': 500.0,
                                  'cx': 270.0, 'cy': 180.0}}, 1080, 720)
    assert np.allclose(K, [[1000, 0, 540], [0, 1000, 360], [0, 0, 1]])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A short fit on 8 real HoloLens frames (two blocks of four), validated on 4 others."""
    dataset = read_dataset(DATA, 'posed')
    frames = split_dataset(dataset, 'train').frames
    train = frames[0:8:2] + frames[60:68:2]
    val = frames[1:8:2]
    out = tmp_path_factory.mktemp('scr')
    conf = {'model': {'head': {'name': 'scr', 'width': 128, 'scr_depth': 1}},
            'train': {'epochs': 3, 'seed': 1, 'cache_dir': str(out / 'cache')},
            'scr': {'batch_pixels': 1024, 'epoch_steps': 60}}
    info = {'camera': camera_record(dataset)}
    trainer = ScrTrainer(conf, train, val, out / 'run', log=lambda s: None, split_info=info)
    trainer.fit()
    return trainer, train, out / 'run'


def test_training_reduces_the_reprojection_error_and_pnp_recovers_training_poses(trained):
    trainer, train, run = trained
    history = trainer.history
    assert history[-1]['train_median_px'] < 0.5 * history[0]['train_median_px']
    assert history[-1]['train_valid'] > history[0]['train_valid']
    pos, quat, var, inliers = trainer.predict('train')
    gt_pos, gt_quat = pose_from_matrix(np.stack([f.pose_c2w for f in train]))
    pos_err, rot_err = pose_errors(pos, quat, gt_pos, gt_quat)
    assert np.median(pos_err) < 0.3 and np.median(rot_err) < 5.0
    assert np.all(inliers > 0)
    for name in ('last.pt', 'best.pt', 'history.json', 'epoch_003.pt'):
        assert (run / name).is_file(), name


def test_engine_returns_the_trainers_pose_from_one_image(trained):
    from camreloc_ros.core.inference.engine import InferenceEngine

    trainer, train, run = trained
    engine = InferenceEngine.from_checkpoint(run / 'last.pt')
    assert engine.scr
    frame = train[2]
    image = read_rgb(frame.image_path)
    pred = engine.predict(image)
    pos, quat, _, _ = trainer.predict('train')
    assert np.linalg.norm(pred.position - pos[2]) < 1e-3
    assert pred.covariance.shape == (6, 6) and np.all(np.diag(pred.covariance) > 0)
    # the intrinsics: the training camera's by default; a wrong camera moves the pose
    engine.set_intrinsics(np.diag([250.0, 250.0, 1.0]) + [[0, 0, 270], [0, 0, 180], [0, 0, 0]],
                          540, 360)
    moved = engine.predict(image)
    assert np.linalg.norm(moved.position - pred.position) > 0.05
    with pytest.raises(ValueError, match='3x3 camera matrix'):
        engine.set_intrinsics(np.eye(2), 540, 360)
    batch = engine.predict_frames([image, read_rgb(train[3].image_path)])
    engine.set_intrinsics(None)
    again = engine.predict_frames([image])[0]
    assert np.allclose(again.position, pred.position, atol=1e-6)
    assert len(batch) == 2


def test_resumed_run_trains_the_same_next_epoch(tmp_path):
    dataset = read_dataset(DATA, 'posed')
    train = split_dataset(dataset, 'train').frames[0:6:2]
    conf = {'model': {'head': {'name': 'scr', 'width': 32, 'scr_depth': 1}},
            'train': {'epochs': 2, 'seed': 4, 'cache_dir': str(tmp_path / 'cache')},
            'scr': {'batch_pixels': 256, 'epoch_steps': 5, 'views': 2}}
    info = {'camera': camera_record(dataset)}

    def trainer(out):
        return ScrTrainer(conf, train, [], tmp_path / out, log=lambda s: None, split_info=info)

    whole = trainer('whole')
    whole.fit()
    first = trainer('parts')
    first.fit(epochs=1)
    resumed = trainer('parts')
    assert resumed.resume()
    assert resumed.epoch == 1
    resumed.fit()
    a, b = whole.model.head.state_dict(), resumed.model.head.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h['loss'] for h in whole.history] == [h['loss'] for h in resumed.history]
    conf['scr']['lr'] = 0.001
    with pytest.raises(ValueError, match='another model, scr or epochs config'):
        trainer('parts').resume()
