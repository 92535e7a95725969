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

"""The localization state machine (ROS-free) on a stretch of the real HoloLens walk.

A triangulated map of every other frame of frames 285-315 (the tracker test's), real
refinements of real frames (the refiner with the ground-truth pose as its prior, so no
network is trained here), and a simulated network pose (ground truth + 0.3 m) as the
last-resort motion source. What is asserted is what a robot relies on: nothing is published
before two refinements agree, a wrong refinement is never published as localized, two
agreeing refinements against the track relocalize, a jump in time resets, late refinements
are caught up by tracking, and dead reckoning by odometry is exact and stops at its limits.
"""

import numpy as np
import pytest
from support import FlatDescriptor

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.geometry import matrix_to_quat
from camreloc_ros.core.localization.build import build_map
from camreloc_ros.core.localization.refiner import Refiner
from camreloc_ros.core.localization.state import Localizer, pose_mahalanobis2, rotation_vector
from camreloc_ros.tools.common import shared_data_dir

HOLO = shared_data_dir() / 'hololens-office'
FIRST = 290
NET_COV = np.diag([0.3 ** 2] * 3 + [0.1 ** 2] * 3)


@pytest.fixture(scope='module')
def walk():
    """(frames, K, map, refiner, refinements of frames 290..309 with the true prior)."""
    dataset = read_dataset(HOLO, 'posed')
    frames = dataset.frames
    lmap = build_map(frames[FIRST - 5:FIRST + 27:2], dataset.intrinsics, FlatDescriptor(),
                     {'sift': {'max_keypoints': 2048}}, log=lambda s: None)
    refiner = Refiner(lmap, None, {'top_k_retrieval': 0, 'top_k_prior': 4})
    K = dataset.intrinsics.matrix()
    images = {i: read_rgb(frames[i].image_path) for i in range(FIRST, FIRST + 20)}
    refined = {i: refiner.refine(images[i], frames[i].pose_c2w[:3, 3],
                                 matrix_to_quat(frames[i].pose_c2w[:3, :3]), NET_COV, K=K)
               for i in range(FIRST, FIRST + 20, 2)}
    return frames, K, lmap, images, refined


def _net(frame, rng):
    """A network pose 0.3 m off, with its covariance."""
    return (frame.pose_c2w[:3, 3] + rng.normal(0.0, 0.3, 3),
            matrix_to_quat(frame.pose_c2w[:3, :3]), NET_COV)


def _error_m(est, frame) -> float:
    return float(np.linalg.norm(est.position - frame.pose_c2w[:3, 3]))


