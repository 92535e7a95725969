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

"""Live localizer overhead: what the node adds on top of the model's bare forward pass.

A separate publisher process streams 640x480 rgb8 frames (real hololens-office images, resized)
at ``--rate`` Hz for ``--seconds`` over Fast DDS, best effort depth 1 like a camera driver; the
localizer runs in this process (executor in a thread, as ``ros2 run`` would spin it). Printed
as a markdown table: node latency (callback -> published), end-to-end latency (image stamp ->
pose at a subscriber), output rate, transport losses and latest-frame drops, the same model's
bare ``engine.predict`` time measured in the same run, and the overhead ratio.

    PYTHONPATH=. .venv/bin/python benchmarks/live_node.py --seconds 10 [--model ckpt.pt]
"""

import argparse
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'
DATA_DIR = Path(os.environ.get('CAMRELOC_TEST_DATA', '/work/shared/data/hololens-office'))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the benchmark (and of its publisher child)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', help='checkpoint; default: a lite0 regressor built now')
    parser.add_argument('--seconds', type=float, default=20.0, help='stream duration')
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda')
    parser.add_argument('--profile', default=str(DEFAULT_PROFILE),
                        help="Fast DDS profile XML, or 'none' for the stock transports")
    parser.add_argument('--domain-id', type=int, default=120)
    parser.add_argument('--forward-runs', type=int, default=30,
                        help='engine.predict calls for the bare forward median')
    parser.add_argument('--publisher', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def set_environment(args: argparse.Namespace, log_dir: str) -> None:
    """Domain, localhost discovery, logs and the Fast DDS profile (inherited by the child)."""
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

def run_publisher(args: argparse.Namespace) -> None:
    """Stream frames at a steady rate; print how many were sent as JSON on stdout."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data, QoSProfile
    from sensor_msgs.msg import Image

    from camreloc_ros.ros.conversions import rgb_to_image

    rclpy.init()
    node = rclpy.create_node('camreloc_bench_camera')
    qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
    pub = node.create_publisher(Image, 'image', qos)
    messages = [rgb_to_image(f) for f in camera_frames(args.width, args.height)]
    for msg in messages:
        msg.header.frame_id = 'camera'
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    sent = 0
    period = 1.0 / args.rate
    start = time.monotonic()
    while time.monotonic() - start < args.seconds:
        msg = messages[sent % len(messages)]
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        sent += 1
        delay = start + sent * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - start
    time.sleep(0.5)   # let the last frames leave before the participant goes away
    print(json.dumps({'sent': sent, 'seconds': elapsed}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


# ---------------------------------------------------------------------------- measuring side

def bare_forward_ms(model: str, device: str, frame: np.ndarray, runs: int) -> float:
    """Median ``engine.predict`` time on one camera frame (preprocessing included).

    Measured in a worker thread, as the node runs the engine: on a busy machine torch calls
    from the main thread can be several times slower (OpenMP team contention), which would
    make the node look faster than its own model.
    """
    from camreloc_ros.core.engine import InferenceEngine

    engine = InferenceEngine.from_checkpoint(model, device=device)
    times: list[float] = []

    def measure() -> None:
        for _ in range(3):
            engine.predict(frame)
        for _ in range(runs):
            t0 = time.perf_counter()
            engine.predict(frame)
            if engine.device.type == 'cuda':
                import torch
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    worker = threading.Thread(target=measure, name='bare_forward')
    worker.start()
    worker.join()
    return float(np.median(times) * 1e3)


def build_default_model(directory: Path) -> Path:
    """Save a lite0 regressor with ImageNet weights (untrained pose head: timing only)."""
    from camreloc_ros.core.models.pose_model import build_model

    return build_model('posenet').save_checkpoint(directory / 'bench_regressor.pt')


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    """Node in this process, publisher in a child; returns the measured numbers."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from geometry_msgs.msg import PoseStamped

    from camreloc_ros.ros.conversions import stamp_to_ns
    from camreloc_ros.ros.localizer_node import LocalizerNode

    set_environment(args, str(workdir / 'ros_log'))
    model = args.model or str(build_default_model(workdir))

    rclpy.init()
    node = LocalizerNode(parameter_overrides=[Parameter('model', value=model),
                                              Parameter('device', value=args.device),
                                              Parameter('path_length', value=0)])
    if not node.is_active:
        raise RuntimeError(f'the localizer did not start with {model}')
    node.stats.latencies_s = type(node.stats.latencies_s)(maxlen=1_000_000)
    listener = rclpy.create_node('camreloc_bench_listener')
    end_to_end: list[float] = []
    lock = threading.Lock()

    def on_pose(msg: PoseStamped) -> None:
        now = time.time_ns()
        with lock:
            end_to_end.append((now - stamp_to_ns(msg.header.stamp)) * 1e-9)
    listener.create_subscription(PoseStamped, 'pose', on_pose, 100)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), '--publisher', '--seconds',
         str(args.seconds), '--rate', str(args.rate), '--width', str(args.width),
         '--height', str(args.height), '--domain-id', str(args.domain_id),
         '--profile', args.profile], capture_output=True, text=True,
        timeout=args.seconds + 90, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if child.returncode != 0:
        raise RuntimeError(f'publisher failed:\n{child.stderr[-2000:]}')
    published = json.loads(child.stdout.strip().splitlines()[-1])
    time.sleep(0.5)
    stats = node.stats.snapshot()
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
    forward_ms = bare_forward_ms(model, args.device, frame, args.forward_runs)
    pct = (lambda a, q: float(np.percentile(a, q)) if a.size else float('nan'))
    return {
        'model': Path(model).name, 'device': device,
        'frame': f'{args.width}x{args.height} rgb8', 'rate': args.rate,
        'profile': 'none' if args.profile.lower() == 'none' else Path(args.profile).name,
        'sent': published['sent'], 'seconds': published['seconds'],
        'received': stats['received'], 'dropped': stats['dropped'],
        'processed': stats['processed'], 'published': stats['published'],
        'bad': stats['bad'], 'poses_received': int(e2e.size),
        'node_p50': pct(node_lat, 50), 'node_p95': pct(node_lat, 95),
        'e2e_p50': pct(e2e, 50), 'e2e_p95': pct(e2e, 95),
        'forward_ms': forward_ms,
    }


