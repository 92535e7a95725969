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

"""Live localizer speed: what the node delivers, and what it adds to the model's forward pass.

A separate publisher process streams 640x480 rgb8 frames (real hololens-office images, resized)
over Fast DDS, best effort depth 1 like a camera driver; the localizer runs in this process
(executor in a thread, as ``ros2 run`` would spin it). The publisher is cheap on purpose (it
shares the CPU with the node): every frame is serialised once and only the stamp is patched
in the CDR bytes before each publish. Two feeding modes:

* ``--rate HZ``: a steady camera (default 30 Hz),
* ``--rate 0``: as fast as the node takes them: two frames in flight, the next one sent when a
  pose comes back, so the worker always has a frame waiting (latest-frame policy) and the
  output rate is the node's throughput.

For every runtime x rate (``--runtime onnx,torch --rate 30,0`` by default) it prints a column
of a markdown table: node latency (callback -> published), end-to-end latency (image stamp ->
pose at a subscriber), output rate, transport losses and latest-frame drops, the same
runtime's bare ``engine.predict`` time measured in the same run, and the overhead ratio.

    PYTHONPATH=. .venv/bin/python benchmarks/live_node.py --seconds 20 [--model ckpt.pt]
        [--precision fp32,int8]
"""

import argparse
import json
import os
from pathlib import Path
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from camreloc_ros.ros.domain import allocate_domain
from camreloc_ros.tools.common import shared_data_dir
from runtimes import machine  # noqa: I100 - a sibling benchmark script

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'
DATA_DIR = shared_data_dir() / 'hololens-office'
IN_FLIGHT = 2          # frames outstanding in the --rate 0 mode
RESEND_S = 0.25        # --rate 0: send another frame when no pose came back for this long


