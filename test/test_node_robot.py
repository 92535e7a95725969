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

"""On the robot: diagnostics in every state, the training camera check, the torch-free path.

Over real rclpy / Fast DDS (private ROS_DOMAIN_IDs from support.allocate_domain). The model is
an ``.onnx`` exported by ``camreloc export`` from a checkpoint whose ``extra`` records a 640x480
training camera (fx = fy = 585, the 7-Scenes Kinect), so every node here runs ONNX Runtime.
"""

import json
import os
from pathlib import Path
import subprocess
import sys
import textwrap
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from support import allocate_domain, DATA_DIR, load_frames, ros_harness
from sensor_msgs.msg import CameraInfo, Image

from camreloc_ros.core.robot.camera import (camera_mismatch, camera_record, field_of_view_deg,
                                            training_camera)
from camreloc_ros.ros.camera_check import CameraCheck
from camreloc_ros.ros.conversions import rgb_to_image, sec_to_stamp, stamp_to_ns
from camreloc_ros.ros.localizer_node import LocalizerNode

DOMAIN_ID = allocate_domain()
TIMEOUT_S = 20.0
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]   # real DDS, subprocess node starts
ROOT = Path(__file__).resolve().parent.parent
CAMERA = {'width': 640, 'height': 480, 'fx': 585.0, 'fy': 585.0, 'cx': 320.0, 'cy': 240.0}


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def onnx_model(tmp_path_factory) -> Path:
    """A lite0 regressor checkpoint with a training camera record, exported to ONNX."""
    from camreloc_ros.core.models.pose_model import build_model
    from camreloc_ros.tools import export

    folder = tmp_path_factory.mktemp('models')
    model = build_model('posenet')
    model.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    ckpt = model.save_checkpoint(folder / 'cam.pt', extra={'camera': dict(CAMERA)})
    return export.main({'check': False}, {'checkpoint': str(ckpt),
                                          'out': str(folder / 'cam.onnx')})


@pytest.fixture(scope='module')
def harness(tmp_path_factory):
    """Private domain, localhost discovery, logs in a temp dir; executor in a thread."""
    with ros_harness(DOMAIN_ID, tmp_path_factory.mktemp('ros_log'), 'robot_test') as ros:
        ros.diagnostics = []
        ros.node.create_subscription(DiagnosticArray, '/diagnostics',
                                     ros.diagnostics.append, 50)
        yield ros


@pytest.fixture(scope='module')
def frame() -> np.ndarray:
    """One real hololens-office frame, 640x480 like the training camera."""
    return load_frames(1, size=(640, 480))[0]


def localizer(harness, namespace: str, **params) -> LocalizerNode:
    """A localizer node in ``namespace`` spun by the harness (CPU, ONNX Runtime)."""
    return harness.localizer(namespace, **{'runtime': 'onnx', 'qos.reliability': 'reliable',
                                           **params})


def wait_status(harness, namespace: str, predicate, timeout_s: float = TIMEOUT_S):
    """Wait for a status of ``namespace`` (received from now on) that satisfies ``predicate``."""
    since = time.monotonic()
    found = []

    def check() -> bool:
        for array in list(harness.diagnostics)[-20:]:
            for status in array.status:
                if status.name == f'{namespace}/camreloc: localizer' and predicate(status):
                    found.append(status)
                    return True
        return False

    harness.diagnostics.clear()
    assert harness.wait_for(check, timeout_s), \
        f'no {namespace} diagnostics as expected within {timeout_s} s (since {since:.0f})'
    return found[-1]


def values(status: DiagnosticStatus) -> dict:
    """Key/values of a diagnostic status."""
    return {kv.key: kv.value for kv in status.values}


