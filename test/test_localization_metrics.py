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

"""Localization-state scores, the reliability plot and their table (issue #20, must-show 4).

ROS-free and fast: runs are built by hand so every count is known by construction (which
pose is a false localization, which frame got nothing), and covariances are checked against
errors drawn from them (honest: 95 % inside the ellipsoid; overconfident: far fewer).
"""

import json
import math

import cv2
import numpy as np
import pytest

from camreloc_ros.core.evaluation import localization_metrics as lm
from camreloc_ros.core.evaluation import plots
from camreloc_ros.core.evaluation.metrics import format_table, markdown_table, summarize
from camreloc_ros.core.geometry import quat_from_rotvec

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def _cov(sigma_m: float, sigma_rad: float = 0.01) -> np.ndarray:
    return np.diag([sigma_m ** 2] * 3 + [sigma_rad ** 2] * 3)


def _yaw(deg: float) -> np.ndarray:
    return quat_from_rotvec([0.0, 0.0, math.radians(deg)])


def _hand_run():
    """Ten frames at the origin; what each frame does is written next to it."""
    frames = [  # state, source, publish, position offset (m), yaw (deg)
        ('localized', 'refined', True, 0.01, 1.0),        # good
        ('localized', 'refined', True, 0.03, 2.0),        # good
        ('localized', 'tracked', True, 0.30, 1.0),        # false: 0.30 m
        ('localized', 'tracked', True, 0.20, 12.0),       # false: 12 deg
        ('dead_reckoning', 'odom', True, 0.50, 3.0),      # far, but not claimed localized
        ('localized', 'refined', False, 1.00, 0.0),       # wrong but withheld: not false
        ('not_localized', 'network', False, 2.00, 0.0),   # network pose only
        ('not_localized', 'none', False, math.nan, 0.0),  # nothing estimated
        (None, None, False, math.nan, 0.0),               # live: the frame got nothing
        ('localized', 'refined', True, 0.04, 6.0),        # within 5 cm, not 5 deg
    ]
    n = len(frames)
    pos = np.array([[d, 0.0, 0.0] for *_, d, _ in frames])
    quat = np.stack([_yaw(y) for *_, y in frames])
    quat[np.isnan(pos[:, 0])] = np.nan
    net_pos = np.tile([0.5, 0.0, 0.0], (n, 1))
    net_pos[8] = np.nan                                   # live: no ~/network_pose either
    return dict(states=[f[0] for f in frames], sources=[f[1] for f in frames],
                publish=[f[2] for f in frames], pos_n3=pos, quat_n4=quat,
                cov_n66=np.stack([_cov(0.1)] * n), gt_pos_n3=np.zeros((n, 3)),
                gt_quat_n4=np.tile(IDENTITY, (n, 1)), net_pos_n3=net_pos,
                net_quat_n4=np.tile(IDENTITY, (n, 1)), net_cov_n66=np.stack([_cov(1.0)] * n))


def test_false_localizations_are_published_localized_poses_beyond_the_limits():
    m = lm.localization_metrics(**_hand_run())
    assert m['frames'] == 10 and m['scored'] == 10
    assert m['published'] == 6 and m['localized_published'] == 5
    assert m['false_localizations'] == 2                  # 0.30 m and 12 deg; not 1 m withheld
    assert m['false_share'] == pytest.approx(2 / 5)
    assert m['availability'] == pytest.approx(6 / 10)     # 'localized', published or not
    assert m['answered'] == pytest.approx(9 / 10)         # all but the frame that got nothing
    assert m['states'] == {'not_localized': 2, 'localized': 6, 'dead_reckoning': 1,
                           'missing': 1}
    pub = np.array([0.01, 0.03, 0.30, 0.20, 0.50, 0.04])
    assert m['position_m'] == pytest.approx(np.median(pub))
    assert m['orientation_deg'] == pytest.approx(np.median([1, 2, 1, 12, 3, 6]))
    assert m['within'] == pytest.approx(2 / 6)            # 0.01/1 and 0.03/2 only
    assert m['beyond'] == pytest.approx(2 / 6)            # 0.30 and 0.50 m
    json.dumps(m, allow_nan=False)                        # strict JSON, no NaN


def test_false_localization_limits_are_arguments():
    run = _hand_run()
    assert lm.localization_metrics(**run, false_m=0.35)['false_localizations'] == 1
    assert lm.localization_metrics(**run, false_m=0.35, false_deg=15.0)[
        'false_localizations'] == 0
    assert lm.localization_metrics(**run, false_m=0.1, false_deg=15.0)[
        'false_localizations'] == 2                       # 0.30 and 0.20 m


