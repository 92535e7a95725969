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

"""What several test modules share: ROS isolation, test data, started processes.

``from support import ...`` (``test/`` is on pytest's path through ``conftest.py``). The domain
allocator itself lives in the package (:mod:`camreloc_ros.ros.domain`), since ``make demo``
and the benchmarks need it at run time; it is re-exported here.
"""

from support.data import DATA_DIR, FlatDescriptor, image_paths, load_frames, make_checkpoints
from support.process import Started, wait_for_file
from support.ros import (allocate_domain, child_env, DOMAIN_POOL, release_domain,
                         ros_environment, ros_harness, RosHarness)

__all__ = ['allocate_domain', 'child_env', 'DATA_DIR', 'DOMAIN_POOL', 'FlatDescriptor',
           'image_paths',
           'load_frames', 'make_checkpoints', 'release_domain', 'ros_environment', 'ros_harness',
           'RosHarness', 'Started', 'wait_for_file']
