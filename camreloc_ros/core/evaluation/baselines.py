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

"""The bar every pose network must clear: image retrieval over its own training images.

Sattler et al. (CVPR 2019) showed that absolute pose regressors are often no more accurate
than returning the pose of the most similar training image. Every evaluation therefore
scores, beside the network: **retrieval top-1** (the training pose of the image whose global
descriptor, :class:`~camreloc_ros.core.localization.retrieval.GlobalDescriptor` of the
checkpoint's own trunk, is most similar) and the **oracle** (the training pose nearest to
the ground truth in metres + degrees / 10: the best any retrieval could do by that measure;
its median position alone can exceed retrieval's), and says whether the network beats
retrieval. Used by ``camreloc evaluate`` (with or without ``--map``) and ``bag-eval --map``.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from camreloc_ros.core.evaluation.metrics import pose_errors, summarize
from camreloc_ros.core.geometry import matrix_to_quat

NETWORK_ROW = 'network (APR)'
RETRIEVAL_ROW = 'retrieval top-1'
ORACLE_ROW = 'oracle: nearest training pose'


def _row(pos: np.ndarray, quat: np.ndarray, gt_pos: np.ndarray, gt_quat: np.ndarray) -> dict:
    return summarize(*pose_errors(pos, quat, gt_pos, gt_quat))


def oracle_indices(train_poses_c2w: np.ndarray, gt_pos: np.ndarray,
                   gt_quat: np.ndarray) -> list[int]:
    """Index of the training pose nearest to each ground truth (metres + degrees / 10)."""
    from camreloc_ros.core.localization.refiner import pose_neighbours

    return [int(pose_neighbours(train_poses_c2w, p, q, 1)[0]) for p, q in zip(gt_pos, gt_quat)]


def retrieval_top1(describe: Callable, train_desc: np.ndarray,
                   images: Iterable[np.ndarray]) -> list[int]:
    """Index of the most similar training image (descriptor dot product) for each image."""
    return [int(np.argmax(train_desc @ describe(image))) for image in images]


def comparison_rows(net_pos: np.ndarray, net_quat: np.ndarray, gt_pos: np.ndarray,
                    gt_quat: np.ndarray, train_poses_c2w: np.ndarray, top1: list[int],
                    network_row: str = NETWORK_ROW) -> dict:
    """Rows network, retrieval top-1 and oracle (:func:`summarize` each), in that order."""
    poses = np.asarray(train_poses_c2w, np.float64)
    quats = matrix_to_quat(poses[:, :3, :3])
    top1 = np.asarray(top1, int)
    oracle = np.asarray(oracle_indices(poses, gt_pos, gt_quat), int)
    return {
        network_row: _row(net_pos, net_quat, gt_pos, gt_quat),
        RETRIEVAL_ROW: _row(poses[top1, :3, 3], quats[top1], gt_pos, gt_quat),
        ORACLE_ROW: _row(poses[oracle, :3, 3], quats[oracle], gt_pos, gt_quat),
    }


def verdict(rows: dict, network_row: str = NETWORK_ROW) -> tuple[bool, str]:
    """Whether the network beats retrieval top-1 (both medians lower), and the sentence."""
    net, ret = rows[network_row], rows[RETRIEVAL_ROW]
    beats = (net['position_m']['median'] < ret['position_m']['median']
             and net['orientation_deg']['median'] < ret['orientation_deg']['median'])
    return beats, (f'network beats retrieval: {"yes" if beats else "no"} (median '
                   f'{net["position_m"]["median"]:.3f} m / '
                   f'{net["orientation_deg"]["median"]:.2f} deg vs retrieval top-1 '
                   f'{ret["position_m"]["median"]:.3f} m / '
                   f'{ret["orientation_deg"]["median"]:.2f} deg)')


def baselines_doc(rows: dict, network_row: str = NETWORK_ROW, **extra) -> dict:
    """Return the ``baselines`` entry of an evaluation's results: rows, verdict, ``extra``."""
    beats, text = verdict(rows, network_row)
    return dict({'rows': {k: v for k, v in rows.items() if k != network_row},
                 'network_beats_retrieval': beats, 'verdict': text}, **extra)


def not_shown(reason: str) -> dict:
    """Return the ``baselines`` entry when retrieval cannot be scored: no rows, the reason."""
    return {'rows': {}, 'network_beats_retrieval': None,
            'verdict': f'retrieval baseline not shown: {reason}'}
