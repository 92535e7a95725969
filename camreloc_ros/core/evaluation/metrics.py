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

"""Pose-error statistics, result tables and result files (ROS-free).

Every evaluation front end (the ``evaluate`` tool on datasets, the bag tools on rosbags)
writes the same files through :func:`write_results`, so numbers from different sources are
comparable and readable by the same scripts (and by evo, through the TUM files):

* ``per_frame.txt``: ``name qw qx qy qz tx ty tz rot_err_deg pos_err_m`` (predicted pose)
* ``pred_tum.txt`` / ``gt_tum.txt``: ``timestamp tx ty tz qx qy qz qw``
* ``summary.json``, ``results.md``: the thesis' columns (median, mean, max, std of the
  position and orientation errors) and the share of frames within :data:`THRESHOLDS`
* ``trajectory_topdown.png``, ``error_cdf.png`` (drawn by :mod:`plots`; the CDF can show
  other methods' errors on the same frames next to this result's, ``compare``)
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from camreloc_ros.core.geometry import orientation_error_deg, position_error, quat_normalize
from camreloc_ros.core.evaluation.plots import ErrorSeries, plot_error_cdf, plot_trajectory
from camreloc_ros.core.io import atomic_output, atomic_write_bytes, atomic_write_text  # noqa: F401

# (metres, degrees): a frame counts as within when both errors are at most these.
THRESHOLDS = ((0.05, 5.0), (0.25, 2.0), (0.50, 5.0), (1.0, 10.0))
# Stamps of frames without a timestamp: the frame's position in the video at this rate.
FALLBACK_FPS = 30.0
STATS = ('median', 'mean', 'max', 'std')
PER_FRAME_HEADER = '# name qw qx qy qz tx ty tz rot_err_deg pos_err_m'
TUM_HEADER = '# timestamp tx ty tz qx qy qz qw'

__all__ = [
    'THRESHOLDS', 'pose_errors', 'threshold_key', 'summarize', 'format_table',
    'markdown_table', 'spearman', 'uncertainty_check', 'frame_times', 'Results',
    'write_results', 'load_per_frame', 'load_tum',
    'atomic_output', 'atomic_write_text', 'atomic_write_bytes',
]


# ------------------------------------------------------------------------- statistics

def pose_errors(pred_pos_n3: np.ndarray, pred_quat_n4: np.ndarray, gt_pos_n3: np.ndarray,
                gt_quat_n4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position error (m) and orientation error (deg, sign-invariant) per frame."""
    pos = np.atleast_1d(position_error(pred_pos_n3, gt_pos_n3))
    rot = np.atleast_1d(orientation_error_deg(pred_quat_n4, gt_quat_n4))
    return pos, rot


def threshold_key(metres: float, degrees: float) -> str:
    """Key of a threshold in :func:`summarize`'s ``within`` dict, e.g. ``0.05m_5deg``."""
    return f'{metres:g}m_{degrees:g}deg'


def _threshold_label(metres: float, degrees: float) -> str:
    """Short column title: ``5cm/5deg``, ``1m/10deg``."""
    dist = f'{metres * 100:g}cm' if metres < 1.0 else f'{metres:g}m'
    return f'{dist}/{degrees:g}deg'


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {k: None for k in STATS}
    return {'median': float(np.median(values)), 'mean': float(np.mean(values)),
            'max': float(np.max(values)), 'std': float(np.std(values))}


def summarize(pos_err: Sequence[float], rot_err: Sequence[float],
              thresholds: Sequence[tuple[float, float]] = THRESHOLDS) -> dict:
    """Compute the thesis' columns for one result set, plus the share within each threshold.

    ``std`` is the population standard deviation (``ddof=0``). Statistics of an empty set
    are ``None`` (JSON ``null``), never NaN, so ``summary.json`` stays strict JSON.
    """
    pos = np.asarray(pos_err, np.float64).ravel()
    rot = np.asarray(rot_err, np.float64).ravel()
    if pos.shape != rot.shape:
        raise ValueError(f'pos_err has {pos.size} values but rot_err {rot.size}; '
                         'expected one of each per frame')
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(rot))):
        raise ValueError('pose errors contain NaN or inf; expected finite predictions')
    within = {}
    for metres, degrees in thresholds:
        ok = (pos <= metres) & (rot <= degrees)
        within[threshold_key(metres, degrees)] = float(ok.mean()) if pos.size else None
    return {'count': int(pos.size), 'position_m': _stats(pos),
            'orientation_deg': _stats(rot), 'within': within,
            'thresholds': [[float(m), float(d)] for m, d in thresholds]}


