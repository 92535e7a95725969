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

"""Where the localizer sits in the graph and how it talks: its name, namespace and QoS.

One home, so the node, its TF and frame I/O, the parameter table (``qos.reliability``
choices) and the launch file cannot drift apart: a subscriber that a tool or a test builds
with another profile than the node's publisher silently receives nothing.
"""

from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile,
                       QoSReliabilityPolicy)

NODE_NAME = 'camreloc'       # the node's default name (``ros2 run``, the launch file)
NAMESPACE = ''               # the default namespace: the root, or the launch argument's value

# ``qos.reliability`` parameter value -> policy of the image and camera_info subscriptions
RELIABILITY = {'best_effort': QoSReliabilityPolicy.BEST_EFFORT,
               'reliable': QoSReliabilityPolicy.RELIABLE}
RELIABILITY_CHOICES = tuple(RELIABILITY)

# tf2's QoS: /tf reliable keep-last 100 volatile (DynamicBroadcasterQoS / listener);
# /tf_static reliable keep-last 100 transient-local (StaticListenerQoS)
TF_QOS = QoSProfile(depth=100, history=QoSHistoryPolicy.KEEP_LAST,
                    reliability=QoSReliabilityPolicy.RELIABLE,
                    durability=QoSDurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(depth=100, history=QoSHistoryPolicy.KEEP_LAST,
                           reliability=QoSReliabilityPolicy.RELIABLE,
                           durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
# nav2_amcl's amcl_pose: reliable, keep last 1, transient local (a late subscriber gets it)
LATCHED_QOS = QoSProfile(depth=1, history=QoSHistoryPolicy.KEEP_LAST,
                         reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
# poses, path, diagnostics, refined pose and initialpose
OUTPUT_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)


def image_qos(depth: int, reliability: str) -> QoSProfile:
    """Return the image / camera_info subscription profile of the ``qos.*`` parameters.

    Keep-last ``depth`` and volatile: the node wants the newest frame, never a backlog.
    """
    return QoSProfile(depth=depth, history=QoSHistoryPolicy.KEEP_LAST,
                      reliability=RELIABILITY[reliability],
                      durability=QoSDurabilityPolicy.VOLATILE)
