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

"""Tests of camreloc_ros.core.evaluation.metrics on hand-made predictions with known errors."""

import json

import cv2
import numpy as np
import pytest
from scipy import stats

from camreloc_ros.core.evaluation import metrics as ev, plots
from camreloc_ros.core import geometry as g

# Per-frame errors built into the predictions below (metres, degrees).
POS_ERR = np.array([0.03, 0.2, 0.4, 0.1, 2.0, 0.1])
ROT_ERR = np.array([1.0, 1.5, 4.0, 9.0, 20.0, 9.0])
# Shares within THRESHOLDS ((0.05, 5), (0.25, 2), (0.5, 5), (1, 10)), counted by hand.
WITHIN = [1 / 6, 2 / 6, 3 / 6, 5 / 6]


def _unit_rows(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _predictions(pos_err: np.ndarray, rot_err_deg: np.ndarray, seed: int = 0):
    """Ground truth and predictions off by exactly ``pos_err`` m and ``rot_err_deg``."""
    n = len(pos_err)
    rng = np.random.default_rng(seed)
    gt_pos = rng.uniform(-3.0, 3.0, size=(n, 3))
    gt_quat = g.quat_normalize(rng.normal(size=(n, 4)))
    pred_pos = gt_pos + _unit_rows(n, seed + 1) * np.asarray(pos_err)[:, None]
    delta = g.quat_from_rotvec(_unit_rows(n, seed + 2) * np.radians(rot_err_deg)[:, None])
    pred_quat = g.quat_multiply(gt_quat, delta)
    pred_quat[::2] *= -1.0  # the double cover must not matter
    return pred_pos, pred_quat, gt_pos, gt_quat


def test_pose_errors_constant_offset():
    n = 10
    pred_pos, pred_quat, gt_pos, gt_quat = _predictions(np.full(n, 0.1), np.full(n, 10.0))
    pos, rot = ev.pose_errors(pred_pos, pred_quat, gt_pos, gt_quat)
    np.testing.assert_allclose(pos, 0.1, atol=1e-12)
    np.testing.assert_allclose(rot, 10.0, atol=1e-9)
    s = ev.summarize(pos, rot)
    assert s['count'] == n
    for stat, value in (('median', 0.1), ('mean', 0.1), ('max', 0.1), ('std', 0.0)):
        assert s['position_m'][stat] == pytest.approx(value, abs=1e-12)
    for stat, value in (('median', 10.0), ('mean', 10.0), ('max', 10.0), ('std', 0.0)):
        assert s['orientation_deg'][stat] == pytest.approx(value, abs=1e-9)
    # 10 deg is outside every threshold but the loosest, where it sits exactly on the limit
    # (rounding decides), so that one is left out.
    for metres, degrees in ev.THRESHOLDS[:3]:
        assert s['within'][ev.threshold_key(metres, degrees)] == 0.0


def test_summarize_known_values():
    pos, rot = ev.pose_errors(*_predictions(POS_ERR, ROT_ERR))
    np.testing.assert_allclose(pos, POS_ERR, atol=1e-12)
    np.testing.assert_allclose(rot, ROT_ERR, atol=1e-9)
    s = ev.summarize(pos, rot)
    assert s['count'] == 6
    assert s['position_m']['median'] == pytest.approx(0.15)
    assert s['position_m']['mean'] == pytest.approx(2.83 / 6)
    assert s['position_m']['max'] == pytest.approx(2.0)
    assert s['position_m']['std'] == pytest.approx(np.std(POS_ERR))
    assert s['orientation_deg']['median'] == pytest.approx(6.5)
    assert s['orientation_deg']['mean'] == pytest.approx(44.5 / 6)
    assert s['orientation_deg']['max'] == pytest.approx(20.0)
    assert s['orientation_deg']['std'] == pytest.approx(np.std(ROT_ERR))
    keys = [ev.threshold_key(m, d) for m, d in ev.THRESHOLDS]
    assert keys == ['0.05m_5deg', '0.25m_2deg', '0.5m_5deg', '1m_10deg']
    assert [s['within'][k] for k in keys] == pytest.approx(WITHIN)


def test_summarize_rejects_bad_input():
    with pytest.raises(ValueError, match='one of each'):
        ev.summarize([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match='NaN'):
        ev.summarize([np.nan], [1.0])
    empty = ev.summarize([], [])
    assert empty['count'] == 0 and empty['position_m']['median'] is None
    json.dumps(empty, allow_nan=False)


def test_format_table_contains_numbers():
    s = ev.summarize(POS_ERR, ROT_ERR)
    table = ev.format_table({'regressor': s, 'empty': ev.summarize([], [])})
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1  # padded columns line up
    assert lines[1].startswith('|:')
    row = lines[2]
    assert row.startswith('| regressor')
    for text in ('0.150', '6.50', '0.472', '7.42', '2.000', '20.00', '16.7%', '33.3%',
                 '50.0%', '83.3%'):
        assert text in row, text
    assert '5cm/5deg' in lines[0] and '1m/10deg' in lines[0]
    assert 'median pos (m)' in lines[0] and 'std rot (deg)' in lines[0]


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, size=50).astype(float)   # many ties
    b = a + rng.normal(scale=2.0, size=50)
    assert ev.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert ev.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert ev.spearman([1.0], [2.0]) is None


def test_uncertainty_check():
    var = np.zeros((6, 6))
    var[:, :3] = (POS_ERR[:, None] ** 2) / 3.0           # std = error: perfect ranking
    var[:, 3:] = (np.radians(ROT_ERR[::-1])[:, None] ** 2) / 3.0  # reversed ranking
    u = ev.uncertainty_check(var, POS_ERR, ROT_ERR)
    assert u['position_spearman'] == pytest.approx(1.0)
    assert u['orientation_spearman'] < 0
    assert u['median_position_std_m'] == pytest.approx(0.15)
    constant = ev.uncertainty_check(np.ones((6, 6)), POS_ERR, ROT_ERR)
    assert constant['position_spearman'] is None
    with pytest.raises(ValueError):
        ev.uncertainty_check(np.ones((5, 6)), POS_ERR, ROT_ERR)


def test_topdown_axes_y_up_and_z_up():
    t = np.linspace(0, 2 * np.pi, 50)
    floor = np.stack([3 * np.cos(t), 2 * np.sin(t)], axis=1)
    height = 0.1 * np.sin(5 * t)
    y_up = np.stack([floor[:, 0], height, floor[:, 1]], axis=1)
    z_up = np.stack([floor[:, 0], floor[:, 1], height], axis=1)
    assert plots.topdown_axes(y_up) == (0, 2)
    assert plots.topdown_axes(z_up) == (0, 1)


def test_write_results_files(tmp_path):
    pred_pos, pred_quat, gt_pos, gt_quat = _predictions(POS_ERR, ROT_ERR)
    names = [f'seq-01/frame-{i:06d}' for i in range(6)]
    stamps = [10.0, 10.1, None, 10.3, 10.4, 10.5]
    var = np.full((6, 6), 0.01)
    results = ev.write_results(tmp_path / 'out', names, stamps, pred_pos, pred_quat, gt_pos,
                               gt_quat, var=var, title='hand made')
    files = results.paths
    expected = {'per_frame': 'per_frame.txt', 'pred_tum': 'pred_tum.txt',
                'gt_tum': 'gt_tum.txt', 'summary': 'summary.json', 'results': 'results.md',
                'trajectory': 'trajectory_topdown.png', 'error_cdf': 'error_cdf.png'}
    assert {k: p.name for k, p in files.items()} == expected
    assert all(p.is_file() for p in files.values())
    assert not [p for p in (tmp_path / 'out').iterdir() if p.name.startswith('.')]

    # per_frame.txt: predicted pose and errors equal a direct computation.
    text = files['per_frame'].read_text().splitlines()
    assert text[0] == '# name qw qx qy qz tx ty tz rot_err_deg pos_err_m'
    assert len(text) == 7
    first = text[1].split()
    assert first[0] == names[0]
    written_quat = g.quat_normalize(pred_quat)  # canonical sign, w >= 0
    np.testing.assert_allclose([float(v) for v in first[1:5]], written_quat[0, [3, 0, 1, 2]],
                               atol=1e-9)
    back = ev.load_per_frame(files['per_frame'])
    assert back['names'] == names
    np.testing.assert_allclose(back['position'], pred_pos, atol=1e-9)
    np.testing.assert_allclose(back['quaternion'], written_quat, atol=1e-9)
    np.testing.assert_allclose(back['pos_err_m'], g.position_error(pred_pos, gt_pos),
                               atol=1e-9)
    np.testing.assert_allclose(back['rot_err_deg'],
                               g.orientation_error_deg(pred_quat, gt_quat), atol=1e-8)

    # TUM: timestamp tx ty tz qx qy qz qw, 8 columns; unknown stamps are row / 30.
    for key, pos, quat in (('pred_tum', pred_pos, written_quat),
                           ('gt_tum', gt_pos, g.quat_normalize(gt_quat))):
        rows = [r.split() for r in files[key].read_text().splitlines()
                if not r.startswith('#')]
        assert len(rows) == 6 and all(len(r) == 8 for r in rows)
        by_hand = [float(v) for v in rows[1]]
        assert by_hand[0] == pytest.approx(10.1)
        np.testing.assert_allclose(by_hand[1:4], pos[1], atol=1e-9)
        np.testing.assert_allclose(by_hand[4:8], quat[1], atol=1e-9)
        assert float(rows[2][0]) == pytest.approx(2 / 30, abs=1e-6)
        stamps_back, pos_back, quat_back = ev.load_tum(files[key])
        np.testing.assert_allclose(pos_back, pos, atol=1e-9)
        np.testing.assert_allclose(quat_back, quat, atol=1e-9)

    summary = json.loads(files['summary'].read_text())
    # the summary written is returned, so callers need not compute it again
    assert results.summary == summary['summary']
    assert results.uncertainty == summary['uncertainty']
    assert summary['title'] == 'hand made'
    assert summary['summary']['count'] == 6
    assert summary['summary']['position_m']['median'] == pytest.approx(0.15)
    assert summary['uncertainty']['position_spearman'] is None   # constant variances
    md = files['results'].read_text()
    assert md.startswith('# hand made') and '0.150' in md and '83.3%' in md
    for key in ('trajectory', 'error_cdf'):
        img = cv2.imread(str(files[key]))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_write_results_validates(tmp_path):
    pred_pos, pred_quat, gt_pos, gt_quat = _predictions(POS_ERR, ROT_ERR)
    with pytest.raises(ValueError, match='shape'):
        ev.write_results(tmp_path, ['a'] * 6, None, pred_pos[:5], pred_quat, gt_pos, gt_quat)
    with pytest.raises(ValueError, match='one line'):
        ev.write_results(tmp_path, ['a\nb'] + ['c'] * 5, None, pred_pos, pred_quat, gt_pos,
                         gt_quat)
    assert not list(tmp_path.iterdir())


def test_load_per_frame_names_with_spaces(tmp_path):
    path = tmp_path / 'per_frame.txt'
    path.write_text('# header\nmy frame 1 0 0 0 1 2 3 4.5 0.25\n')
    back = ev.load_per_frame(path)
    assert back['names'] == ['my frame']
    np.testing.assert_allclose(back['quaternion'], [[0, 0, 0, 1]])
    np.testing.assert_allclose(back['position'], [[1, 2, 3]])
    assert back['rot_err_deg'][0] == 4.5 and back['pos_err_m'][0] == 0.25
