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

"""The evaluation plots: top-down trajectory and error CDFs (ROS-free).

Apart from :mod:`metrics` because drawing changes for other reasons than the numbers do, and
so a test can look at a figure (:func:`error_cdf_figure` returns it before it is saved).
matplotlib is imported only when plotting, through its object API with the Agg canvas (no
pyplot, no global backend switch), so importing this module stays cheap and thread-safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from camreloc_ros.core.io import atomic_output

# Errors are drawn on a log axis (a refined pose is off by centimetres, a network's by
# metres); an error of exactly 0 (a training frame retrieving itself) sits at this floor.
LOG_FLOOR = 1e-4

__all__ = ['LOG_FLOOR', 'topdown_axes', 'plot_trajectory', 'error_cdf_figure',
           'plot_error_cdf']


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format='png')
    return path


def _break_jumps(xy: np.ndarray) -> np.ndarray:
    """Insert NaN rows where the path jumps (held-out blocks, sequence changes).

    A test split is a set of separate blocks; drawing one line through all of them would
    show straight shortcuts the camera never took.
    """
    if len(xy) < 3:
        return xy
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    limit = max(10.0 * float(np.median(steps)), 1e-9)
    cut = np.flatnonzero(steps > limit) + 1
    return np.insert(xy, cut, np.nan, axis=0)


def topdown_axes(gt_pos: np.ndarray) -> tuple[int, int]:
    """Return the two axes (ascending) along which the ground truth spreads most."""
    spread = np.ptp(np.asarray(gt_pos, np.float64).reshape(-1, 3), axis=0)
    a, b = sorted(int(i) for i in np.argsort(-spread, kind='stable')[:2])
    return a, b


def plot_trajectory(path: str | Path, pred_pos: np.ndarray, gt_pos: np.ndarray,
                    title: str = '') -> Path:
    """Top-down view: ground truth, predictions, and a thin line from each to its truth.

    The two axes with the largest ground-truth spread are drawn, so y-up (7-Scenes,
    HoloLens) and z-up (TUM, robots) data both show the floor plan.
    """
    from matplotlib.collections import LineCollection
    pred = np.asarray(pred_pos, np.float64)
    gt = np.asarray(gt_pos, np.float64)
    a, b = topdown_axes(gt)
    fig = _figure(7.0, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    segs = np.stack([pred[:, [a, b]], gt[:, [a, b]]], axis=1)
    ax.add_collection(LineCollection(segs, colors='tab:red', linewidths=0.4, alpha=0.5,
                                     label='error'))
    g = _break_jumps(gt[:, [a, b]])
    ax.plot(g[:, 0], g[:, 1], '-', color='black', linewidth=1.2, label='ground truth')
    ax.plot(pred[:, a], pred[:, b], '.', color='tab:blue', markersize=3, label='predicted')
    axis = 'xyz'
    ax.set_xlabel(f'{axis[a]} (m)')
    ax.set_ylabel(f'{axis[b]} (m)')
    ax.set_aspect('equal', adjustable='datalim')
    ax.autoscale_view()
    ax.grid(True, linewidth=0.3)
    ax.legend(loc='best', fontsize=8)
    ax.set_title(f'{title + ": " if title else ""}top-down view ({axis[a]}-{axis[b]})')
    fig.tight_layout()
    return _save_png(fig, Path(path))


ErrorSeries = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def error_cdf_figure(series: ErrorSeries, title: str = ''):
    """Build the CDF figure: position and orientation panels, one step line per method.

    ``series``: method name -> (position errors in m, orientation errors in deg) per frame,
    drawn in the given order (network, retrieval top-1, refined, ...). The x axes are
    logarithmic, so centimetre (refined) and metre (network, retrieval) errors both read;
    each legend entry carries the method's median. Returns the matplotlib ``Figure``.
    """
    if not series:
        raise ValueError('error_cdf_figure: no series; expected at least one method')
    fig = _figure(10.0, 4.0)
    for i, (label, unit) in enumerate((('position error', 'm'), ('orientation error', 'deg'))):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, errors in series.items():
            e = np.sort(np.asarray(errors[i], np.float64).ravel())
            if e.size == 0:
                raise ValueError(f'error_cdf_figure: {name!r} has no {label}s')
            frac = np.arange(1, e.size + 1) / e.size
            med = float(np.median(e))
            ax.step(np.maximum(e, LOG_FLOOR), frac, where='post',
                    label=f'{name} (median {med:.3g} {unit})')
        ax.set_xscale('log')
        ax.set_xlabel(f'{label} ({unit}, log scale)')
        ax.set_ylabel('fraction of frames')
        ax.set_ylim(0.0, 1.02)
        ax.grid(True, which='both', linewidth=0.3)
        ax.legend(loc='upper left', fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_error_cdf(path: str | Path, series: ErrorSeries, title: str = '') -> Path:
    """Write :func:`error_cdf_figure` of ``series`` as a PNG at ``path``; return ``path``."""
    return _save_png(error_cdf_figure(series, title), Path(path))
