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

"""The evaluation plots (core/evaluation/plots.py) and the demo's closing summary table.

ROS-free and cheap: figures are built from hand-made errors and inspected as matplotlib
objects (axis scale, one line per method, legend medians), the summary from small dicts and
JSON files laid out as ``make demo`` writes them.
"""

import json

import cv2
import numpy as np
import pytest

from camreloc_ros.core.evaluation import metrics, plots
from camreloc_ros.tools import demo

# errors from millimetres to metres, as network, retrieval and refined poses give them
NETWORK = (np.array([0.5, 1.0, 2.0, 4.0]), np.array([5.0, 10.0, 20.0, 40.0]))
RETRIEVAL = (np.array([0.3, 0.6, 0.9, 3.0]), np.array([2.0, 4.0, 6.0, 8.0]))
REFINED = (np.array([0.0, 0.01, 0.02, 0.5]), np.array([0.0, 0.2, 0.4, 10.0]))


def _series():
    return {'network': NETWORK, 'retrieval top-1': RETRIEVAL, 'refined': REFINED}


def test_cdf_figure_has_log_axes_and_one_line_per_method():
    fig = plots.error_cdf_figure(_series(), 'three methods')
    axes = fig.get_axes()
    assert len(axes) == 2
    for i, (ax, unit) in enumerate(zip(axes, ('m', 'deg'))):
        assert ax.get_xscale() == 'log'
        lines = ax.get_lines()
        assert len(lines) == 3   # no extra median lines: the medians are in the legend
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert [lab.split(' (')[0] for lab in labels] == ['network', 'retrieval top-1',
                                                          'refined']
        med = np.median(REFINED[i])
        assert labels[2] == f'refined (median {med:.3g} {unit})'
        # every frame is on its line, an exact 0 at the log floor instead of lost
        x = lines[2].get_xdata()
        assert np.min(x) == pytest.approx(plots.LOG_FLOOR)
        np.testing.assert_allclose(np.sort(x)[1:], np.sort(REFINED[i])[1:])
        assert lines[2].get_ydata()[-1] == pytest.approx(1.0)
    assert fig._suptitle.get_text() == 'three methods'


def test_cdf_figure_refuses_no_series_and_empty_errors():
    with pytest.raises(ValueError, match='no series'):
        plots.error_cdf_figure({})
    with pytest.raises(ValueError, match="'empty' has no position errors"):
        plots.error_cdf_figure({'empty': (np.array([]), np.array([]))})


def test_plot_error_cdf_writes_the_png(tmp_path):
    path = plots.plot_error_cdf(tmp_path / 'cdf.png', _series())
    img = cv2.imread(str(path))
    assert img is not None and img.shape[:2] == (440, 1100)   # 10 x 4 inches at 110 dpi
    assert [p.name for p in tmp_path.iterdir()] == ['cdf.png']   # no temporary left


def test_write_results_draws_its_result_first_then_the_compared_ones(tmp_path, monkeypatch):
    seen = []
    build = plots.error_cdf_figure

    def spy(series, title=''):
        seen.append((dict(series), title))
        return build(series, title)

    monkeypatch.setattr(plots, 'error_cdf_figure', spy)
    n = 4
    gt_pos = np.zeros((n, 3))
    gt_pos[:, 0] = np.arange(n)
    pred_pos = gt_pos + [[0.0, 0.0, e] for e in NETWORK[0]]
    quat = np.tile([0.0, 0.0, 0.0, 1.0], (n, 1))
    metrics.write_results(tmp_path, [f'f{i}' for i in range(n)], None, pred_pos, quat, gt_pos,
                          quat, title='net', compare={'retrieval top-1': RETRIEVAL,
                                                      'refined': REFINED})
    (series, title), = seen
    assert list(series) == ['net', 'retrieval top-1', 'refined'] and title == 'net'
    np.testing.assert_allclose(series['net'][0], NETWORK[0])   # its own position errors
    np.testing.assert_allclose(series['net'][1], 0.0, atol=1e-6)
    assert series['refined'] is REFINED
    assert (tmp_path / 'error_cdf.png').is_file()


