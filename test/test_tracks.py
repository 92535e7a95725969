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

"""Point tracks of the compact map: representative descriptors and depth-track merging."""

import numpy as np
import pytest

from camreloc_ros.core.localization.sift import root_sift
from camreloc_ros.core.localization.tracks import (dequantize_root, merge_depth_tracks,
                                                   observations, quantize_root,
                                                   representative_descriptors)


def _sift(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 120, (n, 128)).astype(np.uint8)


def test_quantized_root_sift_keeps_the_matching_geometry():
    rng = np.random.default_rng(0)
    root = root_sift(_sift(rng, 200))
    back = dequantize_root(quantize_root(root))
    assert np.allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-5)
    # nearest neighbours (what matching uses) survive the uint8 round trip
    assert np.array_equal(np.argmax(back @ root.T, axis=1), np.arange(200))
    assert np.abs(back - root).max() < 1.5 / 512


def test_representative_descriptors_mean_and_medoid():
    rng = np.random.default_rng(1)
    desc = _sift(rng, 7)
    obs_point = np.array([0, 0, 0, 1, 2, 2, 2])
    mean = dequantize_root(representative_descriptors(obs_point, desc, 3, 'mean'))
    r = root_sift(desc)
    expected = r[:3].sum(0) / np.linalg.norm(r[:3].sum(0))
    assert np.abs(mean[0] - expected).max() < 2 / 512
    assert np.abs(mean[1] - r[3]).max() < 2 / 512          # one view: its own descriptor
    # the medoid is a real observation: the one most similar to the point's sum
    medoid = dequantize_root(representative_descriptors(obs_point, desc, 3, 'medoid',
                                                        chunk=2))
    total = r[4:7].sum(0)
    best = 4 + int(np.argmax(r[4:7] @ total))
    assert np.abs(medoid[2] - r[best]).max() < 2 / 512
    with pytest.raises(ValueError, match='unknown representative descriptor'):
        representative_descriptors(obs_point, desc, 3, 'median')


def test_depth_observations_of_one_surface_merge_into_one_point():
    """Two cameras see 50 points; their lifted copies merge only where they agree."""
    rng = np.random.default_rng(2)
    world = rng.uniform([-1, -1, 2], [1, 1, 3], (50, 3))
    desc = _sift(rng, 50)
    poses = np.stack([np.eye(4), np.eye(4)])
    poses[1, 0, 3] = 0.1
    # image 1's copies: 5 mm of depth noise, except 10 points lifted 20 cm off (an edge)
    noisy = world + rng.normal(0, 0.003, world.shape)
    noisy[:10] += [0.0, 0.0, 0.2]
    points = np.concatenate([world, noisy])
    kps = [rng.uniform(0, 640, (50, 2)).astype(np.float32) for _ in range(2)]
    per_image = [(np.arange(50), np.arange(50)), (np.arange(50), 50 + np.arange(50))]
    conf = {'ratio': 0.8, 'merge_m': 0.02, 'merge_rel': 0.01, 'min_track': 1}
    out, merged, stats = merge_depth_tracks(kps, [desc, desc], per_image, points, poses,
                                            np.array([[0, 1]]), conf)
    assert stats['tracks'] == len(merged) == 40 + 2 * 10
    assert stats['mean_track_length'] == pytest.approx((40 * 2 + 20) / 60)
    # the merged 40 are seen by both images and sit between their two copies
    seen = np.bincount(np.concatenate([pid for _, pid in out]), minlength=len(merged))
    assert (seen == 2).sum() == 40 and (seen == 1).sum() == 20
    both = out[0][1][10:]
    assert np.abs(merged[both] - world[10:]).max() < 0.02
    # min_track 2 drops the points only one image saw
    conf['min_track'] = 2
    out2, merged2, stats2 = merge_depth_tracks(kps, [desc, desc], per_image, points, poses,
                                               np.array([[0, 1]]), conf)
    assert len(merged2) == 40 and stats2['dropped_single_view'] == 20
    offsets, obs_point, obs_xy = observations(out2, kps)
    assert list(offsets) == [0, 40, 80] and obs_point.dtype == np.int32
    assert np.array_equal(obs_xy[:40], kps[0][out2[0][0]])
