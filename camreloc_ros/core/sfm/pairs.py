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

"""Image pairs to match: neighbours in the sequence, and look-alikes from global descriptors.

Matching every pair costs N² / 2 SIFT matches; a recording's images overlap mostly with their
neighbours in time, so those pairs (``overlap`` on each side) carry the reconstruction.
Revisits (a loop through the same corridor) are what keeps a long walk from drifting, and
only appearance finds them: the ``k`` most similar images by global descriptor (the pose
model's GeM trunk, :mod:`camreloc_ros.core.localization.retrieval`, no vocabulary tree to
download) beyond the sequential window add those pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def sequential_pairs(n: int, overlap: int) -> set[tuple[int, int]]:
    """``(i, j)`` with ``i < j <= i + overlap``: each image with the next ``overlap``."""
    return {(i, j) for i in range(n) for j in range(i + 1, min(n, i + 1 + max(overlap, 0)))}


def retrieval_pairs(descriptors: np.ndarray, k: int, min_gap: int = 0) -> set[tuple[int, int]]:
    """Each image with its ``k`` most similar others at least ``min_gap`` images away.

    ``descriptors`` are unit-norm rows (cosine similarity = dot product). ``min_gap`` skips
    the sequence neighbours that :func:`sequential_pairs` already holds, so the ``k``
    retrieval slots go to revisits.
    """
    desc = np.asarray(descriptors, np.float32)
    n = len(desc)
    if k <= 0 or n < 2:
        return set()
    sim = desc @ desc.T
    idx = np.arange(n)
    sim[np.abs(idx[:, None] - idx[None, :]) < max(min_gap, 1)] = -np.inf
    out = set()
    kk = min(k, n - 1)
    best = np.argsort(-sim, axis=1, kind='stable')[:, :kk]
    for i in range(n):
        for j in best[i]:
            if np.isfinite(sim[i, j]):
                out.add((min(i, int(j)), max(i, int(j))))
    return out


def write_pairs(path: str | Path, names: Sequence[str], pairs: set[tuple[int, int]]) -> Path:
    """Write ``name_i name_j`` lines, the match list pycolmap's imported pairing reads."""
    lines = [f'{names[i]} {names[j]}' for i, j in sorted(pairs)]
    Path(path).write_text('\n'.join(lines) + '\n')
    return Path(path)
