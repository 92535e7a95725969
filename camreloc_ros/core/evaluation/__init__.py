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

"""Evaluation: pose errors, their statistics, result files, baselines and plots.

Owns: :mod:`metrics` (median / mean / max / std of position and orientation errors, result
files), :mod:`plots` (top-down trajectory, error CDFs of several methods on one figure),
:mod:`baselines` (retrieval top-1 and the oracle nearest training pose that every accuracy
table shows next to the method), :mod:`map_eval` (network vs retrieval vs refined on a
localization map: the ``--map`` table of evaluate and bag-eval, the map's pairing check, and
the node's localization state machine run over the frames), :mod:`localization_metrics`
(answered, availability, false localizations, covariance ellipsoid coverage per kind of pose,
their table; shared with ``benchmarks/live_map.py``).

May import: ``data``, ``localization`` (retrieval for the baseline), ``geometry``, ``config``,
``io``. Never ``training`` or ``inference``.
"""
