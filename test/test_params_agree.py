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

"""One set of parameter names: the node's table == config/localizer.yaml == the launch file.

The launch file is read statically (ast) and also imported with the real launch/launch_ros
(vendored upstream source, installed by `make setup`; a robot's own distribution): its
LaunchDescription declares the same arguments, and its node gets the parameters, remappings and
log level the arguments ask for.
"""

import ast
from pathlib import Path
import re

import pytest
from support import allocate_domain, ros_environment
import yaml

from camreloc_ros.ros.localizer_node import LocalizerNode
from camreloc_ros.ros.parameters import PARAMETERS

DOMAIN_ID = allocate_domain()
ROOT = Path(__file__).resolve().parent.parent
YAML_FILE = ROOT / 'config' / 'localizer.yaml'
LAUNCH_FILE = ROOT / 'launch' / 'localizer.launch.py'
AUTO_DECLARED = {'use_sim_time', 'start_type_description_service'}   # declared by rclpy


def flatten(tree: dict, prefix: str = '') -> dict:
    """Nested YAML mappings -> ROS dotted parameter names."""
    out = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            out.update(flatten(value, name + '.'))
        else:
            out[name] = value
    return out


def yaml_parameters() -> dict:
    """The parameters in config/localizer.yaml."""
    doc = yaml.safe_load(YAML_FILE.read_text())
    assert list(doc) == ['/**'], 'one section for the node, under any namespace'
    return flatten(doc['/**']['ros__parameters'])


