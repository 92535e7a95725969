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

"""``benchmarks/live_map.py``'s scoring on hand-made runs: no node, no DDS, no model.

The live figure is only as good as its bookkeeping: a pose must be matched to its frame by
stamp (never by arrival order), a frame that got nothing must count against the run, a pose
for a stamp never sent must not count at all, and a ``localized`` pose beyond 0.25 m / 10 deg
is a false localization whether or not the other poses are good. Runs are built so every
count is known by construction, and the benchmark's own numbers are checked against the
project's ``localization_metrics`` where that exists (one definition for both).
"""

import math
from pathlib import Path
import sys

import numpy as np
import pytest

from camreloc_ros.core.geometry import (matrix_from_pose, orientation_error_deg,
                                        pose_from_matrix, quat_from_rotvec)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
import live_map  # noqa: E402, I100 - a benchmark script, not a package module

pytestmark = pytest.mark.slow   # listed with the benchmarks' checks
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def _yaw(deg: float) -> np.ndarray:
    return quat_from_rotvec([0.0, 0.0, math.radians(deg)])


def _cov(sigma_m: float) -> np.ndarray:
    return np.diag([sigma_m ** 2] * 3 + [1e-4] * 3)


def _hand_run():
    """Eight frames at 30 Hz stamps, ground truth along x; each frame's fate beside it."""
    stamps = live_map.frame_stamps(['s'] * 8, list(range(8)))
    truth = {s: (np.array([0.1 * i, 0.0, 0.0]), IDENTITY) for i, s in enumerate(stamps)}
    plan = [  # state, source, published: (position offset m, yaw deg, sigma m) or None
        ('localized', 'refined', (0.01, 1.0, 0.05)),       # good, inside its ellipsoid
        ('localized', 'tracked', (0.30, 1.0, 0.05)),       # false: 0.30 m, outside
        ('localized', 'tracked', (0.02, 12.0, 0.05)),      # false: 12 deg
        ('dead_reckoning', 'odom', (0.50, 2.0, 1.0)),      # far, not claimed localized
        ('not_localized', 'network', None),                # withheld
        ('localized', 'refined', (0.04, 2.0, 0.05)),       # good
        (None, None, None),                                 # lost: the frame got nothing
        ('localized', 'refined', (0.03, 6.0, 0.05)),       # within 5 cm, not 5 deg
    ]
    published, states, network = {}, {}, {}
    for (state, source, pose), stamp in zip(plan, stamps):
        gt = truth[stamp][0]
        if state is not None:
            states[stamp] = {'state': state, 'source': source, 'inliers': '0',
                             'reason': f'why {state}'}
            network[stamp] = live_map.PoseSample(gt + [0.0, 2.0, 0.0], IDENTITY, _cov(1.0))
        if pose is not None:
            offset, yaw, sigma = pose
            published[stamp] = live_map.PoseSample(gt + [offset, 0.0, 0.0], _yaw(yaw),
                                                   _cov(sigma))
    return truth, stamps, published, network, states


@pytest.mark.parametrize('use_helper', [False, True])
def test_counts_of_a_hand_made_run(use_helper):
    """Answered, published, availability, false localizations and shares, by construction."""
    truth, stamps, published, network, states = _hand_run()
    s = live_map.score_run(truth, stamps, published, network, states, use_helper=use_helper)
    assert s['sent'] == 8
    assert s['answered'] == 7               # all but the lost frame (network_pose answers)
    assert s['published'] == 6
    assert s['network_answered'] == 7
    assert s['availability'] == pytest.approx(5 / 8)
    assert s['false_localizations'] == 2    # 0.30 m and 12 deg; not the dead-reckoning 0.5 m
    assert s['localized_published'] == 5
    assert s['within_5cm_5deg'] == pytest.approx(2 / 6)   # of the poses published
    assert s['over_25cm'] == pytest.approx(2 / 6)
    assert s['median_pos_m'] == pytest.approx(0.035)
    assert s['unmatched'] == 0
    assert s['tracking'] == pytest.approx(2 / 8) and s['refinement'] == pytest.approx(3 / 8)
    assert s['reasons'] == {'why dead_reckoning': 1, 'why not_localized': 1}
    # inside: 0.01, 0.04, 0.03 at 5 cm sigma and 0.5 m at 1 m sigma; not 0.30 m at 5 cm.
    # 0.02 m at 5 cm: d2 = 0.16, inside. So 5 of 6.
    assert s['inside_95'] == pytest.approx(5 / 6) and s['inside_95_n'] == 6


def test_the_helper_and_the_fallback_agree_where_both_define_a_number():
    """One definition: the benchmark's own numbers equal localization_metrics' (if present)."""
    if live_map.localization_helper() is None:
        pytest.skip('camreloc_ros.core.evaluation.localization_metrics does not exist here')
    run = _hand_run()
    own = live_map.score_run(*run, use_helper=False)
    helper = live_map.score_run(*run, use_helper=True)
    assert helper['metrics'] == 'localization_metrics' and own['metrics'] == 'benchmark'
    for key in ('answered', 'published', 'availability', 'false_localizations',
                'within_5cm_5deg', 'over_25cm', 'median_pos_m', 'median_rot_deg',
                'tracking', 'refinement'):
        assert own[key] == pytest.approx(helper[key]), key
    assert helper['kinds']['refined']['count'] == 3