def _fmt(value: float | None, digits: int) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def format_table(rows: Mapping[str, dict]) -> str:
    """Markdown table, one row per named :func:`summarize` result, columns padded.

    Columns: count, median / mean / max / std of position (m) and orientation (deg) as in
    the thesis' tables, then the percentage of frames within each threshold.
    """
    thresholds = []
    for summary in rows.values():
        for m, d in summary.get('thresholds', THRESHOLDS):
            if (m, d) not in thresholds:
                thresholds.append((m, d))
    header = ['name', 'n']
    for stat in STATS:
        header += [f'{stat} pos (m)', f'{stat} rot (deg)']
    header += [_threshold_label(m, d) for m, d in thresholds]
    lines = []
    for name, s in rows.items():
        cells = [str(name), str(s['count'])]
        for stat in STATS:
            cells += [_fmt(s['position_m'][stat], 3), _fmt(s['orientation_deg'][stat], 2)]
        for m, d in thresholds:
            share = s['within'].get(threshold_key(m, d))
            cells.append('-' if share is None else f'{100.0 * share:.1f}%')
        lines.append(cells)
    return markdown_table(header, lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Markdown table with padded columns: the name column left, the numbers right-aligned.

    One layout for every result table (:func:`format_table`, the localization table), so
    they line up when printed one after the other and read the same in a terminal.
    """
    lines = [[str(c) for c in r] for r in rows]
    for r in lines:
        if len(r) != len(header):
            raise ValueError(f'markdown_table: a row has {len(r)} cells for {len(header)} '
                             'columns')
    widths = [max(len(r[i]) for r in [list(header)] + lines) for i in range(len(header))]

    def row(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths))]
        return '| ' + ' | '.join(padded) + ' |'

    rule = '|' + '|'.join([':' + '-' * (widths[0] + 1)]
                          + ['-' * (w + 1) + ':' for w in widths[1:]]) + '|'
    return '\n'.join([row(header), rule] + [row(r) for r in lines]) + '\n'


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``)."""
    n = x.size
    order = np.argsort(x, kind='mergesort')
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], n]
    avg = 0.5 * (starts + ends - 1) + 1.0
    ranks = np.empty(n, np.float64)
    ranks[order] = avg[np.cumsum(new) - 1]
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation; None when undefined (fewer than 2 values, or a constant)."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f'spearman: {x.size} vs {y.size} values; expected equal lengths')
    if x.size < 2:
        return None
    rx = _rankdata(x) - 0.5 * (x.size + 1)
    ry = _rankdata(y) - 0.5 * (y.size + 1)
    denom = math.sqrt(float(np.dot(rx, rx)) * float(np.dot(ry, ry)))
    if denom == 0.0:
        return None
    return float(np.dot(rx, ry) / denom)


def uncertainty_check(var_n6: np.ndarray, pos_err: Sequence[float],
                      rot_err: Sequence[float]) -> dict:
    """Check that the predicted uncertainty ranks frames like their actual errors do.

    A useful covariance (the live node publishes it) should be larger where the pose is
    worse: the Spearman correlation between predicted std and error should be clearly
    positive. Position std is ``sqrt(var_x + var_y + var_z)`` (m); rotation std is
    ``sqrt`` of the sum of the three rotation variances (rad², reported in degrees).
    Correlations are None when undefined (e.g. an untrained, constant variance branch).
    """
    var = np.asarray(var_n6, np.float64)
    if var.ndim != 2 or var.shape[1] != 6:
        raise ValueError(f'var: expected shape (N, 6), got {var.shape}')
    pos = np.asarray(pos_err, np.float64).ravel()
    rot = np.asarray(rot_err, np.float64).ravel()
    if not var.shape[0] == pos.size == rot.size:
        raise ValueError(f'{var.shape[0]} variances, {pos.size} position and {rot.size} '
                         'rotation errors; expected one of each per frame')
    pos_std = np.sqrt(np.maximum(var[:, :3], 0.0).sum(axis=1))
    rot_std = np.degrees(np.sqrt(np.maximum(var[:, 3:], 0.0).sum(axis=1)))
    return {
        'count': int(pos.size),
        'position_spearman': spearman(pos_std, pos),
        'orientation_spearman': spearman(rot_std, rot),
        'median_position_std_m': float(np.median(pos_std)) if pos.size else None,
        'median_orientation_std_deg': float(np.median(rot_std)) if pos.size else None,
    }


