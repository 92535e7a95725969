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

"""Launch the camreloc localizer with its parameter file.

    ros2 launch camreloc_ros localizer.launch.py model:=/path/model.pt image_topic:=/cam/image

``model``, ``autostart``, ``input`` and ``use_sim_time`` are node parameters (the same names as
in config/localizer.yaml); ``model``, ``autostart`` and ``input`` override the file only when
given, so the values of a custom ``params_file`` are kept. ``log_level`` is the node's
``--ros-args --log-level`` (as in nav2's launch files). Bad values are refused before the node
starts, with the argument named.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from camreloc_ros.ros.qos import NAMESPACE, NODE_NAME

PACKAGE = 'camreloc_ros'
# launch arguments that are not node parameters (test/test_params_agree.py reads this file)
NON_PARAMETER_ARGUMENTS = ('params_file', 'image_topic', 'camera_info_topic', 'namespace',
                           'log_level')
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')
BOOLEANS = {'true': True, 'false': False}


def default_params_file() -> str:
    """Return the installed config/localizer.yaml, or the source tree's when not installed."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return str(Path(get_package_share_directory(PACKAGE)) / 'config' / 'localizer.yaml')
    except (ImportError, LookupError, OSError):   # not installed, or AMENT_PREFIX_PATH unset
        return str(Path(__file__).resolve().parent.parent / 'config' / 'localizer.yaml')


def _choice(context, name: str, choices, allow_empty: bool = False) -> str:
    """Return launch argument ``name`` lower-cased; refuse a value not in ``choices``."""
    value = LaunchConfiguration(name).perform(context).strip()
    if allow_empty and not value:
        return value
    if value.lower() not in choices:
        raise ValueError(f'launch argument {name}:={value!r} is not valid: expected one of '
                         f'{", ".join(choices)}' + (' (or empty: keep the params_file value)'
                                                    if allow_empty else ''))
    return value.lower()


def launch_setup(context, *args, **kwargs) -> list:
    """Build the node once the arguments are known (optional ones only set when given)."""
    image_topic = LaunchConfiguration('image_topic').perform(context).strip().rstrip('/')
    if not image_topic:
        raise ValueError('launch argument image_topic is empty: give the camera image topic, '
                         'e.g. image_topic:=/camera/image_raw (JPEG input: input:=compressed '
                         'subscribes to <image_topic>/compressed)')
    # camera_info: as image_transport pairs them, the image topic's sibling unless given
    parent, slash, _ = image_topic.rpartition('/')
    camera_info = (LaunchConfiguration('camera_info_topic').perform(context).strip()
                   or parent + slash + 'camera_info')
    use_sim_time = _choice(context, 'use_sim_time', tuple(BOOLEANS))
    autostart = _choice(context, 'autostart', tuple(BOOLEANS), allow_empty=True)
    input_kind = _choice(context, 'input', ('raw', 'compressed'), allow_empty=True)
    log_level = _choice(context, 'log_level', LOG_LEVELS)
    model = LaunchConfiguration('model').perform(context).strip()
    map_path = LaunchConfiguration('map').perform(context).strip()

    overrides = {'use_sim_time': BOOLEANS[use_sim_time]}
    if model:
        overrides['model'] = model
    if map_path:
        overrides['map'] = map_path
    if autostart:
        overrides['autostart'] = BOOLEANS[autostart]
    if input_kind:
        overrides['input'] = input_kind
    return [Node(
        package=PACKAGE,
        executable='localizer',
        name=NODE_NAME,
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'), overrides],
        remappings=[('image', image_topic), ('image/compressed', image_topic + '/compressed'),
                    ('camera_info', camera_info)],
        arguments=['--ros-args', '--log-level', log_level],
        output='screen',
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments (see ``ros2 launch camreloc_ros localizer.launch.py -s``)."""
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=default_params_file(),
                              description='YAML with the node parameters'),
        DeclareLaunchArgument('model', default_value='',
                              description='checkpoint file; empty keeps the params_file value'),
        DeclareLaunchArgument('map', default_value='',
                              description='localization map (camreloc map) for centimetre '
                              'poses; empty keeps the params_file value'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='camera image topic (its /compressed for JPEG input)'),
        DeclareLaunchArgument('camera_info_topic', default_value='',
                              description='sensor_msgs/CameraInfo of the camera (training '
                              'camera check); empty: camera_info next to image_topic'),
        DeclareLaunchArgument('input', default_value='',
                              description='raw (Image) or compressed (CompressedImage on '
                              '<image_topic>/compressed); empty keeps the params_file value'),
        DeclareLaunchArgument('namespace', default_value=NAMESPACE,
                              description='namespace of the node and its topics'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (bag replay): true or false'),
        DeclareLaunchArgument('autostart', default_value='',
                              description='true: configure and activate on start; false: wait '
                              'for a lifecycle manager; empty keeps the params_file value'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='node log level: ' + ', '.join(LOG_LEVELS)),
        OpaqueFunction(function=launch_setup),
    ])