def csv_list(kind):
    """Argparse type: a comma-separated list of ``kind``."""
    return lambda text: [kind(v) for v in text.split(',') if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the benchmark (and of its publisher child)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', help='checkpoint; default: a lite0 regressor built now')
    parser.add_argument('--runtime', type=csv_list(str), default=['onnx', 'torch'],
                        help='node runtimes to measure, comma-separated (torch, onnx)')
    parser.add_argument('--precision', type=csv_list(str), default=['fp32'],
                        help='CNN precisions, comma-separated (int8: onnx only, the .pt is '
                        'quantized once on its training frames of the HoloLens walk)')
    parser.add_argument('--seconds', type=float, default=20.0, help='stream duration')
    parser.add_argument('--map', default='', help='localization map of --model: the refiner '
                        'runs beside the network (issue 11: answered share while refining)')
    parser.add_argument('--rate', type=csv_list(float), default=[30.0, 0.0],
                        help='frames per second, comma-separated; 0 = as fast as the node '
                        'takes them')
    parser.add_argument('--threads', type=int, default=0,
                        help="the node's threads parameter (0 = half the cores)")
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--device', default='cpu', help='auto | cpu | cuda')
    parser.add_argument('--profile', default=str(DEFAULT_PROFILE),
                        help="Fast DDS profile XML, or 'none' for the stock transports")
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS_DOMAIN_ID (default: a free one from camreloc_ros.ros.domain)')
    parser.add_argument('--forward-runs', type=int, default=50,
                        help='engine.predict calls for the bare forward median')
    parser.add_argument('--publisher', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def set_environment(args: argparse.Namespace, log_dir: str) -> None:
    """Domain, localhost discovery, logs and the Fast DDS profile (inherited by the child)."""
    if args.domain_id is None:    # the child publisher gets this id through --domain-id
        args.domain_id = allocate_domain()
    os.environ['ROS_DOMAIN_ID'] = str(args.domain_id)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_LOG_DIR', log_dir)
    if args.profile.lower() == 'none':
        os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    else:
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(Path(args.profile).resolve())


def camera_frames(width: int, height: int, count: int = 8) -> list[np.ndarray]:
    """Real images resized to the camera size (RGB uint8)."""
    import cv2

    from camreloc_ros.core.data.transforms import read_rgb

    paths = sorted((DATA_DIR / 'images').glob('*.jpg'))[::10][:count]
    if not paths:
        raise FileNotFoundError(f'no images in {DATA_DIR / "images"}')
    return [cv2.resize(read_rgb(p), (width, height), interpolation=cv2.INTER_LINEAR)
            for p in paths]


# ---------------------------------------------------------------------------- publisher child

def serialized_frames(width: int, height: int) -> list[bytearray]:
    """Each camera frame as CDR bytes of a ``sensor_msgs/Image`` (stamp patched per publish)."""
    from rclpy.serialization import serialize_message

    from camreloc_ros.ros.conversions import rgb_to_image

    frames = []
    for rgb in camera_frames(width, height):
        msg = rgb_to_image(rgb)
        msg.header.frame_id = 'camera'
        frames.append(bytearray(serialize_message(msg)))
    return frames


def run_publisher(args: argparse.Namespace) -> None:
    """Stream frames (steady rate, or closed loop for rate 0); print counts as JSON."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import qos_profile_sensor_data, QoSProfile
    from sensor_msgs.msg import Image

    rate = args.rate[0]
    rclpy.init()
    node = rclpy.create_node('camreloc_bench_camera')
    qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
    pub = node.create_publisher(Image, 'image', qos)
    frames = serialized_frames(args.width, args.height)
    state = {'sent': 0, 'poses': 0, 'last': time.monotonic(), 'running': True}

    def send() -> None:
        # CDR: 4-byte encapsulation header, then header.stamp.sec (int32), .nanosec (uint32)
        buf = frames[state['sent'] % len(frames)]
        now = time.time_ns()
        struct.pack_into('<iI', buf, 4, now // 1_000_000_000, now % 1_000_000_000)
        pub.publish(bytes(buf))
        state['sent'] += 1
        state['last'] = time.monotonic()

    def on_pose(msg: PoseStamped) -> None:
        state['poses'] += 1
        if state['running']:
            send()
    sub = node.create_subscription(PoseStamped, 'pose', on_pose, 10) if rate <= 0 else None
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and (
            pub.get_subscription_count() == 0 or (sub is not None and
                                                  sub.get_publisher_count() == 0)):
        time.sleep(0.01)
    start = time.monotonic()
    if rate > 0:
        period = 1.0 / rate
        while time.monotonic() - start < args.seconds:
            send()
            delay = start + state['sent'] * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    else:
        for _ in range(IN_FLIGHT):
            send()
        while time.monotonic() - start < args.seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
            if time.monotonic() - state['last'] > RESEND_S:
                send()   # a frame or its pose was lost: keep the loop going
        state['running'] = False
    elapsed = time.monotonic() - start
    time.sleep(0.5)   # let the last frames leave before the participant goes away
    print(json.dumps({'sent': state['sent'], 'seconds': elapsed}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


# ---------------------------------------------------------------------------- measuring side

def load_average() -> str:
    """Return the 1-minute load average (the machine may be shared)."""
    return f'{os.getloadavg()[0]:.2f}'


def bare_forward_ms(model: str, runtime: str, device: str, threads: int, frame: np.ndarray,
                    runs: int, rate: float, precision: str = 'fp32') -> tuple[float, float]:
    """Median ``engine.predict`` time on one camera frame (preprocessing included).

    Measured in a worker thread, as the node runs the engine: on a busy machine torch calls
    from the main thread can be several times slower (OpenMP team contention), which would
    make the node look faster than its own model. Returns the back-to-back median and the
    median with the stream's idle gaps (one call per ``1 / rate`` s): after an idle gap the
    weights are no longer in the caches, which costs the node too.
    """
    from camreloc_ros.core.inference.engine import InferenceEngine
    from camreloc_ros.core.inference.runtimes import live_threads

    engine = InferenceEngine.from_checkpoint(model, runtime=runtime, device=device,
                                             threads=threads or live_threads(),
                                             precision=precision)
    times: dict[bool, list[float]] = {False: [], True: []}

    def measure() -> None:
        for _ in range(5):
            engine.predict(frame)
        for paced in (False, True):
            for _ in range(runs):
                t0 = time.perf_counter()
                engine.predict(frame)
                if engine.device.type == 'cuda':
                    import torch
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
                times[paced].append(elapsed)
                if paced and rate > 0:
                    time.sleep(max(0.0, 1.0 / rate - elapsed))
    worker = threading.Thread(target=measure, name='bare_forward')
    worker.start()
    worker.join()
    return float(np.median(times[False]) * 1e3), float(np.median(times[True]) * 1e3)


def build_default_model(directory: Path) -> Path:
    """Save a lite0 regressor with ImageNet weights (untrained pose head: timing only)."""
    from camreloc_ros.core.models.pose_model import build_model

    return build_model('posenet').save_checkpoint(directory / 'bench_regressor.pt')


def int8_model(model: str, workdir: Path) -> str:
    """Return the int8 export of ``model`` (an .onnx as it is), calibrated on the walk."""
    from camreloc_ros.core.inference.quantize import cached_int8
    from camreloc_ros.core.models.pose_model import load_checkpoint_file

    if model.endswith('.onnx'):
        return model
    extra = load_checkpoint_file(Path(model)).get('extra') or {}
    fmt = None if (extra.get('data') or {}).get('format') else 'posed'
    return str(cached_int8(model, DATA_DIR, workdir / 'cache' / 'onnx', fmt=fmt))


def run_benchmark(args: argparse.Namespace, model: str, runtime: str, rate: float,
                  precision: str = 'fp32') -> dict:
    """Node in this process, publisher in a child; returns the measured numbers."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from geometry_msgs.msg import PoseStamped

    from camreloc_ros.ros.conversions import stamp_to_ns
    from camreloc_ros.ros.localizer_node import LocalizerNode

    rclpy.init()
    node = LocalizerNode(parameter_overrides=[Parameter('model', value=model),
                                              Parameter('runtime', value=runtime),
                                              Parameter('precision', value=precision),
                                              Parameter('threads', value=args.threads),
                                              Parameter('device', value=args.device),
                                              Parameter('path_length', value=0),
                                              Parameter('base_frame', value='camera'),
                                              Parameter('map', value=args.map)])
    if not node.is_active:
        raise RuntimeError(f'the localizer did not start with {model} ({runtime})')
    node.stats.latencies_s = type(node.stats.latencies_s)(maxlen=1_000_000)
    listener = rclpy.create_node('camreloc_bench_listener')
    end_to_end: list[float] = []
    lock = threading.Lock()

    def on_pose(msg: PoseStamped) -> None:
        now = time.time_ns()
        with lock:
            end_to_end.append((now - stamp_to_ns(msg.header.stamp)) * 1e-9)
    listener.create_subscription(PoseStamped, 'pose', on_pose, 100)
    executor = SingleThreadedExecutor()   # what rclpy.spin (ros2 run) uses
    executor.add_node(node)
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    load_before = load_average()
    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), '--publisher', '--seconds',
         str(args.seconds), '--rate', str(rate), '--width', str(args.width),
         '--height', str(args.height), '--domain-id', str(args.domain_id),
         '--profile', args.profile], capture_output=True, text=True,
        timeout=args.seconds + 90, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if child.returncode != 0:
        raise RuntimeError(f'publisher failed:\n{child.stderr[-2000:]}')
    published = json.loads(child.stdout.strip().splitlines()[-1])
    load_after = load_average()
    time.sleep(0.5)
    stats = node.stats.snapshot()
    refiner = node._refiner
    refinements = 0 if refiner is None else refiner.refined + refiner.fallbacks
    refined = 0 if refiner is None else refiner.refined
    with node.stats.lock:
        node_lat = np.asarray(node.stats.latencies_s) * 1e3
    with lock:
        e2e = np.asarray(end_to_end) * 1e3
    device = node.engine.describe() if node.engine else args.device
    executor.shutdown(timeout_sec=5.0)
    node.destroy_node()
    listener.destroy_node()
    rclpy.try_shutdown()
    # after the stream, with the node idle: the same machine state, nothing else running here
    frame = camera_frames(args.width, args.height, 1)[0]
    forward_ms, paced_ms = bare_forward_ms(model, runtime, args.device, args.threads, frame,
                                           args.forward_runs, rate, precision)
    pct = (lambda a, q: float(np.percentile(a, q)) if a.size else float('nan'))
    return {
        'model': Path(model).name, 'device': device,
        'runtime': runtime if precision == 'fp32' else f'{runtime} {precision}',
        'frame': f'{args.width}x{args.height} rgb8', 'rate': rate,
        'profile': 'none' if args.profile.lower() == 'none' else Path(args.profile).name,
        'sent': published['sent'], 'seconds': published['seconds'],
        'received': stats['received'], 'dropped': stats['dropped'],
        'processed': stats['processed'], 'published': stats['published'],
        'bad': stats['bad'], 'poses_received': int(e2e.size),
        'node_p50': pct(node_lat, 50), 'node_p95': pct(node_lat, 95),
        'e2e_p50': pct(e2e, 50), 'e2e_p95': pct(e2e, 95),
        'forward_ms': forward_ms, 'paced_ms': paced_ms,
        'load': f'{load_before} -> {load_after}',
        'refinements': refinements, 'refined': refined,
        'refine_hz': refinements / max(published['seconds'], 1e-9),
    }


