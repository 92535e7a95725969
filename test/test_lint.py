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

"""Lint as ament does (flake8 line 99 + single quotes, pep257, copyright, xmllint)."""

from pathlib import Path
import subprocess
import sys
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ['camreloc_ros', 'test', 'benchmarks', 'launch', 'setup.py']


def _python_files():
    for name in SOURCES:
        path = ROOT / name
        yield from ([path] if path.is_file() else sorted(path.rglob('*.py')))


@pytest.mark.slow   # over the whole tree: `make lint` in the edit loop
def test_flake8():
    result = subprocess.run([sys.executable, '-m', 'flake8', *SOURCES], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow   # over the whole tree: `make lint` in the edit loop
def test_pep257():
    result = subprocess.run(
        [sys.executable, '-m', 'pydocstyle', '--add-ignore=D100,D104,D105,D107,D203,D212,D404',
         *[str(p) for p in _python_files() if '/test/' not in str(p)]],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_copyright_headers():
    missing = [str(p.relative_to(ROOT)) for p in _python_files()
               if 'Licensed under the Apache License' not in p.read_text()[:800]]
    assert not missing, missing


def test_xml_files_are_well_formed():
    files = [ROOT / 'package.xml', *sorted((ROOT / 'config').glob('*.xml'))]
    for path in files:
        ElementTree.parse(path)
    root = ElementTree.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    deps = {e.text for e in root.iter('exec_depend')}
    # the full set against the imports: test/test_install.py
    for dep in ('rclpy', 'sensor_msgs', 'geometry_msgs', 'nav_msgs', 'tf2_ros_py', 'tf2_msgs',
                'diagnostic_msgs', 'std_srvs'):
        assert dep in deps, dep
