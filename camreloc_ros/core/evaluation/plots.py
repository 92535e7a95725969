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

"""The evaluation plots: top-down trajectory, error CDFs and covariance reliability (ROS-free).

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

# Quantile bins of the claimed sigma on the reliability plot, and the fewest frames one bin
# may hold (fewer bins when frames are few: an RMS of one or two errors is noise).
RELIABILITY_BINS = 8
MIN_PER_BIN = 5

__all__ = ['LOG_FLOOR', 'RELIABILITY_BINS', 'MIN_PER_BIN', 'topdown_axes', 'plot_trajectory',
           'error_cdf_figure', 'plot_error_cdf', 'reliability_bins', 'reliability_figure',
           'plot_reliability']


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


SigmaSeries = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def reliability_bins(sigma_n: Sequence[float], err_n: Sequence[float],
                     bins: int = RELIABILITY_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin frames by claimed sigma (quantile bins); return what each bin claims and shows.

    Returns per non-empty bin: the median claimed per-axis position sigma (m), the actual
    per-axis RMS position error ``sqrt(mean(|e|^2) / 3)`` (m) and the number of frames. For a
    Gaussian with covariance P, ``E|e|^2 = trace(P)``, so with sigma ``sqrt(trace(P) / 3)`` an
    honest covariance puts every bin on y = x; above it the pose is worse than claimed.
    Quantile edges give each bin about as many frames, so no bin's RMS rests on one frame
    while another holds hundreds; fewer bins when there are not :data:`MIN_PER_BIN` frames
    for each. Non-finite pairs are dropped.
    """
    sigma = np.asarray(sigma_n, np.float64).ravel()
    err = np.asarray(err_n, np.float64).ravel()
    if sigma.shape != err.shape:
        raise ValueError(f'reliability_bins: {sigma.size} sigmas vs {err.size} errors; '
                         'expected one of each per frame')
    ok = np.isfinite(sigma) & np.isfinite(err)
    sigma, err = sigma[ok], err[ok]
    if sigma.size == 0:
        empty = np.zeros(0, np.float64)
        return empty, empty, np.zeros(0, np.int64)
    k = max(1, min(int(bins), sigma.size // MIN_PER_BIN))
    edges = np.unique(np.quantile(sigma, np.linspace(0.0, 1.0, k + 1)))
    # bin i holds edges[i] <= sigma < edges[i + 1]; the largest sigma joins the last bin
    idx = np.clip(np.searchsorted(edges, sigma, side='right') - 1, 0, max(edges.size - 2, 0))
    xs, ys, counts = [], [], []
    for b in range(max(edges.size - 1, 1)):
        sel = idx == b
        if not sel.any():
            continue
        xs.append(float(np.median(sigma[sel])))
        ys.append(float(np.sqrt(np.mean(err[sel] ** 2) / 3.0)))
        counts.append(int(sel.sum()))
    return np.array(xs), np.array(ys), np.array(counts, np.int64)


def reliability_figure(series: SigmaSeries, title: str = '', bins: int = RELIABILITY_BINS):
    """Build the reliability figure: claimed position sigma against actual error, log axes.

    ``series``: kind of pose (network, refined, tracked, dead_reckoning) -> (claimed per-axis
    position sigma in m, position error in m) per frame; one line of :func:`reliability_bins`
    per kind with frames, drawn in the given order, and the ideal y = x dashed. A kind whose
    points sit above the line claims more than it delivers: its covariance would let a
    consumer trust a wrong pose. Returns the matplotlib ``Figure``.
    """
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = np.inf, -np.inf
    for name, (sigma_n, err_n) in series.items():
        x, y, counts = reliability_bins(sigma_n, err_n, bins)
        if x.size == 0:
            continue
        x, y = np.maximum(x, LOG_FLOOR), np.maximum(y, LOG_FLOOR)
        lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
        ax.plot(x, y, 'o-', markersize=4, label=f'{name} ({int(counts.sum())} frames)')
    if not np.isfinite(lo):
        lo, hi = 1e-2, 1.0   # nothing to draw: the ideal line alone, over a plausible span
    lo, hi = lo / 1.5, hi * 1.5
    ax.plot([lo, hi], [lo, hi], '--', color='gray', linewidth=1.0, label='ideal (honest)')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel('claimed position sigma, sqrt(trace / 3) (m, log scale)')
    ax.set_ylabel('actual RMS error per axis (m, log scale)')
    ax.grid(True, which='both', linewidth=0.3)
    ax.legend(loc='upper left', fontsize=7)
    ax.set_title(f'{title + ": " if title else ""}covariance reliability')
    fig.tight_layout()
    return fig


def plot_reliability(path: str | Path, series: SigmaSeries, title: str = '',
                     bins: int = RELIABILITY_BINS) -> Path:
    """Write :func:`reliability_figure` of ``series`` as a PNG at ``path``; return ``path``."""
    return _save_png(reliability_figure(series, title, bins), Path(path))
