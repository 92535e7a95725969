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

"""Scores of a localizer's states: is a wrong pose ever published as localized (ROS-free).

The pose errors of :mod:`metrics` say how good the poses are; a robot also needs to know
when to trust one. The localization state machine marks each frame ``localized``,
``dead_reckoning`` or ``not_localized`` and publishes (or withholds) a pose with a covariance.
:func:`localization_metrics` scores exactly that, from per-frame arrays, so the offline
evaluation (``evaluate --map``, ``bag-eval --map``) and a live run report the same numbers:

* answered: share of frames with any pose out (on ``pose``, or the network's on
  ``~/network_pose``); availability: share of frames ``localized``
* the published poses' median errors, the share within 5 cm / 5 deg and beyond 25 cm
* false localizations: published ``localized`` poses more than 0.25 m or 10 deg off (count and
  share of the localized poses published): the number issue #20 wants at zero
* per kind of pose (network, refined, tracked, dead_reckoning): ellipsoid coverage (share of
  position errors inside the claimed 95 % ellipsoid, Mahalanobis² under chi²(3) = 7.81), the
  median NEES (2.37, the chi²(3) median, for an honest covariance) and the Spearman rank
  correlation of the claimed sigma with the error; :func:`reliability_series` feeds the
  reliability plot (:func:`camreloc_ros.core.evaluation.plots.plot_reliability`).

A live run where frames got nothing passes None states and NaN rows for them: they count as
frames, not as answers. Frames without finite ground truth count as frames but are not scored.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from camreloc_ros.core.evaluation.metrics import markdown_table, pose_errors, spearman
# The labels' one home: the state machine that produces them.
from camreloc_ros.core.localization.state import SOURCES, STATES
# Kinds of pose whose covariance is scored: the network's own, and what the localizer says.
KINDS = ('network', 'refined', 'tracked', 'dead_reckoning')
# chi²(3) 95 % quantile: an honest 3-D Gaussian puts 95 % of position errors inside it.
CHI2_3_95 = 7.814727903251178
# A published ``localized`` pose further off than these is a false localization.
FALSE_M = 0.25
FALSE_DEG = 10.0
# "Good" (within both) and "far" (beyond) limits of the table's columns.
GOOD_M = 0.05
GOOD_DEG = 5.0
FAR_M = 0.25

__all__ = ['STATES', 'SOURCES', 'KINDS', 'CHI2_3_95', 'FALSE_M', 'FALSE_DEG', 'GOOD_M',
           'GOOD_DEG', 'FAR_M', 'estimate_arrays', 'position_sigma', 'mahalanobis2',
           'pose_kinds', 'localization_metrics', 'reliability_series',
           'format_localization_table']


# ---------------------------------------------------------------------------- inputs

def _rows(arr, n: int, shape: tuple, name: str) -> np.ndarray:
    """(n, *shape) float array; None gives all-NaN rows (nothing known)."""
    if arr is None:
        return np.full((n, *shape), np.nan)
    out = np.asarray(arr, np.float64)
    if out.shape != (n, *shape):
        raise ValueError(f'{name}: expected shape {(n, *shape)}, got {out.shape}')
    return out


def _labels(values: Sequence, n: int, allowed: tuple, name: str) -> list:
    if len(values) != n:
        raise ValueError(f'{name}: {len(values)} values for {n} frames; expected one per frame')
    out = []
    for v in values:
        if v is not None and v not in allowed:
            raise ValueError(f'{name}: unknown value {v!r}; expected one of '
                             f'{", ".join(allowed)} (or None for a frame without an answer)')
        out.append(v)
    return out


def estimate_arrays(estimates: Sequence) -> dict:
    """Per-frame arrays of the localizer's estimates, as :func:`localization_metrics` takes.

    ``estimates``: one per frame, with ``state``, ``source``, ``publish``, ``position``,
    ``quaternion`` (x y z w) and ``covariance`` (6x6), or None where the frame got nothing
    (a live run's lost frame): None state and source, not published, NaN rows. Returns
    ``states``, ``sources``, ``publish``, ``pos_n3``, ``quat_n4``, ``cov_n66``.
    """
    n = len(estimates)
    pos_n3, quat_n4 = np.full((n, 3), np.nan), np.full((n, 4), np.nan)
    cov_n66 = np.full((n, 6, 6), np.nan)
    states, sources, publish = [None] * n, [None] * n, np.zeros(n, bool)
    for i, est in enumerate(estimates):
        if est is None:
            continue
        states[i], sources[i], publish[i] = est.state, est.source, bool(est.publish)
        if est.position is not None:
            pos_n3[i] = np.asarray(est.position, np.float64).reshape(3)
        if est.quaternion is not None:
            quat_n4[i] = np.asarray(est.quaternion, np.float64).reshape(4)
        if est.covariance is not None:
            cov_n66[i] = np.asarray(est.covariance, np.float64).reshape(6, 6)
    return {'states': states, 'sources': sources, 'publish': publish, 'pos_n3': pos_n3,
            'quat_n4': quat_n4, 'cov_n66': cov_n66}


# ------------------------------------------------------------------------- covariance

def position_sigma(cov_n66: np.ndarray) -> np.ndarray:
    """Claimed per-axis position sigma ``sqrt(trace(P) / 3)`` (m) of each 6x6 covariance.

    One number per frame that an error can be ranked and binned against: the RMS of the three
    axis sigmas, so an honest isotropic covariance gives ``E|e|² = 3 sigma²``. NaN where the
    block is not finite or its trace not positive.
    """
    cov = np.asarray(cov_n66, np.float64).reshape(-1, 6, 6)
    tr = np.trace(cov[:, :3, :3], axis1=1, axis2=2)
    with np.errstate(invalid='ignore'):
        return np.where(np.isfinite(tr) & (tr > 0), np.sqrt(np.maximum(tr, 0.0) / 3.0), np.nan)


def mahalanobis2(err_n3: np.ndarray, cov_n66: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance ``e^T P^-1 e`` of position errors (the 3-D NEES).

    ``err_n3``: estimate minus ground truth (m); ``P``: the 3x3 position block. NaN where the
    error or the block is not finite or the block is not positive definite (a claim that
    cannot be checked is not counted as honest).
    """
    err = np.asarray(err_n3, np.float64).reshape(-1, 3)
    P = np.asarray(cov_n66, np.float64).reshape(-1, 6, 6)[:, :3, :3]  # noqa: N806
    out = np.full(err.shape[0], np.nan)
    ok = np.isfinite(err).all(axis=1) & np.isfinite(P).all(axis=(1, 2))
    if ok.any():
        Ps = 0.5 * (P[ok] + np.swapaxes(P[ok], 1, 2))  # noqa: N806
        pd = np.linalg.eigvalsh(Ps)[:, 0] > 0.0
        idx = np.flatnonzero(ok)[pd]
        if idx.size:
            sol = np.linalg.solve(Ps[pd], err[idx][:, :, None])[:, :, 0]
            out[idx] = np.einsum('ni,ni->n', err[idx], sol)
    return out


def pose_kinds(states: Sequence, sources: Sequence, publish: Sequence[bool],
               pos_n3: np.ndarray, quat_n4: np.ndarray) -> list:
    """Kind of each published estimate (refined, tracked, dead_reckoning, network) or None.

    ``dead_reckoning`` for that state (or an ``odom`` source), else the source. Frames whose
    pose is not published, or not finite, have no kind: the consumer never saw their claim.
    """
    pos = np.asarray(pos_n3, np.float64).reshape(-1, 3)
    quat = np.asarray(quat_n4, np.float64).reshape(-1, 4)
    out = []
    for i, (st, src, pub) in enumerate(zip(states, sources, publish)):
        if not (pub and np.isfinite(pos[i]).all() and np.isfinite(quat[i]).all()):
            out.append(None)
        elif st == 'dead_reckoning' or src == 'odom':
            out.append('dead_reckoning')
        elif src in KINDS:
            out.append(src)
        else:
            out.append(None)
    return out


# ------------------------------------------------------------------------- the metrics

class _Run:
    """The checked per-frame arrays of one run, and the errors derived from them once."""

    def __init__(self, states, sources, publish, pos_n3, quat_n4, cov_n66, gt_pos_n3,
                 gt_quat_n4, net_pos_n3, net_quat_n4, net_cov_n66):
        self.gt_pos = np.asarray(gt_pos_n3, np.float64)
        if self.gt_pos.ndim != 2 or self.gt_pos.shape[1] != 3:
            raise ValueError(f'gt_pos_n3: expected shape (N, 3), got {self.gt_pos.shape}')
        n = self.n = self.gt_pos.shape[0]
        self.gt_quat = _rows(gt_quat_n4, n, (4,), 'gt_quat_n4')
        self.states = _labels(states, n, STATES, 'states')
        self.sources = _labels(sources, n, SOURCES, 'sources')
        pub = np.asarray(publish, bool).ravel()
        if pub.size != n:
            raise ValueError(f'publish: {pub.size} values for {n} frames; expected one per '
                             'frame')
        self.pos = _rows(pos_n3, n, (3,), 'pos_n3')
        self.quat = _rows(quat_n4, n, (4,), 'quat_n4')
        self.cov = _rows(cov_n66, n, (6, 6), 'cov_n66')
        self.has_net = net_pos_n3 is not None
        self.net_pos = _rows(net_pos_n3, n, (3,), 'net_pos_n3')
        self.net_quat = _rows(net_quat_n4, n, (4,), 'net_quat_n4')
        self.net_cov = _rows(net_cov_n66, n, (6, 6), 'net_cov_n66')
        finite = np.isfinite(self.pos).all(axis=1) & np.isfinite(self.quat).all(axis=1)
        self.published = pub & finite   # a pose that went out and can be scored
        self.net_finite = (np.isfinite(self.net_pos).all(axis=1)
                           & np.isfinite(self.net_quat).all(axis=1))
        self.scored = np.isfinite(self.gt_pos).all(axis=1) & np.isfinite(self.gt_quat).all(axis=1)
        self.pos_err, self.rot_err = self._errors(self.pos, self.quat, self.published)
        self.net_pos_err, _ = self._errors(self.net_pos, self.net_quat, self.net_finite)
        self.kinds = pose_kinds(self.states, self.sources, pub, self.pos, self.quat)

    def _errors(self, pos, quat, have):
        pos_err, rot_err = np.full(self.n, np.nan), np.full(self.n, np.nan)
        sel = have & self.scored
        if sel.any():
            pos_err[sel], rot_err[sel] = pose_errors(pos[sel], quat[sel], self.gt_pos[sel],
                                                     self.gt_quat[sel])
        return pos_err, rot_err

    def kind_frames(self) -> dict:
        """Kind -> (position error vectors (k, 3), covariances (k, 6, 6)) of scored frames."""
        out = {}
        for kind in KINDS:
            if kind == 'network' and self.has_net:
                sel = self.net_finite & self.scored
                pos, cov = self.net_pos, self.net_cov
            else:
                sel = np.array([k == kind for k in self.kinds], bool) & self.scored
                pos, cov = self.pos, self.cov
            out[kind] = (pos[sel] - self.gt_pos[sel], cov[sel])
        return out


def _share(count: int, total: int) -> float | None:
    return float(count) / total if total else None


def _median(values: np.ndarray) -> float | None:
    v = values[np.isfinite(values)]
    return float(np.median(v)) if v.size else None


def _kind_stats(err_k3: np.ndarray, cov_k66: np.ndarray, chi2: float) -> dict:
    nees = mahalanobis2(err_k3, cov_k66)
    sigma = position_sigma(cov_k66)
    err = np.linalg.norm(err_k3, axis=1) if len(err_k3) else np.zeros(0)
    ok = np.isfinite(nees)
    both = np.isfinite(sigma) & np.isfinite(err)
    return {'count': int(len(err_k3)), 'usable_covariance': int(ok.sum()),
            'coverage': _share(int((nees[ok] <= chi2).sum()), int(ok.sum())),
            'median_nees': _median(nees), 'median_sigma_m': _median(sigma),
            'median_error_m': _median(err),
            'spearman': spearman(sigma[both], err[both]) if both.sum() >= 2 else None}


def localization_metrics(states: Sequence, sources: Sequence, publish: Sequence[bool],
                         pos_n3: np.ndarray, quat_n4: np.ndarray, cov_n66: np.ndarray,
                         gt_pos_n3: np.ndarray, gt_quat_n4: np.ndarray,
                         net_pos_n3: np.ndarray | None = None,
                         net_quat_n4: np.ndarray | None = None,
                         net_cov_n66: np.ndarray | None = None,
                         false_m: float = FALSE_M, false_deg: float = FALSE_DEG,
                         good_m: float = GOOD_M, good_deg: float = GOOD_DEG,
                         far_m: float = FAR_M, chi2: float = CHI2_3_95) -> dict:
    """Score one run's localization states and published poses against the ground truth.

    Per frame: ``states`` (:data:`STATES` or None: the frame got nothing), ``sources``
    (:data:`SOURCES` or None), ``publish`` (the pose went out on ``pose``), the estimate's
    position (m), quaternion (x y z w) and 6x6 covariance (x y z, rotation about world
    x y z), the ground truth, and optionally the network's own pose and covariance (what
    ``~/network_pose`` carries). NaN rows stand for nothing known; a published frame with a
    NaN pose counts as not published. Returns a JSON-able dict (None, never NaN):
    ``frames``, ``scored``, ``answered`` / ``availability`` (shares of frames), ``states`` and
    ``sources`` (counts), ``published``, ``position_m`` / ``orientation_deg`` (medians of the
    published poses), ``within`` (share of published within ``good_m`` and ``good_deg``),
    ``beyond`` (share of published further than ``far_m``), ``false_localizations`` and
    ``false_share`` (of the scored ``localized`` poses published), ``localized_published``,
    ``kinds`` (per :data:`KINDS`: ``count``, ``usable_covariance``, ``coverage``,
    ``median_nees``, ``median_sigma_m``, ``median_error_m``, ``spearman``) and ``limits``.
    """
    run = _Run(states, sources, publish, pos_n3, quat_n4, cov_n66, gt_pos_n3, gt_quat_n4,
               net_pos_n3, net_quat_n4, net_cov_n66)
    n = run.n
    answered = run.published | run.net_finite
    localized = np.array([s == 'localized' for s in run.states], bool)
    scored_pub = run.published & run.scored
    pe, re = run.pos_err[scored_pub], run.rot_err[scored_pub]
    loc_pub = scored_pub & localized
    wrong = loc_pub & ((run.pos_err > false_m) | (run.rot_err > false_deg))
    kinds = run.kind_frames()
    return {
        'frames': n, 'scored': int(run.scored.sum()),
        'answered': _share(int(answered.sum()), n),
        'availability': _share(int(localized.sum()), n),
        'states': {s: sum(1 for v in run.states if v == s) for s in STATES}
        | {'missing': sum(1 for v in run.states if v is None)},
        'sources': {s: sum(1 for v in run.sources if v == s) for s in SOURCES},
        'published': int(run.published.sum()), 'published_scored': int(scored_pub.sum()),
        'position_m': _median(pe), 'orientation_deg': _median(re),
        'within': _share(int(((pe <= good_m) & (re <= good_deg)).sum()), pe.size),
        'beyond': _share(int((pe > far_m).sum()), pe.size),
        'false_localizations': int(wrong.sum()),
        'false_share': _share(int(wrong.sum()), int(loc_pub.sum())),
        'localized_published': int(loc_pub.sum()),
        'kinds': {k: _kind_stats(*kinds[k], chi2) for k in KINDS},
        'limits': {'false_m': float(false_m), 'false_deg': float(false_deg),
                   'good_m': float(good_m), 'good_deg': float(good_deg),
                   'far_m': float(far_m), 'chi2': float(chi2)},
    }


def reliability_series(states: Sequence, sources: Sequence, publish: Sequence[bool],
                       pos_n3: np.ndarray, quat_n4: np.ndarray, cov_n66: np.ndarray,
                       gt_pos_n3: np.ndarray, gt_quat_n4: np.ndarray,
                       net_pos_n3: np.ndarray | None = None,
                       net_quat_n4: np.ndarray | None = None,
                       net_cov_n66: np.ndarray | None = None) -> dict:
    """Kind -> (claimed sigma (m), position error (m)) per scored frame, for the plot.

    The same frames and kinds as :func:`localization_metrics`'s ``kinds``; kinds without a
    frame are left out, so the reliability plot draws only what the run had.
    """
    run = _Run(states, sources, publish, pos_n3, quat_n4, cov_n66, gt_pos_n3, gt_quat_n4,
               net_pos_n3, net_quat_n4, net_cov_n66)
    out = {}
    for kind, (err_k3, cov_k66) in run.kind_frames().items():
        if len(err_k3):
            out[kind] = (position_sigma(cov_k66), np.linalg.norm(err_k3, axis=1))
    return out


# ----------------------------------------------------------------------------- table

def _pct(value: float | None) -> str:
    return '-' if value is None else f'{100.0 * value:.1f}%'


def _num(value: float | None, digits: int) -> str:
    return '-' if value is None or not math.isfinite(value) else f'{value:.{digits}f}'


def format_localization_table(rows: Mapping[str, dict]) -> str:
    """Markdown table, one row per run or method of :func:`localization_metrics` results.

    Columns: frames, answered, available (localized), median position (m) and orientation
    (deg) of the published poses, share within 5 cm / 5 deg and beyond 25 cm (of the
    published), false localizations (count and share of localized published), and the
    ellipsoid coverage per kind of pose (share inside the 95 % ellipsoid; frames in
    brackets; ``-`` where the run had none of that kind). Limits in the titles come from the
    first row, so a table never mislabels a column.
    """
    if not rows:
        raise ValueError('format_localization_table: no rows; expected at least one run')
    lim = next(iter(rows.values()))['limits']
    good = f'{lim["good_m"] * 100:g}cm/{lim["good_deg"]:g}deg'
    header = ['name', 'frames', 'answered', 'available', 'median pos (m)', 'median rot (deg)',
              good, f'> {lim["far_m"] * 100:g}cm',
              f'false >{lim["false_m"] * 100:g}cm/{lim["false_deg"]:g}deg']
    header += [f'95% ell. {k}' for k in KINDS]
    lines = []
    for name, m in rows.items():
        false = f'{m["false_localizations"]} ({_pct(m["false_share"])})'
        cells = [str(name), str(m['frames']), _pct(m['answered']), _pct(m['availability']),
                 _num(m['position_m'], 3), _num(m['orientation_deg'], 2), _pct(m['within']),
                 _pct(m['beyond']), false]
        for k in KINDS:
            s = m['kinds'][k]
            cells.append('-' if s['coverage'] is None
                         else f'{_pct(s["coverage"])} ({s["usable_covariance"]})')
        lines.append(cells)
    return markdown_table(header, lines)
