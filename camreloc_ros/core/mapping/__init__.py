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

"""A localization map for the pose network: local features, 3D points and retrieval.

The pose network gives a pose every frame, accurate to what image retrieval gives (Sattler
et al., CVPR 2019). Geometry gives centimetres: a map of SIFT keypoints with 3D points
(from depth, or triangulated from the training images with their known poses) lets a query
be matched 2D-3D and solved by PnP (:mod:`camreloc_ros.core.refine`). Global descriptors
from the pose model's own trunk (GeM-pooled) pick the training images to match against.
"""

from camreloc_ros.core.mapping.features import extract_sift, match_descriptors, SIFT_DEFAULTS
from camreloc_ros.core.mapping.map_file import (file_sha256, frames_fingerprint, load_map,
                                                LocalizationMap, MAP_FORMAT, MAP_VERSION,
                                                MapError, save_map)

__all__ = ['extract_sift', 'match_descriptors', 'SIFT_DEFAULTS', 'file_sha256',
           'frames_fingerprint', 'load_map', 'LocalizationMap', 'MAP_FORMAT', 'MAP_VERSION',
           'MapError', 'save_map', 'GlobalDescriptor']


def __getattr__(name: str):
    """Import :class:`GlobalDescriptor` (torch) on first use, so the map file needs no torch."""
    if name == 'GlobalDescriptor':
        from camreloc_ros.core.mapping.retrieval import GlobalDescriptor
        return GlobalDescriptor
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
