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

"""``bag-eval --live``'s ROS side: play a bag's images to a running localizer, collect its poses.

Only the rclpy part lives here (a private context, the node's ``~/reset``, playing in
lock-step); scoring the poses is the tool's (:mod:`camreloc_ros.tools.bag_eval`), as for its
offline mode, so both modes write the same files.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import logging
import os
import threading
import time
from typing import Iterator

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from camreloc_ros.core.bags import Bag, BagScan
from camreloc_ros.ros.bag_player import BagPlayer, PoseCollector

logger = logging.getLogger('camreloc_ros')


@dataclass
class LiveRun:
    """What a played bag got back: ``poses[stamp_ns] = (position, quaternion)``."""

    poses: dict[int, tuple[np.ndarray, np.ndarray]]
    published: int
    seconds: float
    image_topic: str


@contextlib.contextmanager
def _ros(name: str) -> Iterator:
    """Yield a node of a private rclpy context, spun by a background executor."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin() -> None:
        with contextlib.suppress(ExternalShutdownException):
            executor.spin()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        context.try_shutdown()
        thread.join(timeout=5.0)


def _reset_node(node, service: str, timeout_s: float = 2.0) -> bool:
    """Call the localizer's ``~/reset`` so no earlier frame is in its temporal window."""
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, service)
    try:
        if not client.wait_for_service(timeout_sec=timeout_s):
            return False
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return bool(future.done() and future.result() is not None and future.result().success)
    finally:
        node.destroy_client(client)


def play_to_node(conf: dict, bag: Bag, scan: BagScan,
                 stop: threading.Event | None = None) -> LiveRun:
    """Play the scanned images to the running node and collect the poses it publishes.

    ``conf``: the live keys of bag-eval's ``default_conf`` (``live_image_topic``,
    ``pose_topic``, ``wait_node``, ``reset_service``, ``lockstep``, ``pose_timeout``,
    ``rate_factor``, ``max_idle``). Raises RuntimeError when no localizer answers.
    """
    target = conf['live_image_topic'] or scan.image_topic
    stamps = [int(s) for s in scan.stamps_ns]
    with _ros('camreloc_bag_eval') as node:
        collector = PoseCollector(node, conf['pose_topic'])
        player = BagPlayer(node, bag, [scan.image_topic], remap={scan.image_topic: target})
        logger.info(f'waiting up to {conf["wait_node"]:g} s for a localizer on {target} ...')
        deadline = time.monotonic() + float(conf['wait_node'])
        missing = player.wait_for_subscribers(float(conf['wait_node']), stop=stop)
        while not missing and node.count_publishers(conf['pose_topic']) == 0:
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                missing = [conf['pose_topic']]
                break
            time.sleep(0.02)
        if stop is not None and stop.is_set():
            raise RuntimeError('the localizer stopped before the bag was played')
        if missing:
            raise RuntimeError(
                f'no localizer found after {conf["wait_node"]:g} s: nothing subscribes to '
                f'{target} or publishes {conf["pose_topic"]} (ROS_DOMAIN_ID='
                f'{os.environ.get("ROS_DOMAIN_ID", "0")}). Start one, e.g. `camreloc node '
                '--ros-args -p model:=CKPT -p input:=compressed -p base_frame:=CAMERA_FRAME '
                f'-r image/compressed:={target}`')
        service = conf['reset_service']
        if service is None:
            service = conf['pose_topic'].rsplit('/', 1)[0] + '/camreloc/reset'
        if service and not _reset_node(node, service):
            logger.warning(f'could not call {service}: a temporal model may still hold earlier '
                           'frames')
        hook = collector.lockstep(float(conf['pose_timeout'])) if conf['lockstep'] else None
        t0 = time.perf_counter()
        stats = player.play(float(conf['rate_factor']), max_idle=conf['max_idle'], stop=stop,
                            after_publish=hook)
        collector.wait_for(stamps, float(conf['pose_timeout']))
        seconds = time.perf_counter() - t0
    return LiveRun(dict(collector.poses), stats.total, seconds, target)
