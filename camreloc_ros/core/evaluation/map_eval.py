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

"""The network against retrieval, the oracle and the refined poses, on a localization map.

:func:`evaluate_map` is the ``--map`` table of ``camreloc evaluate``, ``camreloc bag-eval``
and ``camreloc map``'s check: one routine, so the three print the same rows from the same
refiner the live node runs. It also runs the node's localization state machine
(:class:`~camreloc_ros.core.localization.state.Localizer`) over the frames in order and scores
its states (:mod:`localization_metrics`): is a wrong pose ever published as localized, and do
the covariances hold what they claim. :func:`open_map` loads a map and refuses one that was
built for another checkpoint or other training frames, before any work.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
import time
from typing import Callable, Sequence

import numpy as np

from camreloc_ros.core.evaluation.baselines import (comparison_rows, NETWORK_ROW, RETRIEVAL_ROW,
                                                    verdict)
from camreloc_ros.core.evaluation.localization_metrics import (estimate_arrays,
                                                               format_localization_table,
                                                               localization_metrics,
                                                               reliability_series)
from camreloc_ros.core.evaluation.metrics import (format_table, frame_times, pose_errors,
                                                  summarize, write_results)
from camreloc_ros.core.evaluation.plots import plot_reliability
from camreloc_ros.core.geometry import pose_from_matrix
from camreloc_ros.core.io import atomic_write_text
from camreloc_ros.core.localization.map_file import (frames_fingerprint, load_map,
                                                     LocalizationMap)
from camreloc_ros.core.localization.refiner import map_descriptor, model_identity, Refiner
from camreloc_ros.core.localization.state import Localizer

logger = logging.getLogger('camreloc_ros')

REFINED_ROW = 'refined (network where it falls back)'
# Rows of the localization table: the network published blindly, the refiner alone (its pose
# published whenever PnP succeeded), and the node's state machine.
NETWORK_ALWAYS_ROW = 'network, always published'
REFINER_ALONE_ROW = 'refiner alone, published when refined'
LOCALIZER_ROW = 'localizer (state machine, as the node)'


def open_map(map_path, checkpoint, train_frames_: Sequence | None = None,
             data: str = '') -> LocalizationMap:
    """Load a map and check it belongs to ``checkpoint`` (and to these training frames).

    The checkpoint pairs when it is the map's or was trained in its scene frame
    (:meth:`~camreloc_ros.core.localization.map_file.LocalizationMap.check_pairing`).
    """
    lmap = load_map(map_path)
    fp = None
    if train_frames_ is not None:
        fp = frames_fingerprint([f.name for f in train_frames_],
                                [f.pose_c2w for f in train_frames_])
    digest, frame = model_identity(checkpoint)
    lmap.check_pairing(digest, fp, str(checkpoint), str(data), scene_frame=frame)
    return lmap


def _localization_rows(estimates: list, results: list, preds: list, gt_pos: np.ndarray,
                       gt_quat: np.ndarray) -> tuple[dict, dict]:
    """Localization metrics of the three ways to publish, and the localizer's plot series."""
    net = {'net_pos_n3': np.stack([p.position for p in preds]),
           'net_quat_n4': np.stack([p.quaternion for p in preds]),
           'net_cov_n66': np.stack([p.covariance for p in preds])}
    n = len(preds)
    blind = {'states': ['localized'] * n, 'sources': ['network'] * n, 'publish': [True] * n,
             'pos_n3': net['net_pos_n3'], 'quat_n4': net['net_quat_n4'],
             'cov_n66': net['net_cov_n66']}
    ok = [bool(r.refined) for r in results]
    alone = {'states': ['localized' if k else 'not_localized' for k in ok],
             'sources': ['refined' if k else 'network' for k in ok], 'publish': ok,
             'pos_n3': np.stack([r.position for r in results]),
             'quat_n4': np.stack([r.quaternion for r in results]),
             'cov_n66': np.stack([r.covariance for r in results])}
    node = estimate_arrays(estimates)
    truth = {'gt_pos_n3': gt_pos, 'gt_quat_n4': gt_quat, **net}
    rows = {NETWORK_ALWAYS_ROW: localization_metrics(**blind, **truth),
            REFINER_ALONE_ROW: localization_metrics(**alone, **truth),
            LOCALIZER_ROW: localization_metrics(**node, **truth)}
    return rows, reliability_series(**node, **truth)