class Camera:
    """The test side of a camera driver: Image and CameraInfo publishers, a pose listener."""

    def __init__(self, harness, namespace: str, frame: np.ndarray):
        self.harness, self.frame = harness, frame
        node = harness.node
        self.poses: dict[int, PoseStamped] = {}
        self.image_pub = node.create_publisher(Image, f'/{namespace}/image', 10)
        self.info_pub = node.create_publisher(CameraInfo, f'/{namespace}/camera_info', 10)
        self.sub = node.create_subscription(
            PoseStamped, f'/{namespace}/pose',
            lambda msg: self.poses.__setitem__(stamp_to_ns(msg.header.stamp), msg), 10)
        assert harness.wait_for(lambda: self.image_pub.get_subscription_count() > 0
                                and self.info_pub.get_subscription_count() > 0
                                and self.sub.get_publisher_count() > 0, TIMEOUT_S)

    def image(self, stamp: float) -> int:
        """Publish the frame stamped ``stamp``; return the stamp key."""
        msg = rgb_to_image(self.frame, header=None)
        msg.header.stamp = sec_to_stamp(stamp)
        msg.header.frame_id = ''   # no extrinsics needed (the camera is the base frame)
        self.image_pub.publish(msg)
        return stamp_to_ns(msg.header.stamp)

    def pose(self, stamp: float) -> PoseStamped:
        """Publish an image and wait for its pose."""
        key = self.image(stamp)
        assert self.harness.wait_for(lambda: key in self.poses, TIMEOUT_S), \
            f'no pose for the image stamped {stamp}'
        return self.poses[key]

    def info(self, width: int, height: int, fx: float, fy: float, check: CameraCheck,
             count: int = 1) -> None:
        """Publish CameraInfo until the node's check has seen ``count`` more of them."""
        msg = CameraInfo(width=width, height=height)
        msg.k = [fx, 0.0, width / 2, 0.0, fy, height / 2, 0.0, 0.0, 1.0]
        target = check.infos + count
        deadline = time.monotonic() + TIMEOUT_S
        while check.infos < target:
            assert time.monotonic() < deadline, 'camera_info never reached the node'
            self.info_pub.publish(msg)
            time.sleep(0.05)


# ---------------------------------------------------------------------------- diagnostics

def test_diagnostics_in_every_lifecycle_state(harness, onnx_model, frame):
    """ERROR with the reason when configure fails; WARN unconfigured / inactive; image age.

    /diagnostics is a plain publisher made in __init__: it reports while the node is
    unconfigured, which a lifecycle publisher could not.
    """
    missing = str(onnx_model.parent / 'no_such_model.onnx')
    node = localizer(harness, 'diag', model=missing)
    try:
        assert not node.is_active and node.engine is None
        status = wait_status(harness, 'diag', lambda s: s.level == DiagnosticStatus.ERROR)
        assert 'configure failed' in status.message and missing in status.message
        assert missing in values(status)['configure_error']

        node.set_parameters([Parameter('model', value=str(onnx_model))])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        status = wait_status(harness, 'diag', lambda s: s.level != DiagnosticStatus.ERROR)
        assert (status.level, status.message) == (DiagnosticStatus.WARN, 'inactive')
        assert values(status)['configure_error'] == ''
        assert values(status)['last_image_age_s'] == 'none'

        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        status = wait_status(harness, 'diag', lambda s: s.message == 'unconfigured')
        assert status.level == DiagnosticStatus.WARN

        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        camera = Camera(harness, 'diag', frame)
        camera.pose(time.time() - 5.0)   # an image 5 s old on the (system) node clock
        status = wait_status(harness, 'diag', lambda s: values(s)['published'] == '1')
        age = float(values(status)['last_image_age_s'])
        assert 5.0 <= age < 5.0 + TIMEOUT_S, age
    finally:
        harness.remove(node)


def test_image_age_uses_the_node_clock(harness, onnx_model, frame):
    """With use_sim_time the age is /clock time minus the stamp, not wall time."""
    node = localizer(harness, 'sim', model=str(onnx_model), use_sim_time=True)
    clock_pub = harness.node.create_publisher(Clock, '/clock', 10)
    try:
        assert node.is_active
        camera = Camera(harness, 'sim', frame)
        stop = threading.Event()

        def tick() -> None:   # a bag player's /clock, frozen at 5000 s
            while not stop.is_set():
                clock_pub.publish(Clock(clock=sec_to_stamp(5000.0)))
                time.sleep(0.02)

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            assert harness.wait_for(
                lambda: node.get_clock().now().nanoseconds == 5_000_000_000_000, TIMEOUT_S)
            camera.pose(4990.0)
            status = wait_status(harness, 'sim',
                                 lambda s: values(s)['last_image_age_s'] != 'none')
            assert float(values(status)['last_image_age_s']) == pytest.approx(10.0, abs=1e-6)
        finally:
            stop.set()
            ticker.join()
    finally:
        harness.node.destroy_publisher(clock_pub)
        harness.remove(node)


# ---------------------------------------------------------------------------- camera check