def test_poses_are_matched_by_stamp_not_by_arrival_order():
    """Poses that arrive shuffled, and one for a stamp never sent, score like the right ones."""
    truth, stamps, published, network, states = _hand_run()
    shuffled = dict(reversed(list(published.items())))
    stranger = stamps[-1] + 10**9   # a second after the last frame: never sent
    shuffled[stranger] = live_map.PoseSample(np.zeros(3), IDENTITY, _cov(0.1))
    a = live_map.score_run(truth, stamps, published, network, states, use_helper=False)
    b = live_map.score_run(truth, stamps, shuffled, network, states, use_helper=False)
    assert b['unmatched'] == 1 and a['unmatched'] == 0
    for key in ('published', 'median_pos_m', 'false_localizations', 'within_5cm_5deg'):
        assert a[key] == b[key]


def test_missing_frames_count_and_absent_topics_are_none():
    """The current node: no status, no network_pose: those numbers are None, not zero."""
    truth, stamps, published, _, _ = _hand_run()
    half = dict(list(published.items())[:3])
    s = live_map.score_run(truth, stamps, half, None, None)
    assert s['sent'] == 8 and s['answered'] == 3 and s['published'] == 3
    for key in ('availability', 'false_localizations', 'network_answered', 'tracking',
                'refinement', 'states'):
        assert s[key] is None, key
    empty = live_map.score_run(truth, stamps, {}, None, None, use_helper=False)
    assert empty['answered'] == 0 and empty['median_pos_m'] is None
    assert empty['within_5cm_5deg'] is None and empty['inside_95'] is None


def test_ellipsoid_membership_uses_the_position_block():
    """Mahalanobis with the 3x3 position block; a singular claim is no claim."""
    cov = np.diag([0.01, 0.04, 0.09, 100.0, 100.0, 100.0])   # sigmas 0.1, 0.2, 0.3 m
    assert live_map.inside_ellipsoid(np.array([0.27, 0.0, 0.0]), cov)       # d2 7.29
    assert not live_map.inside_ellipsoid(np.array([0.29, 0.0, 0.0]), cov)   # d2 8.41
    assert live_map.inside_ellipsoid(np.array([0.0, 0.0, 0.8]), cov)        # d2 7.11
    assert live_map.inside_ellipsoid(np.ones(3), np.zeros((6, 6))) is None


def test_stamps_keep_block_gaps_and_never_repeat_across_sequences():
    """Capture time = index / 30 s; a second sequence starts after the first, with a gap."""
    stamps = live_map.frame_stamps(['a', 'a', 'a', 'b', 'b'], [0, 1, 75, 0, 1])
    rel = [(s - live_map.START_NS) * 1e-9 for s in stamps]
    assert rel[:3] == pytest.approx([0.0, 1 / 30, 2.5])
    assert rel[3] == pytest.approx(2.5 + live_map.SEQUENCE_GAP_FRAMES / 30)
    assert len(set(stamps)) == 5 and stamps == sorted(stamps)


def test_odometry_drifts_two_percent_of_the_distance_and_is_seeded():
    """A 10 m straight walk: the drift is about 2 % of it; same seed, same odometry."""
    poses = [matrix_from_pose([0.0, 0.0, 0.1 * k], IDENTITY) for k in range(101)]
    breaks = [k == 0 for k in range(101)]
    a = live_map.drifted_odometry(poses, breaks, np.random.default_rng(3))
    b = live_map.drifted_odometry(poses, breaks, np.random.default_rng(3))
    np.testing.assert_array_equal(a[-1], b[-1])
    true_rel = np.linalg.inv(poses[0]) @ poses[-1]
    odom_rel = np.linalg.inv(a[0]) @ a[-1]
    drift = np.linalg.norm(odom_rel[:3, 3] - true_rel[:3, 3])
    assert 0.1 <= drift <= 0.5        # 2 % of 10 m = 0.2 m, plus the yaw's lever arm
    _, q_true = pose_from_matrix(true_rel)
    _, q_odom = pose_from_matrix(odom_rel)
    assert 0.9 <= float(orientation_error_deg(q_odom, q_true)) <= 3.1   # 0.1-0.3 deg/m
    np.testing.assert_allclose(a[0], poses[0])
    # a new sequence carries the true relative pose over: no drift across the break
    two = live_map.drifted_odometry(poses[:2], [True, True], np.random.default_rng(3))
    np.testing.assert_allclose(np.linalg.inv(two[0]) @ two[1],
                               np.linalg.inv(poses[0]) @ poses[1], atol=1e-12)


def test_diagnostics_rates_read_the_refiner_counters():
    """Cumulative refiner counters -> refinements and rate; absent keys -> None."""
    d = live_map.diagnostics_rates({'refine_refined': '8', 'refine_fallbacks': '2',
                                    'localization_refinements_accepted': '6',
                                    'localization_tracked': '40', 'received': '75',
                                    'refine_last_ms': 'none', 'track_rate': '0.5'}, 2.5)
    assert d['refinements'] == 10 and d['refine_hz'] == pytest.approx(4.0)
    assert d['accepted'] == 6 and d['tracked'] == 40 and d['received'] == 75
    assert d['rejected'] is None and d['refine_ms'] is None
    assert d['tracking_values'] == {'track_rate': '0.5'}
    assert live_map.diagnostics_rates(None, 2.5)['refinements'] is None