# ------------------------------------------------------------------------ result files

def _as(arr: np.ndarray, n: int, width: int, name: str) -> np.ndarray:
    out = np.asarray(arr, np.float64)
    if out.shape != (n, width):
        raise ValueError(f'{name}: expected shape ({n}, {width}), got {out.shape}')
    return out


def frame_times(stamps: Sequence[float | None] | None, n: int) -> np.ndarray:
    """Seconds per frame: known stamps as given, unknown ones the row position / 30.

    One rule (:data:`FALLBACK_FPS`) for every file and for the state machine that
    ``evaluate --map`` runs, so a frame without a time gets the same one everywhere.
    """
    if stamps is None:
        return np.arange(n) / FALLBACK_FPS
    if len(stamps) != n:
        raise ValueError(f'{len(stamps)} stamps for {n} frames; expected one per frame')
    return np.array([i / FALLBACK_FPS if s is None else float(s) for i, s in enumerate(stamps)])


def _tum_text(stamps: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> str:
    lines = [TUM_HEADER]
    for t, p, q in zip(stamps, pos, quat):
        lines.append(f'{t:.6f} ' + ' '.join(f'{v:.10g}' for v in (*p, *q)))
    return '\n'.join(lines) + '\n'


def _json_safe(obj):
    """Replace NaN/inf by None so summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass(frozen=True)
class Results:
    """What :func:`write_results` wrote.

    ``paths`` by key: per_frame, pred_tum, gt_tum, summary, results, trajectory, error_cdf;
    ``summary`` as :func:`summarize`; ``uncertainty`` as :func:`uncertainty_check` (None
    without variances).
    """

    paths: dict[str, Path]
    summary: dict
    uncertainty: dict | None = None


def write_results(out_dir: str | Path, names: Sequence[str],
                  stamps: Sequence[float | None] | None, pred_pos: np.ndarray,
                  pred_quat: np.ndarray, gt_pos: np.ndarray, gt_quat: np.ndarray,
                  var: np.ndarray | None = None, title: str = '',
                  info: Mapping | None = None, baselines: Mapping | None = None,
                  compare: ErrorSeries | None = None) -> Results:
    """Write per-frame errors, TUM trajectories, summary, table and plots into ``out_dir``.

    Quaternions are x, y, z, w (the package convention); they are written unit-norm with
    ``w >= 0``, and ``per_frame.txt`` puts w first as its header says. ``stamps``
    (seconds) may hold None for frames without a time: those get their row position / 30
    (FALLBACK_FPS); callers with frame indices pass ``index / 30`` themselves. Returns the
    written paths and the summary (:class:`Results`), so callers print the numbers written
    instead of computing them again. ``info`` (JSON-able: checkpoint, data, split, ...) is
    stored as is in ``summary.json``. ``baselines`` (``rows``, ``network_beats_retrieval``,
    ``verdict``: :mod:`camreloc_ros.core.evaluation.baselines`) adds the retrieval and oracle
    rows under the network's row in ``results.md``, its verdict line, and the entry
    ``baselines`` in ``summary.json``. ``compare``: other methods' per-frame (position m,
    orientation deg) errors on the same frames (retrieval top-1, refined), drawn on
    ``error_cdf.png`` after this result's line, so one figure compares them.
    """
    out_dir = Path(out_dir)
    names = [str(n) for n in names]
    n = len(names)
    if n == 0:
        raise ValueError('no frames to write; expected at least one prediction')
    for name in names:
        if not name or name != name.strip() or '\n' in name:
            raise ValueError(f'frame name {name!r} cannot be written on one line')
    pred_pos = _as(pred_pos, n, 3, 'pred_pos')
    # Unit norm, w >= 0: one spelling per rotation in every file (errors are sign-free).
    pred_quat = quat_normalize(_as(pred_quat, n, 4, 'pred_quat'))
    gt_pos = _as(gt_pos, n, 3, 'gt_pos')
    gt_quat = quat_normalize(_as(gt_quat, n, 4, 'gt_quat'))
    times = frame_times(stamps, n)
    pos_err, rot_err = pose_errors(pred_pos, pred_quat, gt_pos, gt_quat)
    summary = summarize(pos_err, rot_err)
    uncertainty = None
    if var is not None:
        uncertainty = uncertainty_check(_as(var, n, 6, 'var'), pos_err, rot_err)
    row_name = title or 'result'
    table = format_table({row_name: summary, **((baselines or {}).get('rows') or {})})

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in (
        ('per_frame', 'per_frame.txt'), ('pred_tum', 'pred_tum.txt'),
        ('gt_tum', 'gt_tum.txt'), ('summary', 'summary.json'), ('results', 'results.md'),
        ('trajectory', 'trajectory_topdown.png'), ('error_cdf', 'error_cdf.png'))}

    lines = [PER_FRAME_HEADER]
    for name, p, q, r_err, p_err in zip(names, pred_pos, pred_quat, rot_err, pos_err):
        vals = (q[3], q[0], q[1], q[2], *p, r_err, p_err)
        lines.append(name + ' ' + ' '.join(f'{v:.10g}' for v in vals))
    atomic_write_text(paths['per_frame'], '\n'.join(lines) + '\n')
    atomic_write_text(paths['pred_tum'], _tum_text(times, pred_pos, pred_quat))
    atomic_write_text(paths['gt_tum'], _tum_text(times, gt_pos, gt_quat))
    doc = {'title': title, 'summary': summary, 'uncertainty': uncertainty,
           'info': dict(info or {}), 'files': {k: p.name for k, p in paths.items()}}
    if baselines is not None:
        doc['baselines'] = dict(baselines)
    atomic_write_text(paths['summary'],
                      json.dumps(_json_safe(doc), indent=2, allow_nan=False) + '\n')
    md = [f'# {title}', ''] if title else []
    md += [table.rstrip('\n'), '']
    md.append('Errors: position in metres, orientation in degrees; threshold columns give '
              'the share of frames within both limits.')
    if baselines is not None:
        md += ['', f'{baselines["verdict"]}.']
    if uncertainty is not None:
        rho = {k: 'undefined (constant)' if uncertainty[k] is None else f'{uncertainty[k]:.3f}'
               for k in ('position_spearman', 'orientation_spearman')}
        md += ['', 'Uncertainty check, Spearman rank correlation of the predicted std with the '
               f'error (should be > 0): position {rho["position_spearman"]}, orientation '
               f'{rho["orientation_spearman"]}.']
    atomic_write_text(paths['results'], '\n'.join(md) + '\n')
    plot_trajectory(paths['trajectory'], pred_pos, gt_pos, title)
    plot_error_cdf(paths['error_cdf'], {row_name: (pos_err, rot_err), **(compare or {})}, title)
    return Results(paths, summary, uncertainty)


def load_per_frame(path: str | Path) -> dict:
    """Read ``per_frame.txt`` back.

    Returns ``names`` (list), ``position`` (N, 3), ``quaternion`` (N, 4, x y z w as
    everywhere else in the package), ``rot_err_deg`` (N,) and ``pos_err_m`` (N,).
    Names may contain spaces: the ten numbers are taken from the right.
    """
    path = Path(path)
    names, rows = [], []
    for n, raw in enumerate(path.read_text(encoding='utf-8').splitlines(), start=1):
        s = raw.strip()
        if not s or s.startswith('#'):
            continue
        parts = s.rsplit(None, 9)
        if len(parts) != 10:
            raise ValueError(f'{path}, line {n}: expected "{PER_FRAME_HEADER[2:]}", '
                             f'found {len(parts)} fields')
        try:
            rows.append([float(v) for v in parts[1:]])
        except ValueError:
            raise ValueError(f'{path}, line {n}: non-numeric value in {s!r}') from None
        names.append(parts[0])
    arr = np.array(rows, np.float64).reshape(-1, 9)
    return {'names': names, 'position': arr[:, 4:7], 'quaternion': arr[:, [1, 2, 3, 0]],
            'rot_err_deg': arr[:, 7], 'pos_err_m': arr[:, 8]}


def load_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a TUM trajectory: stamps (N,), positions (N, 3), quaternions (N, 4) x y z w."""
    rows = []
    for n, raw in enumerate(Path(path).read_text(encoding='utf-8').splitlines(), start=1):
        s = raw.strip()
        if not s or s.startswith('#'):
            continue
        vals = s.split()
        if len(vals) != 8:
            raise ValueError(f'{path}, line {n}: expected "{TUM_HEADER[2:]}", '
                             f'found {len(vals)} fields')
        rows.append([float(v) for v in vals])
    arr = np.array(rows, np.float64).reshape(-1, 8)
    return arr[:, 0], arr[:, 1:4], arr[:, 4:8]
