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


# ----------------------------------------------------------------------------- import graph
#
# The package's own imports, read from the sources (every ``import`` statement, also inside
# functions and ``if TYPE_CHECKING``), as ``{module: {module it imports}}``. The checkers below
# are plain functions of such a graph, each tested on a small graph with a planted violation,
# so none can pass because it looks at nothing.

PACKAGE = CORE.parent
ROOT = PACKAGE.name

# what each core stage may import besides the flat modules (geometry, config, io, ...):
# the same lists as the ``May import:`` line of each stage's ``__init__`` docstring
STAGE_RULES = {
    'data': set(),
    'models': set(),
    'robot': {'data'},
    'bags': {'data', 'robot'},
    'inference': {'data', 'models', 'robot'},
    'localization': {'data', 'models', 'inference', 'robot'},
    'evaluation': {'data', 'localization'},
    'training': {'data', 'models', 'evaluation', 'robot'},
    'sfm': {'data', 'models', 'localization', 'evaluation'},
}
SHARED_TOOLS = {'common', 'cli'}   # what every tool may import
TOOL_RUNNERS = {'demo'}            # runs the other steps' main in order


def _module_names(package: Path) -> dict[str, Path]:
    names = {}
    for path in package.rglob('*.py'):
        parts = path.relative_to(package.parent).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        names['.'.join(parts)] = path
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: {package module it imports}}`` from every import statement in the sources."""
    modules = _module_names(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == '__init__.py'
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:   # relative: from the module's package upwards
                    anchor = name.split('.')[:len(name.split('.')) - node.level + is_package]
                    base = '.'.join(anchor + ([base] if base else []))
                # ``from pkg import mod`` imports pkg.mod; ``from mod import name`` imports mod
                targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base
                           for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _tool(module: str) -> str | None:
    parts = module.split('.')
    return parts[2] if len(parts) == 3 and parts[:2] == [ROOT, 'tools'] else None


def tool_to_tool_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Tools importing another tool other than the shared ones (the demo runner aside)."""
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if _tool(a) and _tool(b) and _tool(b) not in SHARED_TOOLS
                  and _tool(a) not in TOOL_RUNNERS)