def evaluate_map(lmap: LocalizationMap, checkpoint, images: Sequence[Callable], names: list,
                 stamps: list, preds: list, gt_pos: np.ndarray, gt_quat: np.ndarray,
                 out: Path, title: str, conf: dict | None = None, info: dict | None = None,
                 log=None, K: np.ndarray | None = None,
                 state_conf: dict | None = None) -> dict:
    """Refine every frame; write the comparison table and the refined row's result files.

    ``images`` are callables returning RGB frames, ``preds`` the network's
    :class:`~camreloc_ros.core.inference.engine.Prediction` per frame. Rows: network (APR),
    retrieval
    top-1 (the Sattler et al. bar), oracle nearest training pose (best possible retrieval)
    and refined (the network's pose where the refiner fell back). Files in ``out``:
    ``map_results.md``, ``map_summary.json``, ``refine_per_frame.txt`` and ``refined/``
    (the usual per-frame file, TUM files and plots of the refined row; its CDF also shows the
    network and retrieval top-1). Returns the summary of ``map_summary.json`` plus ``errors``:
    per-frame (position, orientation) errors of the network, retrieval top-1 and refined rows,
    for the caller's own CDF plot.
    ``K``: the query camera's intrinsics (a bag's CameraInfo); default the map's camera.

    Each frame also goes, in order and right after its refinement, through the node's
    localization state machine (``state_conf``: its overrides), given that refinement: the
    offline evaluation refines every frame synchronously, so the states are those of a node
    in ``refine.sync`` mode. The state machine needs each frame's time in seconds: ``stamps``
    where known, else the frame's position in ``names`` / 30 (the rate the package assumes
    for frames without a time, :data:`~camreloc_ros.core.evaluation.metrics.FALLBACK_FPS`).
    Its state and source per frame are the last two columns of ``refine_per_frame.txt``;
    ``map_results.md`` and ``map_summary.json`` (``localization``) add the localization
    table: the network published blindly, the refiner alone and the state machine, scored
    by :func:`~camreloc_ros.core.evaluation.localization_metrics.localization_metrics`, and
    ``reliability.png`` shows the state machine's claimed sigma against the actual error.
    """
    log = log or logger.info
    refiner = Refiner(lmap, map_descriptor(lmap, checkpoint), conf)   # as the live node
    localizer = Localizer(lmap, conf=state_conf)                      # as the live node
    n = len(names)
    times_s = frame_times(stamps, n)
    net_pos = np.stack([p.position for p in preds])
    net_quat = np.stack([p.quaternion for p in preds])
    results, estimates = [], []
    t0 = time.perf_counter()
    for i, (load, p) in enumerate(zip(images, preds)):
        image = load() if callable(load) else load
        res = refiner.refine(image, p.position, p.quaternion, p.covariance, K=K)
        results.append(res)
        K_i = K if K is not None else refiner.intrinsics_for(image.shape[1], image.shape[0])
        estimates.append(localizer.process(image, float(times_s[i]), K_i, p.position,
                                           p.quaternion, p.covariance, refinement=res))
        if (i + 1) % 25 == 0:
            log(f'  refined {i + 1}/{n} frames ({time.perf_counter() - t0:.0f} s)')
    ok = np.array([r.refined for r in results])
    ref_pos = np.stack([r.position for r in results])
    ref_quat = np.stack([r.quaternion for r in results])
    top1 = [r.retrieval[0] if r.retrieval else 0 for r in results]
    rows = comparison_rows(net_pos, net_quat, gt_pos, gt_quat, lmap.poses_c2w, top1)
    rows[REFINED_ROW] = summarize(
        *pose_errors(ref_pos, ref_quat, gt_pos, gt_quat))
    if ok.any():
        rows['refined, refined frames only'] = summarize(
            *pose_errors(ref_pos[ok], ref_quat[ok], gt_pos[ok], gt_quat[ok]))
    beats, verdict_text = verdict(rows)
    keys = list(results[0].times)
    times = {k: float(np.median([r.times[k] for r in results])) for k in keys}
    shares = {'refined': float(ok.mean()), 'fallback': float(1.0 - ok.mean())}
    table = format_table(rows)
    loc_rows, series = _localization_rows(estimates, results, preds, gt_pos, gt_quat)
    loc_table = format_localization_table(loc_rows)
    node = loc_rows[LOCALIZER_ROW]
    lim = node['limits']
    timing = ', '.join(f'{k} {v * 1000:.0f} ms' for k, v in times.items())
    text = (f'# {title}: network vs retrieval vs refined\n\n{table}\n'
            f'Refined {100 * shares["refined"]:.1f} % of {n} frames, fell back to the network '
            f'on {100 * shares["fallback"]:.1f} %. {verdict_text}.\n\n'
            f'Refiner median time per frame: {timing}.\n\nMap: {lmap.path} '
            f'({lmap.describe()}).\n\n'
            f'## Localization states\n\n{loc_table}\n'
            f'The state machine published {node["published"]} of {n} poses, '
            f'{node["false_localizations"]} of them localized but more than {lim["false_m"]:g} m '
            f'or {lim["false_deg"]:g} deg off (false localizations). Shares of frames: '
            'answered (a pose on pose or ~/network_pose), available (localized); errors and '
            f'the {lim["good_m"] * 100:g}cm/{lim["good_deg"]:g}deg and '
            f'> {lim["far_m"] * 100:g}cm shares are of the published poses; the 95% ellipsoid '
            'columns give the share of position errors inside the claimed covariance (should '
            'be about 95%; frames in brackets). Claimed sigma against the actual error: '
            'reliability.png.\n')
    out = Path(out)
    top1_pos, top1_quat = pose_from_matrix(np.asarray(lmap.poses_c2w, np.float64)[top1])
    errors = {NETWORK_ROW: pose_errors(net_pos, net_quat, gt_pos, gt_quat),
              RETRIEVAL_ROW: pose_errors(top1_pos, top1_quat, gt_pos, gt_quat),
              REFINED_ROW: pose_errors(ref_pos, ref_quat, gt_pos, gt_quat)}
    write_results(out / 'refined', names, stamps, ref_pos, ref_quat, gt_pos, gt_quat,
                  var=np.stack([np.diag(r.covariance) for r in results]),
                  title=f'{title} refined', info=dict(info or {}, map=str(lmap.path)),
                  compare={k: v for k, v in errors.items() if k != REFINED_ROW})
    lines = ['# name refined reason inliers matches retrieval_top1 ' + ' '.join(
        f't_{k}_ms' for k in keys) + ' state source']
    for name, r, t1, est in zip(names, results, top1, estimates):
        lines.append(f'{name} {int(r.refined)} {r.reason.replace(" ", "_")} {r.inliers} '
                     f'{r.matches} {lmap.names[t1]} '
                     + ' '.join(f'{r.times[k] * 1000:.1f}' for k in keys)
                     + f' {est.state} {est.source}')
    atomic_write_text(out / 'refine_per_frame.txt', '\n'.join(lines) + '\n')
    plot_reliability(out / 'reliability.png', series, title)
    summary = {'title': title, 'rows': rows, 'shares': shares, 'network_beats_retrieval': beats,
               'median_seconds': times, 'map': str(lmap.path), 'map_meta': lmap.meta.get('stats'),
               'refiner': refiner.conf, 'info': info or {},
               'localization': {'rows': loc_rows, 'table': loc_table,
                                'states': [est.state for est in estimates],
                                'sources': [est.source for est in estimates],
                                'published': [bool(est.publish) for est in estimates]}}
    atomic_write_text(out / 'map_summary.json', json.dumps(summary, indent=2, default=str) + '\n')
    atomic_write_text(out / 'map_results.md', text)
    summary['errors'] = errors   # after the JSON: arrays for the caller's error_cdf.png
    log(table + f'refined {100 * shares["refined"]:.1f} %, fallback '
        f'{100 * shares["fallback"]:.1f} %; {verdict_text}\nrefiner per frame (median): {timing}'
        f'\nlocalization states:\n{loc_table}'
        f'false localizations {node["false_localizations"]} of {node["published"]} published')
    return summary
