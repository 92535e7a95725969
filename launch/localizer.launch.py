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

``model`` and ``use_sim_time`` are node parameters (the same names as in
config/localizer.yaml); ``model`` overrides the file only when given, so a model set in a
custom ``params_file`` is kept.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'camreloc_ros'
# launch arguments that are not node parameters (test/test_params_agree.py reads this file)
NON_PARAMETER_ARGUMENTS = ('params_file', 'image_topic', 'namespace')


def default_params_file() -> str:
    """Return the installed config/localizer.yaml, or the source tree's when not installed."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return str(Path(get_package_share_directory(PACKAGE)) / 'config' / 'localizer.yaml')
    except (ImportError, LookupError):
        return str(Path(__file__).resolve().parent.parent / 'config' / 'localizer.yaml')


def launch_setup(context, *args, **kwargs) -> list:
    """Build the node once the arguments are known (``model`` is only set when given)."""
    model = LaunchConfiguration('model').perform(context)
    image_topic = LaunchConfiguration('image_topic').perform(context).rstrip('/')
    parameters = [LaunchConfiguration('params_file'),
                  {'use_sim_time': LaunchConfiguration('use_sim_time')}]
    if model:
        parameters.append({'model': model})
    return [Node(
        package=PACKAGE,
        executable='localizer',
        name='camreloc',
        namespace=LaunchConfiguration('namespace'),
        parameters=parameters,
        remappings=[('image', image_topic), ('image/compressed', image_topic + '/compressed')],
        output='screen',
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    """Arguments: params_file, model, image_topic, namespace, use_sim_time."""
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=default_params_file(),
                              description='YAML with the node parameters'),
        DeclareLaunchArgument('model', default_value='',
                              description='checkpoint file; empty keeps the params_file value'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='camera image topic (its /compressed for JPEG input)'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its topics'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (bag replay)'),
        OpaqueFunction(function=launch_setup),
    ])