def test_camera_record_and_comparison():
    """The record of a dataset with intrinsics, of frames without; tolerant reading; checks."""
    from camreloc_ros.core.data.formats import read_dataset

    dataset = read_dataset(DATA_DIR, 'posed')
    record = camera_record(dataset)
    k = dataset.intrinsics
    assert k is not None
    assert record == {'width': k.width, 'height': k.height, 'fx': k.fx, 'fy': k.fy,
                      'cx': k.cx, 'cy': k.cy}
    size_only = camera_record(dataset.frames[:3])   # no intrinsics: the image size only
    assert size_only == {'width': k.width, 'height': k.height}
    assert camera_record([]) is None

    assert training_camera({'camera': record}) == record
    assert training_camera({'split': {'camera': size_only}}) == size_only
    for bad in (None, {}, {'camera': 'x'}, {'camera': {'width': 0, 'height': 5}},
                {'camera': {'width': 'a', 'height': 5}}):
        assert training_camera(bad) is None

    same = {'width': 1280, 'height': 960, 'fx': 1170.0, 'fy': 1170.0}   # CAMERA at 2x
    assert camera_mismatch(CAMERA, same, 5.0, 0.02) == []
    wide = dict(CAMERA, fx=400.0, fy=400.0)
    assert field_of_view_deg(640, 400.0) - field_of_view_deg(640, 585.0) > 5.0
    problems = camera_mismatch(CAMERA, wide, 5.0, 0.02)
    assert [p.split()[0] for p in problems] == ['horizontal', 'vertical']
    assert camera_mismatch(CAMERA, wide, 30.0, 0.02) == []
    hd = {'width': 1280, 'height': 720}   # uncalibrated: aspect only
    assert [p.split()[0] for p in camera_mismatch(CAMERA, hd, 5.0, 0.02)] == ['aspect']


def test_camera_check_warns_once_per_difference():
    """A CameraInfo stream that keeps differing is counted each time and warned about once."""
    warnings = []
    check = CameraCheck({'camera': CAMERA}, 5.0, 0.02, False, warnings.append)
    info = CameraInfo(width=1280, height=720)
    info.k = [900.0, 0, 640, 0, 900.0, 360, 0, 0, 1]
    for _ in range(3):
        check.on_camera_info(info)
    assert check.infos == check.mismatches == 3 and len(warnings) == 1
    assert 'aspect ratio 1.778' in warnings[0] and not check.refusing
    info.width, info.height = 640, 480
    info.k = [585.0, 0, 320, 0, 585.0, 240, 0, 0, 1]
    check.on_camera_info(info)
    assert check.problems == [] and check.status() == 'ok' and check.mismatches == 3
    assert CameraCheck({}, 5.0, 0.02, True, warnings.append).status().startswith('off')


def test_onnx_export_carries_the_camera(onnx_model):
    """The ONNX metadata keeps the checkpoint's camera record (a robot needs no checkpoint)."""
    from camreloc_ros.core.inference.onnx_format import load_onnx

    _, meta = load_onnx(onnx_model)
    assert training_camera(meta['extra']) == CAMERA


def test_live_camera_check_warns_and_counts(harness, onnx_model, frame):
    """Matching camera_info: ok. A different one: WARN, counted, poses still published."""
    node = localizer(harness, 'cam', model=str(onnx_model))
    try:
        camera = Camera(harness, 'cam', frame)
        check = node._camera_check
        assert check.training == CAMERA
        camera.info(640, 480, 585.0, 585.0, check)
        camera.pose(100.0)
        status = wait_status(harness, 'cam', lambda s: values(s)['camera_info_received'] != '0')
        assert values(status)['camera_check'] == 'ok'
        assert values(status)['camera_mismatches'] == '0'

        camera.info(640, 480, 300.0, 300.0, check)   # a wide-angle lens, same size
        status = wait_status(harness, 'cam', lambda s: values(s)['camera_mismatches'] != '0')
        assert status.level == DiagnosticStatus.WARN
        assert 'camera differs from training' in status.message
        assert 'horizontal field of view' in values(status)['camera_check']
        camera.pose(101.0)   # warn only: still localized
        assert node._camera_check.refused == 0
    finally:
        harness.remove(node)


def test_live_camera_check_refuses(harness, onnx_model, frame):
    """camera_check.refuse: images are not localized (and counted) while the camera differs."""
    node = localizer(harness, 'refuse', model=str(onnx_model), **{'camera_check.refuse': True})
    try:
        camera = Camera(harness, 'refuse', frame)
        check = node._camera_check
        camera.info(1280, 720, 900.0, 900.0, check)   # 16:9 HD camera
        assert check.refusing
        key = camera.image(200.0)
        assert harness.wait_for(lambda: check.refused == 1, TIMEOUT_S)
        status = wait_status(harness, 'refuse',
                             lambda s: values(s)['camera_refused_images'] == '1')
        assert values(status)['camera_check'].startswith('refusing: aspect ratio 1.778')
        assert key not in camera.poses and node.stats.snapshot()['processed'] == 0
        camera.info(640, 480, 585.0, 585.0, check)   # the right camera again
        camera.pose(201.0)
        assert check.refused == 1
    finally:
        harness.remove(node)