def markdown(r: dict) -> str:
    """Format the result as a markdown table."""
    lost = r['sent'] - r['received']
    rows = [
        ('model / device', f'{r["model"]} / {r["device"]}'),
        ('input', f'{r["frame"]} at {r["rate"]:g} Hz for {r["seconds"]:.1f} s, '
                  f'Fast DDS profile: {r["profile"]}'),
        ('frames sent / received by the node', f'{r["sent"]} / {r["received"]}'),
        ('not delivered (transport loss or keep-last overwrite)',
         f'{lost} ({100.0 * lost / max(r["sent"], 1):.1f} %)'),
        ('dropped by the latest-frame policy', f'{r["dropped"]}'),
        ('bad messages', f'{r["bad"]}'),
        ('poses published / received', f'{r["published"]} / {r["poses_received"]}'),
        ('output rate', f'{r["published"] / r["seconds"]:.1f} Hz'),
        ('node latency p50 / p95 (callback -> published)',
         f'{r["node_p50"]:.1f} / {r["node_p95"]:.1f} ms'),
        ('end-to-end p50 / p95 (image stamp -> pose received)',
         f'{r["e2e_p50"]:.1f} / {r["e2e_p95"]:.1f} ms'),
        ('bare engine.predict median (same model, same run)', f'{r["forward_ms"]:.1f} ms'),
        ('overhead ratio (node p50 / bare forward)',
         f'{r["node_p50"] / r["forward_ms"]:.2f}'),
    ]
    lines = ['| metric | value |', '|---|---|']
    lines += [f'| {k} | {v} |' for k, v in rows]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --publisher, the camera side)."""
    args = parse_args(argv)
    if args.publisher:
        run_publisher(args)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix='camreloc_bench_'))
    try:
        print(markdown(run_benchmark(args, workdir)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
