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

"""Covariance calibration: the fit, the map's stored scales, and the network's (issue #20).

The fit is checked on draws from a known Gaussian (its NEES must follow chi2(3)); the map
calibration on a real triangulated slice of the HoloLens walk, scored on frames that are
not in the map; the network's scales on a real checkpoint through both runtimes.
"""

import logging

import numpy as np
import pytest

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.inference.engine import covariance_scales, InferenceEngine
from camreloc_ros.core.localization.build import build_map
from camreloc_ros.core.localization.calibration import (calibrate_map, calibration_problem,
                                                        CHI2_3_95, fit_scale, pose_nees,
                                                        scale_covariance, submap)
from camreloc_ros.core.localization.map_file import load_map, MapError, save_map
from camreloc_ros.core.localization.refiner import Refiner
from camreloc_ros.core.localization.retrieval import GlobalDescriptor
from camreloc_ros.core.models.pose_model import build_model, PoseModel
from camreloc_ros.core.training.trainer import covariance_calibration
from camreloc_ros.tools.common import shared_data_dir

HOLO = shared_data_dir() / 'hololens-office'


def _random_cov(rng: np.random.Generator) -> np.ndarray:
    A = rng.normal(size=(6, 6))
    return A @ A.T * 1e-4 + np.eye(6) * 1e-6


def test_nees_of_an_honest_covariance_follows_chi2_and_the_fit_restores_coverage():
    rng = np.random.default_rng(0)
    cov = _random_cov(rng)
    L = np.linalg.cholesky(cov)
    T_gt = np.eye(4)
    nees_p, nees_r = [], []
    import cv2
    for _ in range(2000):
        e = L @ rng.normal(size=6)
        T = np.eye(4)
        T[:3, 3] = e[:3]
        T[:3, :3] = cv2.Rodrigues(e[3:])[0]
        p, r = pose_nees(T, T_gt, cov)
        nees_p.append(p)
        nees_r.append(r)
    # an honest covariance: median NEES near the chi2(3) median 2.37, 95 % inside 7.81
    assert 2.0 < np.median(nees_p) < 2.8 and 2.0 < np.median(nees_r) < 2.8
    assert 0.93 < np.mean(np.asarray(nees_p) <= CHI2_3_95) < 0.97
    assert 0.8 < fit_scale(nees_p) < 1.25
    # claimed 10x too small: the fit finds the factor and restores 95 % coverage
    small = scale_covariance(cov, 0.01, 0.04)
    np.testing.assert_allclose(small[:3, :3], cov[:3, :3] * 0.01)
    np.testing.assert_allclose(small[3:, 3:], cov[3:, 3:] * 0.04)
    np.testing.assert_allclose(small[:3, 3:], cov[:3, 3:] * 0.02)
    assert np.all(np.linalg.eigvalsh(small) > 0)
    s = fit_scale(np.asarray(nees_p) / 0.01)
    assert 80 < s < 125
    assert 0.94 <= np.mean(np.asarray(nees_p) / 0.01 / s <= CHI2_3_95) <= 0.96


def test_network_calibration_fits_both_blocks_on_gaussian_errors():
    rng = np.random.default_rng(1)
    var = np.exp(rng.normal(size=(400, 6))) * 1e-2
    err = rng.normal(size=(400, 6)) * np.sqrt(var) * np.r_[[3.0] * 3, [0.5] * 3]
    cal = covariance_calibration(err, var)
    assert 6 < cal['position_scale'] < 13 and 0.15 < cal['rotation_scale'] < 0.4
    assert cal['inside_95_raw'] < 0.6 and 0.93 <= cal['inside_95_calibrated'] <= 0.97
    scales = (cal['position_scale'], cal['rotation_scale'])
    assert covariance_scales({'covariance_calibration': cal}) == scales
    assert covariance_scales({}) == (1.0, 1.0)
    # a map entry: a kind without scales is uncalibrated (fine), a bad scale is named
    skipped = {'refined': {'position_scale': 2.0, 'rotation_scale': 3.0},
               'tracked': {'frames': 2, 'skipped': '2 accepted poses'}}
    assert calibration_problem(skipped) is None
    bad = dict(skipped, refined={'position_scale': float('nan'), 'rotation_scale': 3.0})
    assert 'refined.position_scale' in calibration_problem(bad)
    assert covariance_scales({'covariance_calibration': {'position_scale': -1}}) == (1.0, 1.0)


