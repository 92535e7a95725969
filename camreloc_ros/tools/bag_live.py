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

"""``bag-eval --live``: play a bag into a running localizer and score the poses it publishes.

Also the live step of ``make demo`` (:func:`demo_live`): the held-out frames as a bag, a
node process in a private ROS domain, the bag played in lock-step, offline vs live tables.
Kept apart from :mod:`camreloc_ros.tools.bag_eval` (offline scoring) because only this part
needs rclpy and a running node.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Iterator

import numpy as np

from camreloc_ros.core.bags import Bag, BagScan
from camreloc_ros.core.io import atomic_write_text
from camreloc_ros.ros.domain import allocate_domain
from camreloc_ros.tools.bag_eval import _info, _score, main
from camreloc_ros.tools.common import scoped_environ

logger = logging.getLogger('camreloc_ros')


@contextlib.contextmanager
def _ros(name: str) -> Iterator:
    """Yield a node of a private rclpy context, spun by a background executor."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

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


def live_eval(conf: dict, bag: Bag, scan: BagScan, out: Path,
              stop: threading.Event | None = None) -> tuple[dict, dict]:
    """Play the images to the running node, collect its poses, score them (bag-eval --live)."""
    from camreloc_ros.ros.bag_player import BagPlayer, PoseCollector

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
    received = [i for i, s in enumerate(stamps) if s in collector.poses]
    scored = [i for i in received if scan.gt_ok[i]]
    logger.info(f'live: published {stats.total} images in {seconds:.1f} s, received '
                f'{len(received)} poses on {conf["pose_topic"]}')
    if not scored:
        raise RuntimeError(f'the localizer published no pose for any image with ground truth '
                           f'({len(received)} of {len(stamps)} images got a pose)')
    pos = np.stack([collector.poses[stamps[i]][0] for i in scored])
    quat = np.stack([collector.poses[stamps[i]][1] for i in scored])
    title = 'live'
    summary = _score(out, scan, scored, pos, quat, None, title)
    extra = {'mode': 'live', 'published': stats.total, 'received': len(received),
             'not_received': len(stamps) - len(received), 'scored': len(scored),
             'seconds': seconds, 'pose_topic': conf['pose_topic'], 'image_topic_out': target,
             'lockstep': bool(conf['lockstep']), 'rate_factor': float(conf['rate_factor'])}
    atomic_write_text(out / 'bag_eval.json', json.dumps(_info(scan, **extra), indent=1) + '\n')
    if len(received) < len(stamps):
        logger.warning(f'{len(stamps) - len(received)} of {len(stamps)} images got no pose '
                       '(dropped by the latest-frame policy of the node, gated, or lost): '
                       'not scored')
    return summary, {'title': title, 'positions': dict(zip(scored, pos))}


# ----------------------------------------------------------------------------- demo

DEMO_IMAGE_TOPIC = '/camera/image_raw/compressed'
DEMO_GT_TOPIC = '/ground_truth/pose'


def _stop_process(proc: subprocess.Popen, timeout_s: float = 15.0) -> int:
    """SIGINT (rclpy shuts down cleanly), then SIGTERM, then SIGKILL."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def demo_live(ckpt: str | Path, data: str | Path, out_dir: str | Path) -> Path:
    """``make demo`` step 3: held-out frames -> JPEG bag -> live node -> offline vs live table.

    The node runs as a separate process (``camreloc node``) in a private ROS domain on this
    host; images go to it in lock-step (the next one once the previous pose came back), so
    every frame is localized whatever the CPU's speed.
    """
    from camreloc_ros.tools import bag_from_dataset

    ckpt, out = Path(ckpt).resolve(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bag = bag_from_dataset.main({'format': 'posed', 'split': 'test', 'block': 25, 'every': 4,
                                 'compressed': True, 'rate': 10.0, 'overwrite': True},
                                {'data': data, 'out': out / 'heldout_bag'})
    domain = allocate_domain()    # no other run on this host (tests, benchmarks) holds it
    env = {'ROS_DOMAIN_ID': str(domain), 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
           'ROS_LOG_DIR': os.environ.get('ROS_LOG_DIR') or str(out / 'ros_log')}
    root = str(Path(__file__).resolve().parents[2])
    child_env = dict(os.environ, **env)
    child_env['PYTHONPATH'] = os.pathsep.join(
        p for p in (root, os.environ.get('PYTHONPATH')) if p)
    command = [sys.executable, '-m', 'camreloc_ros.tools.cli', 'node', '--ros-args',
               '-p', f'model:={ckpt}', '-p', 'input:=compressed', '-p', 'device:=cpu',
               '-p', 'qos.reliability:=reliable', '-r', f'image/compressed:={DEMO_IMAGE_TOPIC}',
               '-p', 'base_frame:=camera']   # the bag's images are in 'camera': its poses
    log_path = out / 'node.log'
    logger.info(f'starting the localizer node (ROS_DOMAIN_ID={domain}, log {log_path})')
    stop = threading.Event()
    with open(log_path, 'w') as log, scoped_environ(env):
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env)
        watcher = threading.Thread(target=lambda: (proc.wait(), stop.set()), daemon=True)
        watcher.start()
        try:
            conf = {'image_topic': DEMO_IMAGE_TOPIC, 'gt_topic': DEMO_GT_TOPIC, 'live': True,
                    'lockstep': True, 'rate_factor': 1.0, 'max_idle': 0.5, 'wait_node': 120.0,
                    'device': 'cpu', 'title': 'offline'}
            try:
                main(conf, {'bag': bag, 'checkpoint': ckpt, 'out': out}, stop=stop)
            except RuntimeError as exc:
                if proc.poll() is not None:
                    tail = log_path.read_text()[-2000:]
                    raise RuntimeError(f'{exc}; the node exited with {proc.returncode}:\n'
                                       f'{tail}') from None
                raise
        finally:
            code = _stop_process(proc)
    logger.info(f'localizer node stopped (exit code {code})')
    return out
