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

"""Training: the trainer, its losses, the frozen-trunk feature cache, distributed runs.

Owns: :mod:`trainer` (``default_conf``, the schema, fit / resume, checkpoints), :mod:`losses`
(PoseNet beta, NH, QEH), :mod:`scr` (the scene-coordinate head's reprojection training),
:mod:`feature_cache` (features of the frozen trunk stages, on disk),
:mod:`distributed` (torchrun / DDP), :mod:`search_report` (the hyper-parameter study's
tables and plots).

May import: ``data``, ``models``, ``evaluation``, ``robot``, ``geometry``, ``config``, ``io``.
Never ``inference``, ``localization`` or ``bags``.
"""
