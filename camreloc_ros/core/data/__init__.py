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

"""Data: posed-image datasets in one in-memory form, their splits and image transforms.

Owns: :mod:`datasets` (the :class:`Frame` / :class:`Dataset` types), :mod:`readers` (one reader
per on-disk layout), :mod:`formats` (``FORMATS`` and ``read_dataset``, the one dispatch),
:mod:`split` (block splits and their defaults, temporal windows), :mod:`transforms`,
:mod:`images` and :mod:`loading` (decoding, preprocessing, batches).

May import: ``geometry``, ``config``, ``io``. Never another stage: every stage reads data.
"""