def test_a_live_run_without_network_poses_answers_only_what_it_published():
    run = _hand_run()
    for key in ('net_pos_n3', 'net_quat_n4', 'net_cov_n66'):
        run.pop(key)
    run['publish'] = list(run['publish'])
    run['publish'][7] = True       # published, but no pose came with it: not an answer
    m = lm.localization_metrics(**run)
    assert m['answered'] == pytest.approx(6 / 10) and m['published'] == 6
    assert m['kinds']['network']['count'] == 0 and m['kinds']['network']['coverage'] is None


def test_frames_without_ground_truth_count_but_are_not_scored():
    run = _hand_run()
    run['gt_pos_n3'][2] = np.nan   # the 0.30 m false localization has no ground truth now
    m = lm.localization_metrics(**run)
    assert m['frames'] == 10 and m['scored'] == 9
    assert m['false_localizations'] == 1 and m['localized_published'] == 4


def test_bad_labels_and_shapes_are_refused():
    run = _hand_run()
    with pytest.raises(ValueError, match='lost'):
        lm.localization_metrics(**dict(run, states=['lost'] * 10))
    with pytest.raises(ValueError, match='sources'):
        lm.localization_metrics(**dict(run, sources=['refined'] * 9))
    with pytest.raises(ValueError, match='cov_n66'):
        lm.localization_metrics(**dict(run, cov_n66=np.zeros((10, 3, 3))))


def test_kinds_follow_state_and_source_and_only_published_poses():
    run = _hand_run()
    kinds = lm.pose_kinds(run['states'], run['sources'], run['publish'], run['pos_n3'],
                          run['quat_n4'])
    assert kinds == ['refined', 'refined', 'tracked', 'tracked', 'dead_reckoning', None, None,
                     None, None, 'refined']
    m = lm.localization_metrics(**run)
    assert {k: m['kinds'][k]['count'] for k in lm.KINDS} == {
        'network': 9, 'refined': 3, 'tracked': 2, 'dead_reckoning': 1}
    # sigma 0.1 m: NEES = |e|² / 0.01; refined errors 0.01, 0.03, 0.04 m are all inside
    assert m['kinds']['refined']['coverage'] == 1.0
    assert m['kinds']['refined']['median_nees'] == pytest.approx(0.03 ** 2 / 0.01)
    assert m['kinds']['tracked']['coverage'] == pytest.approx(0.5)   # 0.30 m: NEES 9 > 7.81
    assert m['kinds']['dead_reckoning']['coverage'] == 0.0          # 0.5 m: NEES 25


def _gaussian_run(n: int, claim_scale: float, seed: int = 0):
    """Refined poses whose errors are drawn from a per-frame covariance; claimed scaled."""
    rng = np.random.default_rng(seed)
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(1.0), n))      # 1 cm to 1 m, per frame
    A = rng.normal(size=(n, 3, 3)) * 0.3 + np.eye(3)               # anisotropic, correlated
    P = sigma[:, None, None] ** 2 * A @ np.swapaxes(A, 1, 2)
    err = np.einsum('nij,nj->ni', np.linalg.cholesky(P), rng.normal(size=(n, 3)))
    cov = np.zeros((n, 6, 6))
    cov[:, :3, :3] = P * claim_scale
    cov[:, 3:, 3:] = np.eye(3) * 1e-4
    return dict(states=['localized'] * n, sources=['refined'] * n, publish=[True] * n,
                pos_n3=err, quat_n4=np.tile(IDENTITY, (n, 1)), cov_n66=cov,
                gt_pos_n3=np.zeros((n, 3)), gt_quat_n4=np.tile(IDENTITY, (n, 1)))


def test_an_honest_covariance_covers_95_percent_and_an_overconfident_one_does_not():
    honest = lm.localization_metrics(**_gaussian_run(4000, 1.0))['kinds']['refined']
    assert honest['coverage'] == pytest.approx(0.95, abs=0.015)
    assert honest['median_nees'] == pytest.approx(2.366, rel=0.08)   # chi²(3) median
    assert honest['spearman'] > 0.5      # sigmas span two decades: errors follow them
    proud = lm.localization_metrics(**_gaussian_run(4000, 0.1))['kinds']['refined']
    assert proud['coverage'] < 0.5 and proud['median_nees'] > 20.0
    assert proud['spearman'] == pytest.approx(honest['spearman'])   # ranks do not change