# ---------------------------------------------------------------------------- no torch

RUN_NODE_WITHOUT_TORCH = textwrap.dedent('''
    """Run the node's main() with an .onnx in a thread, feed it an image, report sys.modules.

    argv: model [map image]: with a map the node refines every frame (refine.sync) of the
    image file instead of a grey frame, and the refined poses are counted too.
    """
    import json, sys, threading, time

    import rclpy
    import rclpy.executors
    from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
    from sensor_msgs.msg import Image

    from camreloc_ros.ros import localizer_node
    from camreloc_ros.ros.conversions import rgb_to_image, sec_to_stamp

    model = sys.argv[1]
    map_args = ['-p', f'map:={sys.argv[2]}', '-p', 'refine.sync:=true'] if sys.argv[2:] else []
    result = {'exit': None}

    def run():
        result['exit'] = localizer_node.main(
            ['localizer', '--ros-args', '-p', f'model:={model}', '-p', 'runtime:=onnx',
             '-p', 'qos.reliability:=reliable', *map_args])

    node_thread = threading.Thread(target=run)
    node_thread.start()
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node('probe', context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    poses = []
    refined = []
    probe.create_subscription(PoseStamped, 'pose', poses.append, 10)
    probe.create_subscription(PoseWithCovarianceStamped, 'camreloc/refined_pose',
                              refined.append, 10)
    pub = probe.create_publisher(Image, 'image', 10)
    frame = __import__('numpy').full((240, 320, 3), 90, 'uint8')
    if sys.argv[3:]:
        from camreloc_ros.core.data.transforms import read_rgb
        frame = read_rgb(sys.argv[3])
    deadline = time.monotonic() + 120
    # with a map, until a refined pose came too (its message may trail the pose's)
    while (not poses or (sys.argv[2:] and not refined)) and time.monotonic() < deadline:
        msg = rgb_to_image(frame)
        msg.header.stamp = sec_to_stamp(time.time())
        pub.publish(msg)
        executor.spin_once(timeout_sec=0.2)
    rclpy.shutdown()   # the default context: main() returns
    node_thread.join(30)
    print(json.dumps({'poses': len(poses), 'refined': len(refined), 'exit': result['exit'],
                      'torch': sorted(m for m in sys.modules if m.split('.')[0] == 'torch'),
                      'pose': [poses[0].pose.position.x] if poses else None}))
    probe.destroy_node()
    context.try_shutdown()
''')


def _run_node_without_torch(tmp_path: Path, *args: str) -> dict:
    script = tmp_path / 'run_node.py'
    script.write_text(RUN_NODE_WITHOUT_TORCH)
    env = dict(os.environ, ROS_DOMAIN_ID=str(allocate_domain()),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_LOG_DIR=str(tmp_path / 'log'),
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report['poses'] >= 1 and report['exit'] == 0, (report, proc.stderr[-3000:])
    return report


def test_onnx_node_runs_without_torch(onnx_model, tmp_path):
    """runtime onnx + an .onnx model: the node's process localizes and never imports torch."""
    report = _run_node_without_torch(tmp_path, onnx_model)
    assert report['torch'] == [], f'torch was imported: {report["torch"][:5]}'


def test_onnx_node_refines_with_a_map_without_torch(onnx_model, tmp_path):
    """An .onnx model + a map of the .pt it was exported from: the node refines (the map's
    own ONNX descriptor does the retrieval) and never imports torch."""
    from camreloc_ros.core.data.formats import read_dataset
    from camreloc_ros.core.data.split import split_dataset
    from camreloc_ros.core.io import file_sha256
    from camreloc_ros.core.localization.map_file import save_map
    from camreloc_ros.core.localization.build import build_map
    from camreloc_ros.core.localization.retrieval import GlobalDescriptor
    from camreloc_ros.core.models.pose_model import PoseModel
    from camreloc_ros.tools.common import shared_data_dir

    ckpt = onnx_model.with_suffix('.pt')
    dataset = read_dataset(shared_data_dir() / '7scenes-stairs-mini', '7scenes')
    train = split_dataset(dataset, 'train').frames
    lmap = build_map(train, dataset.intrinsics, GlobalDescriptor(PoseModel.from_checkpoint(ckpt)),
                     meta={'checkpoint': {'path': str(ckpt), 'sha256': file_sha256(ckpt)}},
                     log=lambda s: None)
    assert lmap.descriptor_onnx is not None
    path = save_map(lmap, tmp_path / 'map.npz')
    report = _run_node_without_torch(tmp_path, onnx_model, path, train[2].image_path)
    assert report['refined'] >= 1, report
    assert report['torch'] == [], f'torch was imported: {report["torch"][:5]}'
