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

"""Inference: a checkpoint or an ONNX model turned into poses, frame by frame.

Owns: :mod:`engine` (preprocessing, the temporal window, one pose per frame), :mod:`runtimes`
(torch and ONNX Runtime backends, precisions), :mod:`onnx_format` (export, metadata, the export
cache), :mod:`live` (pose gate, live counters, the latest-frame hand-over the node uses).

May import: ``data``, ``models`` (checkpoints and their config), ``robot``, ``geometry``,
``config``, ``io``. Never ``training`` (the node has no trainer), ``localization`` or
``bags``.
"""