@pytest.fixture(scope='module')
def holo_map(tmp_path_factory):
    """A triangulated map of 90 walk frames without frames 40-49, calibrated, and the gap."""
    dataset = read_dataset(HOLO, 'posed')
    frames = dataset.frames[:90]
    held = [f for f in frames if 40 <= f.index < 50]
    train = [f for f in frames if f not in held]
    desc = GlobalDescriptor(build_model('posenet', head={'width': 64}))
    lmap = build_map(train, dataset.intrinsics, desc, {'sift': {'max_keypoints': 2048}},
                     log=lambda s: None)
    images = [lambda p=f.image_path: read_rgb(p) for f in train]
    calib = calibrate_map(lmap, desc, images, {'images': 12, 'window': 8, 'track_frames': 3},
                          log=lambda s: None)
    lmap.meta['covariance_calibration'] = calib
    path = save_map(lmap, tmp_path_factory.mktemp('holo') / 'map.npz')
    return load_map(path), desc, held, calib


@pytest.mark.slow
def test_map_calibration_makes_refined_errors_fit_the_claimed_ellipsoid(holo_map):
    lmap, desc, held, calib = holo_map
    ref = calib['refined']
    assert ref['frames'] >= 8, calib
    # the raw PnP covariance claims far too little: most errors outside its 95 % ellipsoid
    assert ref['inside_95_raw'] < 0.5 and ref['position_scale'] > 10.0, ref
    assert ref['inside_95_calibrated'] >= 0.9
    # frames of the gap (never in the map): the stored scales carry over to them
    refiner = Refiner(lmap, desc)
    raw, cal = [], []
    for f in held:
        r = refiner.refine(read_rgb(f.image_path))
        if not r.refined:
            continue
        raw.append(pose_nees(r.pose_c2w, f.pose_c2w, r.covariance)[0])
        cal.append(pose_nees(r.pose_c2w, f.pose_c2w,
                             lmap.calibrated_covariance('refined', r.covariance))[0])
    assert len(raw) >= 5
    assert np.mean(np.asarray(cal) <= CHI2_3_95) >= 0.8 > np.mean(np.asarray(raw) <= CHI2_3_95)
    # the tracked kind is calibrated from the same held-out refinements
    trk = calib['tracked']
    assert trk['frames'] > 0 and ('position_scale' in trk or 'skipped' in trk)


@pytest.mark.slow
def test_uncalibrated_or_bad_calibration_is_reported(holo_map, tmp_path, caplog):
    lmap, _, _, calib = holo_map
    cov = np.diag([1e-6] * 3 + [1e-5] * 3)
    s_p, s_r = lmap.covariance_scales('refined')
    np.testing.assert_allclose(np.diag(lmap.calibrated_covariance('refined', cov)),
                               [1e-6 * s_p] * 3 + [1e-5 * s_r] * 3)
    with pytest.raises(ValueError, match='unknown pose kind'):
        lmap.calibrated_covariance('network', cov)
    bare = load_map(lmap.path)
    bare.meta = {k: v for k, v in lmap.meta.items() if k != 'covariance_calibration'}
    with caplog.at_level(logging.WARNING, logger='camreloc_ros'):
        a = bare.calibrated_covariance('refined', cov)
        bare.calibrated_covariance('refined', cov)
    assert np.array_equal(a, cov)
    warned = [r for r in caplog.records if 'no covariance calibration' in r.getMessage()]
    assert len(warned) == 1 and 'camreloc map' in warned[0].getMessage()
    broken = submap(lmap, np.arange(len(lmap)))
    broken.meta = dict(lmap.meta, covariance_calibration=dict(
        calib, refined=dict(calib['refined'], position_scale=-3.0)))
    broken.descriptor_onnx = lmap.descriptor_onnx
    path = save_map(broken, tmp_path / 'broken.npz')
    with pytest.raises(MapError, match='position_scale'):
        load_map(path)


@pytest.mark.slow
@pytest.mark.parametrize('runtime', ['torch', 'onnx'])
def test_checkpoint_scales_reach_the_prediction_in_both_runtimes(ckpt, tmp_path, runtime):
    model = PoseModel.from_checkpoint(ckpt)
    calibrated = model.save_checkpoint(tmp_path / 'cal.pt', extra={'covariance_calibration': {
        'position_scale': 9.0, 'rotation_scale': 0.25}})
    image = read_rgb(read_dataset(HOLO, 'posed').frames[0].image_path)
    plain = InferenceEngine.from_checkpoint(ckpt, runtime, cache_dir=tmp_path / 'onnx')
    scaled = InferenceEngine.from_checkpoint(calibrated, runtime, cache_dir=tmp_path / 'onnx')
    assert plain.covariance_scales == (1.0, 1.0) and scaled.covariance_scales == (9.0, 0.25)
    ratio = np.diag(scaled.predict(image).covariance) / np.diag(plain.predict(image).covariance)
    np.testing.assert_allclose(ratio, [9.0] * 3 + [0.25] * 3, rtol=1e-4)
