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

"""Localization against a map: the map, its building, matching and the refiner.

Owns: :mod:`map_file` (the versioned ``.npz`` map, never pickled), :mod:`build` (a map from posed
images: SIFT, depth or triangulation), :mod:`tracks` (each point stored once: depth
observations chained into tracks, one descriptor per point), :mod:`sift` (local features and
matching),
:mod:`retrieval` and :mod:`descriptor_onnx` (global descriptors, torch and the map's own ONNX),
:mod:`refiner` (retrieval + 2D-3D matching + PnP), :mod:`correction` (a pose carried to a
later frame by odometry or the network's motion: dead reckoning), :mod:`tracker` (a
refinement's inliers tracked frame to frame by KLT + PnP against their 3D points),
:mod:`state` (the localization state: tracking, gated refinements and dead reckoning decide
what the robot is told, and when it is ``localized``), :mod:`calibration` (covariance scales
measured on held-out map images at build), :mod:`extend` (a new recording registered into a
map's frame by the refiner, its images and points added: ``camreloc map --extend``).

May import: ``data``, ``models`` (the trunk for descriptors), ``inference`` (ONNX checks),
``robot``, ``geometry``, ``config``, ``io``. Never ``training``, ``evaluation`` or ``bags``.
"""
