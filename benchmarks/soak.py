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

"""Soak the live localizer: a long camera stream with bad messages, lifecycle cycles, resets.

The node runs as its own process (``camreloc node``, as ``ros2 run`` starts it on a robot);
this process is the camera, the lifecycle manager and the consumer. It streams ``--frames``
640x480 rgb8 frames at ``--rate`` Hz (real hololens-office images, serialised once, stamp
patched per publish, best effort depth 1), replaces one message in ``--bad-every`` by a bad one
(1x1, unknown encoding, short data, float image, in turn), and interleaves ``--cycles``
lifecycle cycles (deactivate, cleanup, configure, activate through the node's lifecycle
services, as a lifecycle manager does) and ``--resets`` ``~/reset`` calls, evenly spread.

It prints a markdown table, a column per ``--block`` frames: the node's resident memory (RSS of
its process) at the end of the block, the share of good frames answered with a pose,
end-to-end latency percentiles (image stamp -> pose received here), the node's counters from
/diagnostics, and whether the node process survived. Not a test: a long run (20,000 frames
at 30 Hz is 11 minutes).

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py [--frames 20000] [--model ckpt.pt]
"""

import argparse
import os
from pathlib import Path
import queue
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from live_node import (DEFAULT_PROFILE, load_average,  # noqa: I100 - sibling benchmark
                       serialized_frames, set_environment)
from runtimes import machine

ROOT = Path(__file__).resolve().parent.parent
NODE = 'camreloc'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the soak benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=20000,
                        help='messages to publish (good and bad)')
    parser.add_argument('--rate', type=float, default=30.0, help='messages per second')
    parser.add_argument('--bad-every', type=int, default=50, help='one bad message in N')
    parser.add_argument('--cycles', type=int, default=20, help='lifecycle cycles')
    parser.add_argument('--resets', type=int, default=20, help='~/reset calls')
    parser.add_argument('--block', type=int, default=5000, help='messages per table column')
    parser.add_argument('--model', help='checkpoint; default: a lite0 regressor built now')
    parser.add_argument('--runtime', default='auto', help="the node's runtime parameter")
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--profile', default=str(DEFAULT_PROFILE),
                        help="Fast DDS profile XML, or 'none' for the stock transports")
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS_DOMAIN_ID (default: a free one from camreloc_ros.ros.domain)')
    return parser.parse_args(argv)


def build_model_like_tests(directory: Path) -> Path:
    """Save a lite0 regressor with ImageNet weights and pose statistics (as the node tests)."""
    from camreloc_ros.core.models.pose_model import build_model

    model = build_model('posenet')
    model.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    return model.save_checkpoint(directory / 'soak_regressor.pt')


def bad_messages() -> list:
    """One bad Image of each kind the node must count and survive."""
    from sensor_msgs.msg import Image

    tiny = Image(height=1, width=1, encoding='rgb8', step=3, data=bytes(3))
    yuv = Image(height=48, width=64, encoding='yuv422', step=128, data=bytes(128 * 48))
    short = Image(height=480, width=640, encoding='rgb8', step=1920, data=bytes(1000))
    depth = Image(height=48, width=64, encoding='32FC1', step=256, data=bytes(256 * 48))
    return [tiny, yuv, short, depth]