def test_mahalanobis_and_rotation_vector():
    """The gate's distance: position and world-axis rotation, both covariances and floors."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=3)
    w *= 2.5 / np.linalg.norm(w)
    import cv2
    np.testing.assert_allclose(rotation_vector(cv2.Rodrigues(w)[0]), w, atol=1e-9)
    T = np.eye(4)
    S = np.eye(4)
    S[:3, 3] = [0.3, 0.0, 0.0]
    cov = np.diag([0.01 ** 2] * 3 + [1e-4] * 3)
    assert pose_mahalanobis2(S, cov, T, cov) == pytest.approx(0.09 / (2 * 1e-4))
    assert pose_mahalanobis2(S, cov, T, cov, floor_m=0.3) < 1.0   # floors widen the gate


@pytest.mark.slow   # builds a map and refines 10 frames (~25 s)
def test_two_refinements_then_localized_and_tracked_within_centimetres(walk):
    frames, K, lmap, images, refined = walk
    assert sum(r.refined for r in refined.values()) >= 8
    rng = np.random.default_rng(1)
    loc = Localizer(lmap)
    states, errors = [], []
    for i in range(FIRST, FIRST + 20):
        est = loc.process(images[i], i / 30.0, K, *_net(frames[i], rng),
                          refinement=refined.get(i) if i in (FIRST, FIRST + 4) else None)
        states.append(est.state)
        if est.publish:
            errors.append(_error_m(est, frames[i]))
            assert est.state in ('localized', 'dead_reckoning')
    # the first refinement alone publishes nothing (tracked tentatively), the second agrees
    assert states[:4] == ['not_localized'] * 4, states
    assert states[4] == 'localized'
    assert states.count('localized') >= 14, states
    assert np.median(errors) < 0.04 and max(errors) < 0.25, errors
    assert loc.counters()['relocalizations'] == 1


@pytest.mark.slow
def test_a_wrong_refinement_is_rejected_and_two_agreeing_ones_relocalize(walk):
    frames, K, lmap, images, refined = walk
    rng = np.random.default_rng(2)
    loc = Localizer(lmap)
    for i in range(FIRST, FIRST + 8):
        est = loc.process(images[i], i / 30.0, K, *_net(frames[i], rng),
                          refinement=refined.get(i) if i in (FIRST, FIRST + 2) else None)
    assert est.state == 'localized'

    def shifted(i):   # a lucky but wrong PnP: 1.5 m off, with its small covariance
        import dataclasses
        r = refined[i]
        return dataclasses.replace(r, position=r.position + [1.5, 0.0, 0.0])
    est = loc.process(images[FIRST + 8], (FIRST + 8) / 30.0, K, *_net(frames[FIRST + 8], rng),
                      refinement=shifted(FIRST + 8))
    assert est.refinement == 'rejected' and est.state == 'localized'
    assert _error_m(est, frames[FIRST + 8]) < 0.1, 'the wrong refinement was published'
    assert 'sigma from the tracked pose' in loc.last_rejection
    for i in range(FIRST + 9, FIRST + 10):
        est = loc.process(images[i], i / 30.0, K, *_net(frames[i], rng))
        assert _error_m(est, frames[i]) < 0.1
    # a second refinement agreeing with the first wrong one: the track is what is wrong
    est = loc.process(images[FIRST + 10], (FIRST + 10) / 30.0, K,
                      *_net(frames[FIRST + 10], rng), refinement=shifted(FIRST + 10))
    assert est.refinement == 'relocalized'
    assert loc.counters()['relocalizations'] == 2 and loc.counters()['rejected'] == 1


@pytest.mark.slow
def test_a_jump_back_in_time_resets_and_late_refinements_are_caught_up(walk):
    frames, K, lmap, images, refined = walk
    rng = np.random.default_rng(3)
    loc = Localizer(lmap)
    # live: refinements of frames 290 and 294 arrive 3 frames late (submit from the
    # refiner's side), caught up through the frames seen since
    late = {FIRST + 3: FIRST, FIRST + 7: FIRST + 4}
    states = []
    for i in range(FIRST, FIRST + 14):
        if i in late:
            j = late[i]
            assert loc.submit(images[j], j / 30.0, refined[j],
                              *_net(frames[j], rng)) is None
        est = loc.process(images[i], i / 30.0, K, *_net(frames[i], rng))
        states.append(est.state)
        if est.publish:
            assert _error_m(est, frames[i]) < 0.1
    assert states[:7] == ['not_localized'] * 7, states
    assert states[7] == 'localized' and states[-1] == 'localized', states
    est = loc.process(images[FIRST], 1.0, K, *_net(frames[FIRST], rng))   # back in time
    assert est.state == 'not_localized' and not est.publish
    assert loc.counters()['time_jumps'] == 1


@pytest.mark.slow
def test_dead_reckoning_by_odometry_is_exact_and_stops_at_its_limits(walk):
    frames, K, lmap, images, refined = walk
    rng = np.random.default_rng(4)
    loc = Localizer(lmap, {'lost_after': 0.3, 'max_position_std': 0.05})

    def odom(i):   # odometry = ground truth in another frame (an unknown offset)
        T = frames[i].pose_c2w.copy()
        T[:3, 3] += [10.0, -3.0, 1.0]
        return T[:3, 3], matrix_to_quat(T[:3, :3])
    for i in range(FIRST, FIRST + 6):
        est = loc.process(images[i], i / 30.0, K, *_net(frames[i], rng),
                          refinement=refined.get(i) if i in (FIRST, FIRST + 2) else None,
                          odom=odom(i))
    assert est.state == 'localized'
    black = np.zeros_like(images[FIRST])   # the camera sees nothing: tracking fails
    published = []
    for i in range(FIRST + 6, FIRST + 20):
        est = loc.process(black, i / 30.0, K, *_net(frames[i], rng), odom=odom(i))
        if est.state == 'dead_reckoning':
            assert est.source == 'odom'
            assert _error_m(est, frames[i]) < 0.06   # the last localized error, carried
            published.append(est.publish)
        else:
            assert est.state == 'not_localized' and not est.publish
    assert published and published[0], 'dead reckoning did not start'
    assert est.state == 'not_localized', 'dead reckoning went on past lost_after'
    assert loc.counters()['lost'] == 1