def launch_arguments() -> tuple[list[str], tuple[str, ...]]:
    """DeclareLaunchArgument names and NON_PARAMETER_ARGUMENTS, read without importing."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    names, non_params = [], ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == \
                'DeclareLaunchArgument':
            names.append(ast.literal_eval(node.args[0]))
        if isinstance(node, ast.Assign) and \
                getattr(node.targets[0], 'id', None) == 'NON_PARAMETER_ARGUMENTS':
            non_params = ast.literal_eval(node.value)
    return names, non_params


def test_yaml_equals_table():
    """Every table parameter is in the YAML with its default value and type, and no other."""
    table = {p.name: p.default for p in PARAMETERS}
    from_yaml = yaml_parameters()
    assert set(from_yaml) == set(table)
    for name, default in table.items():
        assert from_yaml[name] == default, name
        assert type(from_yaml[name]) is type(default), f'{name}: YAML type differs'


def test_launch_arguments_map_to_parameters():
    """Launch arguments are parameters of the node (same names) or declared as not."""
    names, non_params = launch_arguments()
    assert {'params_file', 'model', 'image_topic', 'input', 'namespace', 'use_sim_time',
            'autostart', 'log_level', 'camera_info_topic', 'map'} == set(names)
    table = {p.name for p in PARAMETERS}
    assert set(non_params) <= set(names)
    assert set(names) - set(non_params) <= table | AUTO_DECLARED


@pytest.fixture
def isolated(tmp_path):
    """A private domain, localhost discovery, logs in a temp dir."""
    with ros_environment(DOMAIN_ID, tmp_path / 'ros_log'):
        yield


def test_node_declares_the_table_and_loads_the_yaml(isolated, tmp_path):
    """The live node declares exactly the table; the YAML (then a second file) loads into it."""
    import rclpy

    changed = {'autostart': False, 'device': 'cpu', 'qos': {'depth': 3},
               'gate': {'max_speed': 2.5}}
    second = tmp_path / 'second.yaml'
    second.write_text(yaml.safe_dump({'/**': {'ros__parameters': changed}}))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID,
               args=['camreloc', '--ros-args', '--params-file', str(YAML_FILE),
                     '--params-file', str(second)])
    try:
        node = LocalizerNode(context=context, namespace='some/where')
        try:
            declared = set(node._parameters) - AUTO_DECLARED
            assert declared == {p.name for p in PARAMETERS}
            expected = dict(yaml_parameters(), **flatten(changed))
            for name in declared:
                assert node.get_parameter(name).value == expected[name], name
            descriptors = node.describe_parameters(sorted(declared))
            assert all(d.description for d in descriptors)
            assert node.describe_parameters(['autostart'])[0].read_only
            assert node.describe_parameters(['qos.depth'])[0].integer_range[0].from_value == 1
            assert not node.is_active
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()


def load_launch_module():
    """Import launch/localizer.launch.py (needs launch and launch_ros)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location('localizer_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_description_declares_the_static_arguments():
    """The LaunchDescription declares the same arguments as the static read."""
    module = load_launch_module()
    description = module.generate_launch_description()
    declared = [a.name for a in description.get_launch_arguments()]
    assert sorted(declared) == sorted(launch_arguments()[0])
    assert Path(module.default_params_file()).name == 'localizer.yaml'


def _launched_node(module, **arguments):
    """The Node that launch_setup builds from the defaults plus ``arguments``, and its cmd."""
    from launch import LaunchContext
    from launch.utilities import perform_substitutions

    description = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update(
        {a.name: perform_substitutions(context, a.default_value)
         for a in description.get_launch_arguments()})
    context.launch_configurations.update(arguments)
    (node,) = module.launch_setup(context)
    # what Node.execute does before starting the process, less the ament index look-up of the
    # executable (cmd[0]): the package need not be installed for this test
    node._perform_substitutions(context)
    context.extend_locals({'ros_specific_arguments': {
        'name': '__node:=camreloc', 'ns': f'__ns:={node.expanded_node_namespace}'}})
    return node, [perform_substitutions(context, part) for part in node.cmd[1:]]


def _parameter_files(cmd: list[str]) -> list[dict]:
    """The ``--params-file`` arguments of a node command line, loaded."""
    return [yaml.safe_load(Path(cmd[i + 1]).read_text())
            for i, arg in enumerate(cmd) if arg == '--params-file']


def test_launch_arguments_reach_the_node():
    """Given arguments become parameters, remappings and --log-level; others keep the file."""
    module = load_launch_module()
    node, cmd = _launched_node(module, model='m.pt', autostart='False', input='compressed',
                               image_topic='/cam/image_raw/', log_level='WARN',
                               namespace='robot1', use_sim_time='true')
    assert node.expanded_node_namespace == '/robot1'
    assert node.expanded_remapping_rules == [('image', '/cam/image_raw'),
                                             ('image/compressed', '/cam/image_raw/compressed'),
                                             ('camera_info', '/cam/camera_info')]
    at = cmd.index('--log-level')
    assert cmd[at + 1] == 'warn'
    from_file, overrides = _parameter_files(cmd)
    assert from_file == yaml.safe_load(YAML_FILE.read_text())
    assert overrides == {'/robot1/camreloc': {'ros__parameters': {
        'use_sim_time': True, 'model': 'm.pt', 'autostart': False, 'input': 'compressed'}}}

    node, cmd = _launched_node(module)
    assert node.expanded_remapping_rules == [('image', 'image'),
                                             ('image/compressed', 'image/compressed'),
                                             ('camera_info', 'camera_info')]
    node, _ = _launched_node(module, image_topic='/cam/image_raw',
                             camera_info_topic='/calib/info')
    assert node.expanded_remapping_rules[-1] == ('camera_info', '/calib/info')
    assert cmd[cmd.index('--log-level') + 1] == 'info'
    overrides = _parameter_files(cmd)[1]
    assert overrides == {'/camreloc': {'ros__parameters': {'use_sim_time': False}}}, \
        'model, autostart and input must keep the params_file values when not given'


@pytest.mark.parametrize('arguments, message', [
    ({'image_topic': ''}, 'launch argument image_topic is empty'),
    ({'image_topic': '/'}, 'launch argument image_topic is empty'),
    ({'autostart': 'yes'}, "autostart:='yes' is not valid: expected one of true, false"),
    ({'input': 'jpeg'}, "input:='jpeg' is not valid: expected one of raw, compressed"),
    ({'log_level': 'trace'}, "log_level:='trace' is not valid: expected one of debug, info"),
    ({'use_sim_time': '1'}, "use_sim_time:='1' is not valid"),
])
def test_launch_refuses_bad_arguments(arguments, message):
    """A bad launch argument is refused with its name, before any node is made."""
    module = load_launch_module()
    with pytest.raises(ValueError, match=re.escape(message)):
        _launched_node(module, **arguments)


def test_docs_list_every_parameter():
    """docs/live_node.md has a table row for every parameter."""
    text = (ROOT / 'docs' / 'live_node.md').read_text()
    missing = [p.name for p in PARAMETERS if f'| `{p.name}` |' not in text]
    assert not missing, f'parameters missing from docs/live_node.md: {missing}'


def test_rviz_config_shows_the_outputs():
    """The RViz layout shows TF, pose, covariance, path and image on the node's topics."""
    conf = yaml.safe_load((ROOT / 'config' / 'camreloc.rviz').read_text())
    manager = conf['Visualization Manager']
    topics = {d['Class'].split('/')[-1]: d.get('Topic', {}).get('Value')
              for d in manager['Displays']}
    assert topics['TF'] is None
    assert topics['Pose'] == '/pose'
    assert topics['PoseWithCovariance'] == '/pose_with_covariance'
    assert topics['Path'] == '/path'
    assert topics['Image'] == '/image'
    defaults = {p.name: p.default for p in PARAMETERS}
    assert manager['Global Options']['Fixed Frame'] == defaults['map_frame']


def test_fastdds_profile_is_a_default_participant_profile():
    """The Fast DDS XML parses, is the default profile and defines the transports it uses."""
    from xml.etree import ElementTree

    ns = {'dds': 'http://www.eprosima.com'}
    root = ElementTree.parse(ROOT / 'config' / 'fastdds_large_images.xml').getroot()
    defined = {d.findtext('dds:transport_id', namespaces=ns): d
               for d in root.iterfind('.//dds:transport_descriptor', ns)}
    participant = root.find('.//dds:participant', ns)
    assert participant.get('is_default_profile') == 'true'
    used = [t.text for t in participant.iterfind('.//dds:userTransports/dds:transport_id', ns)]
    assert used and set(used) <= set(defined)
    assert participant.findtext('.//dds:useBuiltinTransports', namespaces=ns) == 'false'
    shm = [d for d in defined.values() if d.findtext('dds:type', namespaces=ns) == 'SHM']
    assert int(shm[0].findtext('dds:segment_size', namespaces=ns)) >= 16 * 1024 * 1024
