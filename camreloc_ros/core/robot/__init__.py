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

"""Frame maths for a robot, free of ROS messages: the TF tree, cameras, stamps.

Owns: :mod:`tf_tree` (tf2 semantics without tf2: a buffer of static and dynamic edges, lookups
with interpolation, REP 105 frame maths), :mod:`camera` (the training camera record stored in a
checkpoint, and what a live camera must match), :mod:`messages` (stamps and the field values of
the messages the node and the bag tools write, as plain Python), :mod:`odometry` (a posed
recording's motion turned into odometry that drifts, what a robot records instead of ground
truth).

May import: ``data`` (a dataset's camera for the camera record), ``geometry``, ``config``,
``io`` and numpy. Never a model, torch or another stage.
"""