def mutual_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Pairs of modules that import each other."""
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if a < b and a in graph.get(b, ()))


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def core_stage(module: str, stages=STAGE_RULES) -> str | None:
    """The core stage of ``module``: a sub-package name, ``'flat'`` or None (not the core)."""
    parts = module.split('.')
    if parts[:2] != [ROOT, 'core']:
        return None
    return parts[2] if len(parts) > 2 and parts[2] in stages else 'flat'


def stage_violations(graph: dict[str, set[str]], rules: dict = STAGE_RULES
                     ) -> list[tuple[str, str]]:
    """Core imports the stage table does not allow (the root package's version aside).

    A stage may import itself, the flat modules and the stages its rule names; a flat
    module only other flat modules; the core never ``ros`` or ``tools``.
    """
    bad = []
    for a, targets in graph.items():
        sa = core_stage(a, rules)
        if sa is None:
            continue
        for b in targets:
            sb = core_stage(b, rules)
            if b == ROOT or sb == sa or sb == 'flat':
                continue
            if sb is None or sa == 'flat' or sb not in rules[sa]:
                bad.append((a, b))
    return sorted(bad)


def _stage_docstring_imports(stage: str) -> set[str]:
    """The stages named on the ``May import:`` line of ``core/<stage>/__init__.py``."""
    doc = ast.get_docstring(ast.parse((CORE / stage / '__init__.py').read_text())) or ''
    assert 'May import:' in doc, f'core/{stage}/__init__.py says nothing of what it may import'
    text = doc.split('May import:', 1)[1].split('Never', 1)[0]
    named = set(text.replace('``', '`').split('`')[1::2])
    return named & set(STAGE_RULES)


def test_tools_never_import_tools():
    assert tool_to_tool_imports(import_graph()) == []


def test_no_two_modules_import_each_other_and_no_cycle():
    graph = import_graph()
    assert mutual_imports(graph) == []
    assert import_cycles(graph) == []


def test_core_stages_import_only_what_their_rule_allows():
    assert stage_violations(import_graph()) == []


def test_stage_table_covers_every_stage_and_matches_the_docstrings():
    stages = {p.name for p in CORE.iterdir() if (p / '__init__.py').is_file()}
    assert stages == set(STAGE_RULES)
    for stage, allowed in STAGE_RULES.items():
        assert _stage_docstring_imports(stage) == allowed, stage


def test_the_graph_sees_real_and_lazy_imports():
    graph = import_graph()
    assert sum(map(len, graph.values())) > 200
    assert f'{ROOT}.core.inference.engine' in graph[f'{ROOT}.tools.evaluate']   # top level
    assert f'{ROOT}.tools.train' in graph[f'{ROOT}.tools.demo']     # inside a function
    assert f'{ROOT}.core.bags' in graph[f'{ROOT}.tools.common']     # ``from core import bags``


def test_checkers_find_planted_violations():
    t, c = f'{ROOT}.tools', f'{ROOT}.core'
    graph = {f'{t}.a': {f'{t}.b', f'{t}.common', f'{c}.models.x'}, f'{t}.b': {f'{t}.cli'},
             f'{t}.demo': {f'{t}.a'}, f'{t}.common': set(), f'{t}.cli': set()}
    assert tool_to_tool_imports(graph) == [(f'{t}.a', f'{t}.b')]
    assert mutual_imports(graph) == [] and import_cycles(graph) == []

    ring = {'p.a': {'p.b'}, 'p.b': {'p.c'}, 'p.c': {'p.a'}, 'p.d': {'p.a'}}
    assert import_cycles(ring) == [['p.a', 'p.b', 'p.c']] and mutual_imports(ring) == []
    pair = {'p.a': {'p.b'}, 'p.b': {'p.a'}}
    assert mutual_imports(pair) == [('p.a', 'p.b')] and import_cycles(pair) == [['p.a', 'p.b']]

    stages = {f'{c}.models.m': {f'{c}.localization.l', f'{c}.geometry', ROOT},
              f'{c}.localization.l': {f'{c}.models.m', f'{c}.inference.i'},
              f'{c}.inference.i': {f'{c}.bags.b', f'{ROOT}.ros.node'},
              f'{c}.geometry': {f'{c}.io', f'{c}.data.d'}, f'{c}.training.t': {f'{t}.a'}}
    assert stage_violations(stages) == sorted([
        (f'{c}.models.m', f'{c}.localization.l'), (f'{c}.inference.i', f'{c}.bags.b'),
        (f'{c}.inference.i', f'{ROOT}.ros.node'), (f'{c}.geometry', f'{c}.data.d'),
        (f'{c}.training.t', f'{t}.a')])


def test_graph_reads_relative_and_package_imports(tmp_path):
    pkg = tmp_path / ROOT
    (pkg / 'tools').mkdir(parents=True)
    for name, text in {'__init__.py': '', 'tools/__init__.py': '',
                       'tools/a.py': 'def f():\n    from . import b\n',
                       'tools/b.py': 'from camreloc_ros.tools import a as alias\n'}.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph[f'{ROOT}.tools.a'] == {f'{ROOT}.tools.b'}
    assert graph[f'{ROOT}.tools.b'] == {f'{ROOT}.tools.a'}
    assert tool_to_tool_imports(graph) == [(f'{ROOT}.tools.a', f'{ROOT}.tools.b'),
                                           (f'{ROOT}.tools.b', f'{ROOT}.tools.a')]


# ----------------------------------------------------------------------------- ROS-free tests
#
# A test file that imports rclpy, a message package or the ROS test harness at module level
# needs a ROS install just to be collected. The tests that need none of it live in files that
# import none of it (test_faults_core.py, test_package_files.py, ...), so that they run where
# only the core is installed; this list names the files allowed to import ROS at module level.

TEST_DIR = Path(__file__).resolve().parent
SUPPORT_ROS = 'support.ros'      # the ROS harness: rclpy inside, loaded lazily
ROS_TEST_FILES = {
    'test_bag_live.py', 'test_conversions.py', 'test_domain.py', 'test_faults.py',
    'test_first_run.py', 'test_install.py', 'test_localizer_node.py', 'test_node_robot.py',
    'test_node_tf.py',
    'test_params_agree.py', 'test_refine_live.py', 'test_refiner_intrinsics.py',
    'test_runtimes.py', 'test_tf2_msgs_build.py',
}
ROS_FREE_BY_DESIGN = {'test_faults_core.py', 'test_package_files.py'}


def _is_ros_module(name: str) -> bool:
    """A ROS client library, message/service package or launch package (by its top name)."""
    top = name.split('.')[0]
    return (top in ROS_MODULES or top.startswith(('rcl', 'rosidl', 'launch', 'ament'))
            or top.endswith(('_msgs', '_srvs', '_interfaces')))


def _module_level_imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """``(module, [names imported from it])`` run when ``path`` is imported (not in a def)."""
    out = []

    def visit(body: list) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                out.extend((a.name, []) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    parts = name.split('.')
                    keep = len(parts) - node.level + (path.name == '__init__.py')
                    base = '.'.join(parts[:keep] + ([base] if base else []))
                out.append((base, [a.name for a in node.names]))
            elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for field in ('body', 'orelse', 'finalbody', 'handlers'):
                    visit(getattr(node, field, []) or [])

    visit(ast.parse(path.read_text()).body)
    return out


def ros_at_import(path: Path, name: str, modules: dict[str, Path],
                  seen: dict[str, str | None] | None = None) -> str | None:
    """The chain by which importing ``path`` loads ROS (``a -> b -> rclpy``), else None.

    Follows the module-level imports through ``modules`` (the package's and test/support's
    sources), including the ``__init__`` of every parent package, which Python runs first.
    ``from support import X`` counts as ROS when ``X`` comes from the ROS harness.
    """
    seen = {} if seen is None else seen
    if name in seen:
        return seen[name]
    seen[name] = None               # a cycle is not a ROS import
    harness = set()
    if 'support' in modules:
        harness = {n for base, names in _module_level_imports(modules['support'], 'support')
                   if base == SUPPORT_ROS for n in names}
    for base, names in _module_level_imports(path, name):
        if _is_ros_module(base) or base == SUPPORT_ROS:
            seen[name] = f'{name} -> {base}'
            return seen[name]
        if base == 'support':
            ros_names = sorted(set(names) & harness)
            if ros_names:
                seen[name] = f'{name} -> support.{ros_names[0]} ({SUPPORT_ROS})'
                return seen[name]
            targets = [f'support.{n}' for n in names if f'support.{n}' in modules]
        else:
            parts = base.split('.')
            targets = ['.'.join(parts[:k]) for k in range(1, len(parts) + 1)]
            targets += [f'{base}.{n}' for n in names]
        for target in targets:
            if target in modules and target != name and target != 'support':
                chain = ros_at_import(modules[target], target, modules, seen)
                if chain:
                    seen[name] = f'{name} -> {chain}'
                    return seen[name]
    return None


def _source_modules(*packages: Path) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in packages:
        modules.update(_module_names(package))
    return modules


def ros_test_files(test_dir: Path = TEST_DIR, package: Path = PACKAGE) -> dict[str, str]:
    """``{test file: how it loads ROS}`` for the test files that load ROS when imported."""
    modules = _source_modules(package, test_dir / 'support')
    found = {}
    for path in sorted(test_dir.glob('test_*.py')):
        chain = ros_at_import(path, path.stem, modules)
        if chain:
            found[path.name] = chain
    return found


def test_ros_free_tests_stay_in_files_that_import_no_ros():
    """Only the listed files import ROS at module level; the split files never do."""
    found = ros_test_files()
    unexpected = {f: chain for f, chain in found.items() if f not in ROS_TEST_FILES}
    assert not unexpected, (
        f'these test files import ROS at module level: {unexpected}; put the tests that need '
        'no ROS into a ROS-free file (import ROS inside the test), or list the file in '
        'ROS_TEST_FILES')
    assert not ROS_FREE_BY_DESIGN & set(found), found
    assert all((TEST_DIR / f).is_file() for f in ROS_FREE_BY_DESIGN)
    # the list stays true: a file that no longer needs ROS is taken off it
    stale = sorted(f for f in ROS_TEST_FILES if f not in found)
    assert not stale, f'ROS_TEST_FILES lists files that import no ROS: {stale}'


def test_ros_import_check_finds_planted_imports(tmp_path):
    pkg = tmp_path / ROOT
    (pkg / 'ros').mkdir(parents=True)
    support = tmp_path / 'tests' / 'support'
    support.mkdir(parents=True)
    for path, text in {
            pkg / '__init__.py': '', pkg / 'core.py': 'import numpy\n',
            pkg / 'ros' / '__init__.py': '', pkg / 'ros' / 'node.py': 'import rclpy\n',
            pkg / 'ros' / 'lazy.py': 'def f():\n    import rclpy\n',
            support / '__init__.py': ('from support.data import load\n'
                                      'from support.ros import Harness\n'),
            support / 'data.py': 'import numpy\n', support / 'ros.py': 'import os\n',
            support.parent / 'test_msgs.py': 'from sensor_msgs.msg import Image\n',
            support.parent / 'test_deep.py': f'from {ROOT}.ros import node\n',
            support.parent / 'test_harness.py': 'from support import load, Harness\n',
            support.parent / 'test_guarded.py': ('try:\n    import tf2_msgs\n'
                                                 'except Exception:\n    pass\n'),
            support.parent / 'test_free.py': (f'from {ROOT} import core\n'
                                              f'from {ROOT}.ros import lazy\n'
                                              'from support import load\n'
                                              'def test_x():\n    import rclpy\n'),
    }.items():
        path.write_text(text)
    found = ros_test_files(support.parent, pkg)
    assert found == {
        'test_deep.py': f'test_deep -> {ROOT}.ros.node -> rclpy',
        'test_guarded.py': 'test_guarded -> tf2_msgs',
        'test_harness.py': 'test_harness -> support.Harness (support.ros)',
        'test_msgs.py': 'test_msgs -> sensor_msgs.msg'}
