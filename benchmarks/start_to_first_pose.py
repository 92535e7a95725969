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

"""Node start to first pose: how long a robot waits after ``ros2 run`` (per runtime).

Each run starts the localizer as its own process (``python -m
camreloc_ros.ros.localizer_node``, what ``ros2 run camreloc_ros localizer`` executes) and,
from this process, publishes a 640x480 rgb8 frame every 50 ms (reliable) until the first
pose arrives on ``pose``. The time is from just before the process is spawned to the first
pose received: interpreter start, imports (torch or not), model load, warm-up, DDS discovery
and one inference. Runtimes: ``torch`` on a ``.pt`` checkpoint and ``onnx`` on the ``.onnx``
exported from it (the robot setup, no torch imported). Prints a markdown table: each run,
the median, and the 1-minute load average before each run.

    PYTHONPATH=. .venv/bin/python benchmarks/start_to_first_pose.py --runs 3
"""

import argparse
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent


def make_models(folder: Path) -> dict[str, Path]:
    """Write a lite0 regressor checkpoint (ImageNet weights) and its ONNX export."""
    from camreloc_ros.core.models.pose_model import build_model
    from camreloc_ros.tools import export

    model = build_model('posenet')
    model.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    ckpt = model.save_checkpoint(folder / 'reg.pt')
    onnx = export.main({'check': False}, {'checkpoint': str(ckpt),
                                          'out': str(folder / 'reg.onnx')})
    return {'torch': ckpt, 'onnx': Path(onnx)}


def one_run(runtime: str, model: Path, frame, timeout_s: float, log_dir: Path) -> float:
    """Seconds from spawning the node to the first pose received here."""
    from geometry_msgs.msg import PoseStamped
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from camreloc_ros.ros.conversions import rgb_to_image, sec_to_stamp

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('first_pose_probe', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    poses = []
    node.create_subscription(PoseStamped, 'pose', lambda m: poses.append(time.monotonic()), 10)
    pub = node.create_publisher(Image, 'image', 10)
    msg = rgb_to_image(frame)
    cmd = [sys.executable, '-m', 'camreloc_ros.ros.localizer_node', '--ros-args',
           '-p', f'model:={model}', '-p', f'runtime:={runtime}', '-p', 'device:=cpu',
           '-p', 'qos.reliability:=reliable']
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        next_send = start
        while not poses:
            if proc.poll() is not None:
                raise RuntimeError(f'the node exited ({proc.returncode}): {proc.stderr.read()}')
            if time.monotonic() - start > timeout_s:
                raise RuntimeError(f'no pose within {timeout_s} s')
            if time.monotonic() >= next_send:
                msg.header.stamp = sec_to_stamp(time.time())
                pub.publish(msg)
                next_send += 0.05
            executor.spin_once(timeout_sec=0.01)
        return poses[0] - start
    finally:
        proc.send_signal(2)   # SIGINT, as Ctrl-C
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--runtime', default='onnx,torch')
    parser.add_argument('--timeout', type=float, default=180.0)
    args = parser.parse_args()
    import cv2

    from camreloc_ros.core.data.transforms import read_rgb
    from camreloc_ros.ros.domain import allocate_domain
    from camreloc_ros.tools.common import shared_data_dir

    image = sorted((shared_data_dir() / 'hololens-office' / 'images').glob('*.jpg'))[0]
    frame = cv2.resize(read_rgb(image), (640, 480), interpolation=cv2.INTER_AREA)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.update({'ROS_DOMAIN_ID': str(allocate_domain()),
                           'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
                           'ROS_LOG_DIR': str(tmp / 'log'),
                           'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH',
                                                                                 '')})
        models = make_models(tmp)
        rows = []
        for runtime in args.runtime.split(','):
            times, loads = [], []
            for _ in range(args.runs):
                loads.append(os.getloadavg()[0])
                times.append(one_run(runtime, models[runtime], frame, args.timeout, tmp))
                print(f'{runtime}: {times[-1]:.2f} s (load {loads[-1]:.2f})', flush=True)
            rows.append((runtime, models[runtime].suffix, times, loads))
    print('\n| runtime (model) | runs (s) | **median (s)** | load average before each run |')
    print('|---|---|---|---|')
    for runtime, suffix, times, loads in rows:
        print(f'| {runtime} ({suffix}) | {", ".join(f"{t:.2f}" for t in times)} | '
              f'**{statistics.median(times):.2f}** | {", ".join(f"{x:.2f}" for x in loads)} |')
    print(f'\n{os.cpu_count()} CPUs; python {sys.version.split()[0]}')


if __name__ == '__main__':
    main()
