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

"""The core stays ROS-free, statically and at import time."""

import ast
from pathlib import Path
import subprocess
import sys

CORE = Path(__file__).resolve().parents[1] / 'camreloc_ros' / 'core'
ROS_MODULES = ('rclpy', 'sensor_msgs', 'geometry_msgs', 'tf2_ros', 'tf2_msgs', 'cv_bridge',
               'nav_msgs', 'std_msgs', 'rosidl_runtime_py')


def test_core_sources_never_import_ros():
    offenders = []
    for path in CORE.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f'{path.name}: {n}' for n in names if n.split('.')[0] in ROS_MODULES]
    assert not offenders, offenders


def test_importing_all_of_core_loads_no_rclpy():
    modules = sorted('camreloc_ros.core.' + '.'.join(p.relative_to(CORE).with_suffix('').parts)
                     for p in CORE.rglob('*.py') if p.name != '__init__.py')
    code = ('import sys, importlib\n'
            f'for m in {modules!r}: importlib.import_module(m)\n'
            f'bad = [m for m in sys.modules if m.split(".")[0] in {ROS_MODULES!r}]\n'
            'print(bad); sys.exit(1 if bad else 0)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(modules) >= 8


def test_no_find_spec_guard_on_the_packages_own_modules():
    """``find_spec('camreloc_ros...')`` is always true inside the package: a dead guard."""
    package = CORE.parent
    offenders = []
    for path in package.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, 'func', None)
            name = getattr(func, 'attr', getattr(func, 'id', None))
            if (isinstance(node, ast.Call) and name == 'find_spec' and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).startswith('camreloc_ros')):
                offenders.append(f'{path.relative_to(package)}:{node.lineno}')
    assert not offenders, offenders