def test_mahalanobis_matches_the_explicit_inverse_and_refuses_unusable_claims():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(3, 3))
    cov = np.zeros((3, 6, 6))
    cov[0, :3, :3] = A @ A.T + 0.1 * np.eye(3)
    cov[1, :3, :3] = np.diag([1.0, 1.0, 0.0])          # singular: cannot be checked
    cov[2] = np.nan
    e = rng.normal(size=(3, 3))
    d2 = lm.mahalanobis2(e, cov)
    assert d2[0] == pytest.approx(e[0] @ np.linalg.inv(cov[0, :3, :3]) @ e[0])
    assert np.isnan(d2[1]) and np.isnan(d2[2])
    np.testing.assert_allclose(lm.position_sigma(cov)[:2],
                               [math.sqrt(np.trace(cov[0, :3, :3]) / 3), math.sqrt(2 / 3)])


def test_estimate_arrays_fill_frames_that_got_nothing():
    class Est:
        state, source, publish = 'localized', 'tracked', True
        position, quaternion, covariance = np.ones(3), IDENTITY, _cov(0.2)

    arrays = lm.estimate_arrays([Est(), None])
    assert arrays['states'] == ['localized', None] and arrays['sources'] == ['tracked', None]
    assert arrays['publish'].tolist() == [True, False]
    assert np.array_equal(arrays['pos_n3'][0], np.ones(3)) and np.isnan(arrays['pos_n3'][1]).all()
    m = lm.localization_metrics(**arrays, gt_pos_n3=np.ones((2, 3)),
                                gt_quat_n4=np.tile(IDENTITY, (2, 1)))
    assert m['answered'] == 0.5 and m['kinds']['tracked']['count'] == 1


def test_the_table_has_one_row_per_run_and_dashes_for_kinds_it_lacks():
    rows = {'offline': lm.localization_metrics(**_hand_run()),
            'live': lm.localization_metrics(**_gaussian_run(50, 1.0))}
    text = lm.format_localization_table(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + 2 and len({len(line) for line in lines}) == 1   # padded
    header = [c.strip() for c in lines[0].strip('|').split('|')]
    offline = [c.strip() for c in lines[2].strip('|').split('|')]
    live = [c.strip() for c in lines[3].strip('|').split('|')]
    assert header[:4] == ['name', 'frames', 'answered', 'available']
    assert offline[header.index('false >25cm/10deg')] == '2 (40.0%)'
    assert offline[header.index('95% ell. tracked')] == '50.0% (2)'
    assert live[header.index('95% ell. tracked')] == '-'
    assert live[header.index('frames')] == '50'


def test_markdown_table_keeps_the_result_table_layout():
    s = summarize([0.1, 0.2], [1.0, 2.0])
    text = format_table({'a': s})
    assert text.splitlines()[1].startswith('|:')
    with pytest.raises(ValueError, match='cells'):
        markdown_table(['a', 'b'], [['1']])


def test_reliability_bins_put_an_honest_claim_on_the_diagonal():
    run = _gaussian_run(4000, 1.0, seed=3)
    series = lm.reliability_series(**run)
    assert list(series) == ['refined']
    x, y, counts = plots.reliability_bins(*series['refined'], bins=8)
    assert len(x) == 8 and counts.sum() == 4000 and counts.min() >= 400
    assert np.all(np.diff(x) > 0)
    np.testing.assert_allclose(y / x, 1.0, atol=0.2)
    proud = lm.reliability_series(**_gaussian_run(4000, 0.1, seed=3))['refined']
    _, y_proud, _ = plots.reliability_bins(*proud, bins=8)
    assert np.all(y_proud / plots.reliability_bins(*proud, bins=8)[0] > 2.0)
    # one claimed sigma for every frame: one bin, not eight empty ones
    x1, _, c1 = plots.reliability_bins(np.full(10, 0.1), np.linspace(0, 1, 10))
    assert x1.tolist() == [0.1] and c1.tolist() == [10]
    # few frames: no bin holds fewer than MIN_PER_BIN, so no point is one frame's noise
    _, _, c2 = plots.reliability_bins(np.linspace(0.1, 1, 12), np.ones(12))
    assert len(c2) == 12 // plots.MIN_PER_BIN and c2.min() >= plots.MIN_PER_BIN


def test_reliability_figure_draws_one_line_per_kind_and_the_ideal_on_log_axes(tmp_path):
    run = _hand_run()
    series = lm.reliability_series(**run)
    assert list(series) == ['network', 'refined', 'tracked', 'dead_reckoning']
    fig = plots.reliability_figure(series, 'hand run')
    (ax,) = fig.get_axes()
    assert ax.get_xscale() == 'log' and ax.get_yscale() == 'log'
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ['network (9 frames)', 'refined (3 frames)', 'tracked (2 frames)',
                      'dead_reckoning (1 frames)', 'ideal (honest)']
    ideal = ax.get_lines()[-1]
    assert np.array_equal(ideal.get_xdata(), ideal.get_ydata())
    path = plots.plot_reliability(tmp_path / 'reliability.png', series, 'hand run')
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100