def rss_mib(pid: int) -> float:
    """Resident memory of a process (MiB) from /proc."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    return float('nan')


class Driver:
    """Camera, lifecycle manager and pose consumer of one soak run (an rclpy node)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data, QoSProfile
        from sensor_msgs.msg import Image
        from std_srvs.srv import Trigger

        rclpy.init()
        self.node = rclpy.create_node('camreloc_soak')
        qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
        self.pub = self.node.create_publisher(Image, 'image', qos)
        self.lock = threading.Lock()
        self.received_ns: dict[int, int] = {}       # image stamp -> receive time
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(PoseStamped, 'pose', self._on_pose, 100)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        self.change_state = self.node.create_client(ChangeState, f'/{NODE}/change_state')
        self.get_state = self.node.create_client(GetState, f'/{NODE}/get_state')
        self.reset = self.node.create_client(Trigger, f'/{NODE}/reset')
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()
        self.active = threading.Event()
        self.failures: list[str] = []
        self.done = {'cycles': 0, 'resets': 0}
        self.cycle_s: list[float] = []
        self.jobs: queue.Queue = queue.Queue()
        self.operator = threading.Thread(target=self._operate, daemon=True)
        self.operator.start()

    def _on_pose(self, msg) -> None:
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.received_ns[stamp] = now

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name == f'{NODE}: localizer':
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}

    def call(self, client, request, timeout_s: float = 60.0):
        """Call a service from this (non-executor) thread and wait for the answer."""
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f'{client.srv_name} is not available')
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f'{client.srv_name} did not answer in {timeout_s} s')
            time.sleep(0.005)
        return future.result()

    def state(self) -> str:
        """Return the node's lifecycle state label (``active``, ``unconfigured``...)."""
        from lifecycle_msgs.srv import GetState

        return self.call(self.get_state, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> None:
        """Ask the node for one lifecycle transition; record a refusal."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(id=transition_id))
        if not self.call(self.change_state, request).success:
            self.failures.append(f'transition {transition_id} refused')

    def _cycle(self) -> None:
        from lifecycle_msgs.msg import Transition

        start = time.monotonic()
        self.active.clear()
        for tid in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP,
                    Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            self.transition(tid)
        self.active.set()
        self.cycle_s.append(time.monotonic() - start)
        self.done['cycles'] += 1

    def _reset(self) -> None:
        from std_srvs.srv import Trigger

        response = self.call(self.reset, Trigger.Request())
        if not response.success:
            self.failures.append(f'reset refused: {response.message}')
        self.done['resets'] += 1

    def _operate(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                if job == 'cycle':
                    self._cycle()
                else:
                    self._reset()
            except Exception as exc:  # noqa: BLE001 - recorded, reported in the table
                self.failures.append(f'{job}: {exc!r}')
            finally:
                self.jobs.task_done()

    def close(self) -> None:
        """Stop the operator and the executor; shut rclpy down."""
        import rclpy

        self.jobs.put(None)
        self.operator.join(timeout=300.0)
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown()


def schedule(count: int, frames: int, phase: float) -> set[int]:
    """``count`` frame indices spread evenly over ``frames`` (at ``phase`` of each slot)."""
    return {int((k + phase) * frames / count) for k in range(count)} if count > 0 else set()


def stream(args: argparse.Namespace, driver: Driver, node_pid: int) -> list[dict]:
    """Publish the frames with the bad messages, cycles and resets; measure per block."""
    from rclpy.serialization import serialize_message

    frames = serialized_frames(args.width, args.height)
    bad = [bytes(serialize_message(m)) for m in bad_messages()]
    cycles = schedule(args.cycles, args.frames, 0.75)
    resets = schedule(args.resets, args.frames, 0.25)
    blocks: list[dict] = []
    block = None
    period = 1.0 / args.rate
    start = time.monotonic()
    for i in range(args.frames):
        if i % args.block == 0:
            block = {'first': i, 'good': [], 'bad': 0, 'bad_while_active': 0,
                     'good_while_inactive': 0, 'cycles_before': driver.done['cycles'],
                     'resets_before': driver.done['resets']}
            blocks.append(block)
        if i in cycles:
            driver.jobs.put('cycle')
        if i in resets:
            driver.jobs.put('reset')
        active = driver.active.is_set()
        if (i + 1) % args.bad_every == 0:
            driver.pub.publish(bad[(i // args.bad_every) % len(bad)])
            block['bad'] += 1
            block['bad_while_active'] += int(active)
        else:
            buf = frames[i % len(frames)]
            now = time.time_ns()
            # CDR: 4-byte encapsulation header, then header.stamp.sec, .nanosec
            struct.pack_into('<iI', buf, 4, now // 1_000_000_000, now % 1_000_000_000)
            driver.pub.publish(bytes(buf))
            block['good'].append(now)
            block['good_while_inactive'] += int(not active)
        if (i + 1) % args.block == 0 or i + 1 == args.frames:
            time.sleep(0.5)   # the last poses of the block come back
            block['rss_mib'] = rss_mib(node_pid)
            block['cycles'] = driver.done['cycles'] - block['cycles_before']
            block['resets'] = driver.done['resets'] - block['resets_before']
            with driver.lock:
                block['diagnostics'] = dict(driver.diagnostics)
            block['load'] = load_average()
            block['seconds'] = time.monotonic() - start
            print(f'{i + 1} messages, node RSS {block["rss_mib"]:.0f} MiB', file=sys.stderr,
                  flush=True)
            start = time.monotonic()
            continue
        delay = start + (i + 1 - blocks[-1]['first']) * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return blocks


def summarise(blocks: list[dict], driver: Driver) -> None:
    """Fill each block's answered share and latency percentiles from the received poses."""
    with driver.lock:
        received = dict(driver.received_ns)
    for block in blocks:
        lat = np.asarray([(received[s] - s) * 1e-6 for s in block['good'] if s in received])
        block['answered'] = lat.size
        block['latency'] = [float(np.percentile(lat, q)) if lat.size else float('nan')
                            for q in (50, 95, 99)] + [float(lat.max()) if lat.size else
                                                      float('nan')]


def markdown(args: argparse.Namespace, blocks: list[dict], idle_rss: float, end: dict) -> str:
    """Format the soak table: a column per block, then the run's verdict lines."""
    heads = [f'{b["first"] + 1}-{b["first"] + len(b["good"]) + b["bad"]}' for b in blocks]
    rows = {
        'node RSS at the end of the block': [f'{b["rss_mib"]:.0f} MiB' for b in blocks],
        'good frames sent / answered with a pose': [
            f'{len(b["good"])} / {b["answered"]} ({100.0 * b["answered"] / len(b["good"]):.1f} %)'
            for b in blocks],
        'good frames sent while a lifecycle cycle ran': [str(b['good_while_inactive'])
                                                         for b in blocks],
        'bad messages sent (while active)': [f'{b["bad"]} ({b["bad_while_active"]})'
                                             for b in blocks],
        'lifecycle cycles / resets done': [f'{b["cycles"]} / {b["resets"]}' for b in blocks],
        'end-to-end latency p50 / p95 / p99 / max': [
            '{:.1f} / {:.1f} / {:.1f} / {:.1f} ms'.format(*b['latency']) for b in blocks],
        'node: received / published / dropped / bad / errors (cumulative)': [
            ' / '.join(b['diagnostics'].get(k, '?') for k in
                       ('received', 'published', 'dropped_frames', 'bad_messages', 'errors'))
            for b in blocks],
        'seconds, load average (1 min) at the end': [f'{b["seconds"]:.0f} s, {b["load"]}'
                                                     for b in blocks],
    }
    lines = [f'{args.frames} messages at {args.rate:g} Hz ({args.width}x{args.height} rgb8, '
             f'1 bad in {args.bad_every}), {args.cycles} lifecycle cycles, {args.resets} '
             f'resets; runtime {args.runtime}; {machine()}', '',
             '| metric | ' + ' | '.join(heads) + ' |', '|---|' + '---|' * len(heads)]
    lines += [f'| {name} | ' + ' | '.join(cells) + ' |' for name, cells in rows.items()]
    first, middle, last = (blocks[i]['rss_mib'] for i in (0, (len(blocks) - 1) // 2, -1))
    growth = 100.0 * max(abs(middle - first), abs(last - first)) / first
    good = sum(len(b['good']) for b in blocks)
    answered = sum(b['answered'] for b in blocks)
    inactive = sum(b['good_while_inactive'] for b in blocks)
    failures = (': ' + '; '.join(end['failures'][:3])) if end['failures'] else ''
    counters = end['counters']
    bad_active = sum(b['bad_while_active'] for b in blocks)
    cycle_s = end['cycle_s'] or [float('nan')]
    final = ', '.join(f'{k} {counters.get(k, "?")}' for k in (
        'received', 'processed', 'published', 'dropped_frames', 'bad_messages'))
    lines += [
        '',
        f'- RSS: {idle_rss:.0f} MiB configured and idle before the stream; {first:.0f} / '
        f'{middle:.0f} / {last:.0f} MiB after the first / middle / last block '
        f'(largest change from the first: {growth:.1f} %, flat within 5 %: '
        f'{"yes" if growth <= 5.0 else "NO"})',
        f'- answered: {answered} of {good} good frames ({100.0 * answered / good:.1f} %); '
        f'{inactive} were sent while a lifecycle cycle ran (the node is not active then); '
        f'answered share of the rest: {100.0 * answered / max(good - inactive, 1):.1f} %',
        f'- node counters 2 s after the stream: {final} (bad messages sent while active: '
        f'{bad_active})',
        f'- lifecycle cycle (deactivate, cleanup, configure, activate): median '
        f'{np.median(cycle_s):.2f} s, max {max(cycle_s):.2f} s',
        f'- crashes: node process {"alive" if end["alive"] else "DEAD"} at the end, final state '
        f'{end["state"]!r}, worker errors {counters.get("errors", "?")}, refused or failed '
        f'calls {len(end["failures"])}{failures}; '
        f'on SIGINT it exited with {end["exit_code"]} and '
        f'{"a traceback" if end["traceback"] else "no traceback"}',
    ]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the soak benchmark and print its table."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix='camreloc_soak_'))
    node_log = workdir / 'node.log'
    try:
        set_environment(args, str(workdir / 'ros_log'))
        os.environ['CAMRELOC_CACHE_DIR'] = str(workdir / 'cache')   # onnx export: once
        model = args.model or str(build_model_like_tests(workdir))
        with open(node_log, 'w') as log:
            node = subprocess.Popen(
                [sys.executable, '-m', 'camreloc_ros.tools.cli', 'node', '--ros-args',
                 '-p', f'model:={model}', '-p', f'runtime:={args.runtime}',
                 # the frames' frame_id is 'camera' and no TF is published: poses of the
                 # camera itself (base_link, the default, would wait for extrinsics)
                 '-p', 'device:=cpu', '-p', 'base_frame:=camera'],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        driver = Driver(args)
        end: dict = {}
        blocks: list[dict] = []
        try:
            deadline = time.monotonic() + 300.0
            while driver.pub.get_subscription_count() == 0 or driver.state() != 'active':
                if node.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f'the node did not start:\n{node_log.read_text()}')
                time.sleep(0.2)
            driver.active.set()
            time.sleep(2.0)
            idle_rss = rss_mib(node.pid)
            blocks = stream(args, driver, node.pid)
            driver.jobs.join()   # the last cycle or reset
            time.sleep(2.0)      # the last poses and diagnostics
            summarise(blocks, driver)
            alive = node.poll() is None
            with driver.lock:
                counters = dict(driver.diagnostics)
            end.update(alive=alive, state=driver.state() if alive else 'gone',
                       counters=counters, failures=driver.failures, cycle_s=driver.cycle_s)
        finally:
            driver.close()
            if node.poll() is None:
                node.send_signal(signal.SIGINT)
                try:
                    node.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    node.kill()
                    node.wait()
        end['exit_code'] = node.returncode
        end['traceback'] = 'Traceback' in node_log.read_text()
        print(markdown(args, blocks, idle_rss, end))
        if end['traceback'] or not end['alive']:
            print(node_log.read_text()[-3000:], file=sys.stderr)
        if not any(b['answered'] for b in blocks):
            print('no pose was published: the run measured nothing (see tf_missing in the '
                  f'node log):\n{node_log.read_text()[-3000:]}', file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
