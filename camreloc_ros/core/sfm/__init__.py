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

"""Structure from motion: poses and a sparse model of a plain recording, with pycolmap.

Where every other path to a pose needs ground truth first, this stage makes it: SIFT,
image pairs, incremental or global mapping (:mod:`.pipeline`), pairs from the sequence and
from the pose model's own global descriptors (:mod:`.pairs`), metric scale and the map frame
from odometry, depth images or a known distance (:mod:`.scale`), and the result written as a
``posed`` dataset beside its COLMAP model, with a report (:mod:`.output`); the model's points
and tracks as a localization map's observations (:mod:`.map_points`, ``map --reconstruction``).

May import: ``data`` (intrinsics, image and depth files), ``models`` and ``localization``
(the pose model's trunk as the global descriptor for retrieval pairs, only where they are
asked for), ``evaluation`` (the report's table layout), ``geometry``, ``config``, ``io``.
Never ``training``, ``inference`` or ``bags``: a reconstruction takes image files, whatever
recorded them.
"""