def markdown(results: list[dict]) -> str:
    """Format the results as one markdown table, a column per runtime x rate."""
    def column(r: dict) -> list[str]:
        lost = r['sent'] - r['received']
        per_pose = 1e3 * r['seconds'] / max(r['published'], 1)
        return [
            r['device'],
            f'{r["load"]}',
            f'{r["sent"]} / {r["received"]}',
            f'{lost} ({100.0 * lost / max(r["sent"], 1):.1f} %)',
            f'{r["dropped"]}',
            f'{r["bad"]}',
            f'{r["published"]} / {r["poses_received"]}',
            f'{r["sent"] / r["seconds"]:.1f} Hz',
            f'{r["published"] / r["seconds"]:.1f} Hz',
            f'{r["node_p50"]:.1f} / {r["node_p95"]:.1f} ms',
            f'{r["e2e_p50"]:.1f} / {r["e2e_p95"]:.1f} ms',
            f'{r["forward_ms"]:.1f} ms',
            f'{r["node_p50"] / r["forward_ms"]:.2f}',
            f'{r["paced_ms"]:.1f} ms' if r['rate'] > 0 else '(same as back-to-back)',
            f'{r["node_p50"] / r["paced_ms"]:.2f}' if r['rate'] > 0 else '',
            '' if r['rate'] > 0 else
            f'{per_pose:.1f} ms, {per_pose / r["forward_ms"]:.2f}',
            f'{r["refinements"]} ({r["refined"]} refined), {r["refine_hz"]:.2f} Hz'
            if r['refinements'] else 'no map',
        ]
    names = ['model / device / runtime', 'load average (1 min) before -> after',
             'frames sent / received by the node',
             'not delivered (transport loss or keep-last overwrite)',
             'dropped by the latest-frame policy', 'bad messages',
             'poses published / received', 'input rate', 'output rate',
             'node latency p50 / p95 (callback -> published)',
             'end-to-end p50 / p95 (image stamp -> pose received)',
             'bare engine.predict median, back to back (same runtime, same run)',
             'overhead ratio (node p50 / bare back to back)',
             'bare engine.predict median, one call per input period',
             'overhead ratio (node p50 / bare at the input rate)',
             'max rate: time per pose (1 / output rate), ratio to bare back to back',
             'refiner (--map): refinements (refined), rate']
    heads = [f'{r["runtime"]}, ' + ('max (closed loop)' if r['rate'] <= 0 else f'{r["rate"]:g} Hz')
             for r in results]
    cols = [column(r) for r in results]
    first = results[0]
    lines = [f'{first["model"]}, {first["frame"]} input, {first["seconds"]:.0f} s per column, '
             f'Fast DDS profile: {first["profile"]}; {machine()}', '',
             '| metric | ' + ' | '.join(heads) + ' |', '|---|' + '---|' * len(heads)]
    lines += [f'| {name} | ' + ' | '.join(c[i] for c in cols) + ' |'
              for i, name in enumerate(names)]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --publisher, the camera side)."""
    args = parse_args(argv)
    if args.publisher:
        run_publisher(args)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix='camreloc_bench_'))
    try:
        set_environment(args, str(workdir / 'ros_log'))
        os.environ['CAMRELOC_CACHE_DIR'] = str(workdir / 'cache')   # onnx export: once
        model = args.model or str(build_default_model(workdir))
        results = []
        for runtime in args.runtime:
            for precision in args.precision:
                path = int8_model(model, workdir) if precision == 'int8' else model
                for rate in args.rate:
                    results.append(run_benchmark(args, path, runtime, rate, precision))
                print(f'measured {runtime} at {rate:g} Hz', file=sys.stderr, flush=True)
        print(markdown(results))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