# ------------------------------------------------------------------------- demo summary

SUMMARY = {
    'methods': {'network': {'position_m': 0.41234, 'orientation_deg': 5.214},
                'retrieval top-1': {'position_m': 0.9, 'orientation_deg': 8.0},
                'oracle': {'position_m': 0.2, 'orientation_deg': 3.0},
                'refined': {'position_m': 0.0312, 'orientation_deg': 0.456},
                'live node': {'position_m': None, 'orientation_deg': None}},
    'refined_share': 0.875,
    'live': {'images': 40, 'received': 38, 'answered': 0.95},
    'map': {'mb': 12.345, 'build_s': 41.6},
    'steps_s': {'train': 300.2, 'map': 45.0, 'evaluate': 60.4, 'live': 90.0},
}


def test_format_summary_table():
    text = demo.format_summary(SUMMARY)
    lines = text.splitlines()
    assert lines[0].startswith('demo summary')
    assert lines[1].split('|')[1:4] == [' method' + ' ' * 10, ' median pos (m) ',
                                        ' median rot (deg) ']   # widest name: retrieval top-1
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip('|').split('|')] for line in lines[3:8])}
    assert rows == {'network': ['0.412', '5.21'], 'retrieval top-1': ['0.900', '8.00'],
                    'oracle': ['0.200', '3.00'], 'refined': ['0.031', '0.46'],
                    'live node': ['-', '-']}
    assert len({len(line) for line in lines[1:8]}) == 1   # padded columns
    assert lines[8] == 'live node: answered 95.0 % of the images (38 of 40)'
    assert lines[9] == 'map: 12.3 MB, built in 42 s; refined 87.5 % of the frames'
    assert lines[10] == 'steps: train 300 s, map 45 s, evaluate 60 s, live 90 s (total 496 s)'
    assert len(lines) == 11


def _write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _row(pos, rot):
    return {'position_m': {'median': pos}, 'orientation_deg': {'median': rot}}


def test_demo_summary_reads_the_files_the_steps_write(tmp_path):
    _write(tmp_path / 'eval' / 'map_summary.json', {
        'rows': {'network (APR)': _row(0.4, 5.0), 'retrieval top-1': _row(0.9, 8.0),
                 'oracle: nearest training pose': _row(0.2, 3.0),
                 'refined (network where it falls back)': _row(0.03, 0.5),
                 'refined, refined frames only': _row(0.01, 0.1)},
        'shares': {'refined': 0.8, 'fallback': 0.2},
        'map_meta': {'seconds_features': 30.0, 'seconds_points': 12.5}})
    _write(tmp_path / 'live' / 'live' / 'bag_eval.json', {'images': 50, 'received': 45})
    _write(tmp_path / 'live' / 'live' / 'summary.json', {'summary': _row(0.41, 5.1)})
    (tmp_path / 'map.npz').write_bytes(b'x' * 2_500_000)
    summary = demo.demo_summary(tmp_path, {'train': 1.0, 'map': 2.0})
    assert summary['methods'] == {
        'network': {'position_m': 0.4, 'orientation_deg': 5.0},
        'retrieval top-1': {'position_m': 0.9, 'orientation_deg': 8.0},
        'oracle': {'position_m': 0.2, 'orientation_deg': 3.0},
        'refined': {'position_m': 0.03, 'orientation_deg': 0.5},
        'live node': {'position_m': 0.41, 'orientation_deg': 5.1}}
    assert summary['live'] == {'images': 50, 'received': 45, 'answered': 0.9}
    assert summary['map'] == {'mb': 2.5, 'build_s': 42.5}
    assert summary['refined_share'] == 0.8 and summary['steps_s'] == {'train': 1.0, 'map': 2.0}
    assert 'answered 90.0 %' in demo.format_summary(summary)


def test_demo_summary_of_a_run_that_stopped_early(tmp_path):
    summary = demo.demo_summary(tmp_path, {'train': 5.0})
    assert summary['live']['answered'] is None and summary['map']['mb'] is None
    text = demo.format_summary(summary)
    assert 'answered - %' in text and 'map: - MB' in text and 'total 5 s' in text
