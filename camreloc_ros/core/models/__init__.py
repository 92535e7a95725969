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

"""Models: backbones, pose heads and the full pose regression model, with its checkpoints.

Owns: :mod:`backbones` (the trunks and their feature specs), :mod:`heads` (regressor,
temporal and probabilistic heads), :mod:`scr` (the scene-coordinate head, its pixels and its
PnP), :mod:`pose_model` (the model, its schema, checkpoint files),
:mod:`errors` (:class:`CheckpointError`, importable without torch).

May import: ``config``, ``geometry``, ``io`` (and the package version). Never another stage: data,
training, inference and localization all build on the model, never the reverse.
"""
