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

"""Live refinement: dead reckoning's composition (ROS-free) and the node's ``map`` over rclpy.

The node tests build a small triangulated map of 40 HoloLens frames for a real lite0
checkpoint and check that, with ``refine.sync``, the live ``~/refined_pose`` equals
:meth:`Refiner.refine` run offline on the same images with the same network prior, that
``pose`` carries only what the localizer stands behind (nothing before two refinements
agree), and that the latest-frame refiner localizes a live stream.
"""

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
import numpy as np
import pytest
from rclpy.parameter import Parameter
from support import allocate_domain, ros_environment, RosHarness
from test_map import map_table

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.geometry import (matrix_from_pose, orientation_error_deg,
                                        pose_from_matrix, quat_from_rotvec)
from camreloc_ros.core.localization.correction import compose_correction
from camreloc_ros.tools.common import shared_data_dir

DOMAIN_ID = allocate_domain()
TIMEOUT_S = 60.0
HOLO = shared_data_dir() / 'hololens-office'
pytestmark = pytest.mark.slow   # real DDS and map refinement


def _pose(rng) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=3), quat_from_rotvec(rng.normal(size=3) * 0.5)


# ---------------------------------------------------------------------------- core

def test_correction_removes_a_pure_network_drift_exactly():
    """T_net = D @ T_true at both frames: the corrected pose is the true one (1e-9)."""
    rng = np.random.default_rng(0)
    D = matrix_from_pose(*_pose(rng))                      # the network's bias, any rigid
    for _ in range(20):
        T_ref = matrix_from_pose(*_pose(rng))              # true = refined pose at the ref
        T_now = matrix_from_pose(*_pose(rng))              # true pose later
        net_ref, net_now = D @ T_ref, D @ T_now
        pos, quat, cov = compose_correction(
            *pose_from_matrix(T_ref), np.eye(6) * 1e-4, *pose_from_matrix(net_ref),
            *pose_from_matrix(net_now))
        true_pos, true_quat = pose_from_matrix(T_now)
        np.testing.assert_allclose(pos, true_pos, atol=1e-9)
        assert orientation_error_deg(quat, true_quat) < 1e-6
        assert np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)


def test_covariance_carries_the_refinement_and_grows_with_motion():
    """At the refined frame: the refinement's covariance; further away: larger, with the
    rotation uncertainty turned into position uncertainty through the lever arm."""
    ref_pos, ref_quat = np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0])
    ref_cov = np.diag([1e-4, 1e-4, 1e-4, 1e-6, 1e-6, 1e-6])
    pos, quat, cov = compose_correction(ref_pos, ref_quat, ref_cov, ref_pos, ref_quat,
                                        ref_pos, ref_quat, 0.1)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-15)
    np.testing.assert_allclose(pos, ref_pos, atol=1e-15)
    moved = np.array([2.0, 0.0, 0.0])                      # the network moved 2 m along x
    pos, _, cov = compose_correction(ref_pos, ref_quat, ref_cov, ref_pos, ref_quat, moved,
                                     ref_quat, 0.1)
    np.testing.assert_allclose(pos, moved, atol=1e-12)
    # x: only the motion term; y, z: + (2 m * 1e-3 rad)^2 from the rotation about z / y
    np.testing.assert_allclose(cov[0, 0], 1e-4 + 0.2 ** 2)
    np.testing.assert_allclose(cov[1, 1], 1e-4 + 0.2 ** 2 + 4 * 1e-6)
    np.testing.assert_allclose(cov[3:, 3:], ref_cov[3:, 3:])   # no rotation: no growth


# ---------------------------------------------------------------------------- node

@pytest.fixture(scope='module')
def map_setup(tmp_path_factory):
    """A lite0 checkpoint and a triangulated map of 40 walk frames tied to it; 4 queries."""
    from camreloc_ros.core.io import file_sha256
    from camreloc_ros.core.localization.map_file import save_map
    from camreloc_ros.core.localization.retrieval import GlobalDescriptor
    from camreloc_ros.core.localization.build import build_map
    from camreloc_ros.core.models.pose_model import build_model

    d = tmp_path_factory.mktemp('refine_live')
    dataset = read_dataset(HOLO, 'posed')
    frames = dataset.frames[:48]
    queries = [f for f in frames if f.index in (12, 20, 28, 36)]
    train = [f for f in frames if f not in queries][:40]
    pos = np.stack([f.pose_c2w[:3, 3] for f in train])
    model = build_model('posenet', head={'width': 64})
    model.set_pose_stats(pos.mean(axis=0), max(float(np.linalg.norm(pos.std(axis=0))), 0.1))
    ckpt = model.save_checkpoint(d / 'model.pt', extra={'data': {'format': 'posed'}})
    meta = {'checkpoint': {'path': str(ckpt.resolve()), 'sha256': file_sha256(ckpt)}}
    lmap = build_map(train, dataset.intrinsics, GlobalDescriptor(model),
                     {'sift': {'max_keypoints': 1024}}, meta=meta, log=lambda s: None)
    path = save_map(lmap, d / 'map.npz')
    return ckpt, path, queries


def test_node_refined_poses_equal_the_offline_refiner(map_setup, tmp_path):
    """refine.sync: ~/refined_pose == Refiner.refine offline on the same frames and prior;
    the pose topic carries the refinement too; diagnostics report the refiner."""
    from camreloc_ros.core.inference.engine import InferenceEngine
    from camreloc_ros.core.localization.refiner import Refiner

    ckpt, map_path, queries = map_setup
    images = [read_rgb(f.image_path) for f in queries]
    engine = InferenceEngine.from_checkpoint(ckpt, runtime='torch', device='cpu')
    refiner = Refiner.from_files(map_path, ckpt)
    offline = []
    for image in images:
        pred = engine.predict(image)
        offline.append(refiner.refine(image, pred.position, pred.quaternion, pred.covariance))
    assert sum(r.refined for r in offline) >= 2, [r.reason for r in offline]

    with ros_environment(DOMAIN_ID, tmp_path / 'ros_log'):
        ros = RosHarness(DOMAIN_ID)
        node = None
        try:
            node, send, refined, diags = _sync_node_run(ros, 'live', ckpt, map_path)
            # each image twice (a camera still for two frames): the queries are 8 walk frames
            # apart, too far to track, and localizing needs a second refinement that agrees
            # with a track (a network carry confirms nothing)
            twice = [k for k in range(len(images)) for _ in range(2)]
            sent = [send(images[k], 100.0 + 0.1 * n) for n, k in enumerate(twice)]
            assert sent[0][1] is None and sent[0][2] == 'not_localized', sent[0]
            published = 0
            for (key, got, state, values), res in zip(sent, [offline[k] for k in twice]):
                if not res.refined:   # fallback: no refined_pose
                    assert key not in refined
                    continue
                assert ros.wait_for(lambda: key in refined, TIMEOUT_S)
                msg = refined[key]
                assert msg.header.frame_id == 'map'
                p, q = msg.pose.pose.position, msg.pose.pose.orientation
                np.testing.assert_allclose([p.x, p.y, p.z], res.position, atol=1e-6)
                np.testing.assert_allclose([q.x, q.y, q.z, q.w], res.quaternion, atol=1e-6)
                cov = np.asarray(msg.pose.covariance).reshape(6, 6)
                np.testing.assert_allclose(cov, refiner.map.calibrated_covariance(
                    'refined', res.covariance), rtol=1e-6, atol=1e-12)
                if got is not None and values['source'] == 'refined':
                    # a localized frame's pose is its own refinement (no motion since)
                    assert state == 'localized'
                    np.testing.assert_allclose(got, res.position, atol=1e-6)
                    published += 1
            assert published >= 1, [s[2:] for s in sent]
            done = str(2 * sum(r.refined for r in offline))

            def refiner_diag():
                return _diag_values(diags, 'live', lambda v: v.get('refine_refined') == done)
            assert ros.wait_for(refiner_diag, TIMEOUT_S), 'no refiner values in diagnostics'
            values = refiner_diag()
            assert values['refine_fallbacks'] == str(2 * sum(not r.refined for r in offline))
            assert values['refine_map'] == str(map_path)
            for key in ('refine_rate_hz', 'refine_last_inliers', 'refine_last_age_s'):
                assert key in values
        finally:
            if node is not None:
                ros.remove(node)
            ros.shutdown()


def _sync_node_run(ros, namespace: str, ckpt, map_path):
    """A refine.sync node in ``namespace``: (node, publish(image, stamp) -> its pose, refined
    poses by stamp (ns), diagnostics received)."""
    from sensor_msgs.msg import Image

    from camreloc_ros.ros.conversions import rgb_to_image, sec_to_stamp, stamp_to_ns

    lock = threading.Lock()
    refined, poses, diags, states = {}, {}, [], {}

    def keep(store):
        def callback(msg):
            with lock:
                store[stamp_to_ns(msg.header.stamp)] = msg
        return callback
    ros.node.create_subscription(PoseWithCovarianceStamped,
                                 f'/{namespace}/camreloc/refined_pose', keep(refined), 10)
    ros.node.create_subscription(PoseStamped, f'/{namespace}/pose', keep(poses), 10)
    ros.node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    ros.node.create_subscription(DiagnosticArray, f'/{namespace}/camreloc/localization_status',
                                 keep(states), 10)
    node = ros.localizer(namespace, model=str(ckpt), map=str(map_path), runtime='torch',
                         **{'refine.sync': True, 'qos.reliability': 'reliable',
                            'diagnostics_period': 0.2})
    assert node.is_active, 'the node with a map did not activate'
    pub = ros.node.create_publisher(Image, f'/{namespace}/image', 10)
    assert ros.wait_for(lambda: pub.get_subscription_count() > 0, TIMEOUT_S)

    def send(image, stamp):
        msg = rgb_to_image(image, 'rgb8')
        msg.header.stamp = sec_to_stamp(stamp)
        key = stamp_to_ns(msg.header.stamp)
        pub.publish(msg)
        assert ros.wait_for(lambda: key in states, TIMEOUT_S), f'no state at {stamp}'
        status = states[key].status[0]
        values = {v.key: v.value for v in status.values}
        if values.get('published') != 'true':
            return key, None, status.message, values
        assert ros.wait_for(lambda: key in poses, TIMEOUT_S), f'no pose at {stamp}'
        p = poses[key].pose.position
        return key, np.array([p.x, p.y, p.z]), status.message, values
    return node, send, refined, diags


def _diag_values(diags, namespace: str, predicate) -> dict | None:
    """The newest diagnostics values of the node in ``namespace`` that satisfy ``predicate``."""
    for arr in reversed(list(diags)):
        for status in arr.status:
            values = {v.key: v.value for v in status.values}
            if status.name.startswith(f'{namespace}/camreloc') and predicate(values):
                return values
    return None


def test_node_refines_a_zoomed_lens_with_camera_infos_k(map_setup, tmp_path):
    """Issue #18: a 2x lens (centre half upscaled) with a truthful camera_info. The node's
    refinements equal the offline refiner's with that camera's K (within 0.1 m of the truth),
    not the map's K (a metre off with a centimetre covariance); diagnostics name the source."""
    from sensor_msgs.msg import CameraInfo
    from test_refiner_intrinsics import zoom_2x, zoomed_camera

    from camreloc_ros.core.inference.engine import InferenceEngine
    from camreloc_ros.core.localization.refiner import Refiner

    ckpt, map_path, queries = map_setup
    images = [zoom_2x(read_rgb(f.image_path)) for f in queries]
    camera = zoomed_camera(read_dataset(HOLO, 'posed').intrinsics)
    engine = InferenceEngine.from_checkpoint(ckpt, runtime='torch', device='cpu')
    refiner = Refiner.from_files(map_path, ckpt)
    K = camera.matrix()
    offline = []
    for image in images:
        pred = engine.predict(image)
        offline.append(refiner.refine(image, pred.position, pred.quaternion, pred.covariance,
                                      K=K))
    assert sum(r.refined for r in offline) >= 1, [r.reason for r in offline]
    for res, frame in zip(offline, queries):
        if res.refined:
            assert np.linalg.norm(res.position - frame.pose_c2w[:3, 3]) < 0.1
    domain = allocate_domain()
    with ros_environment(domain, tmp_path / 'ros_log'):
        ros = RosHarness(domain)
        node = None
        try:
            node, send, refined, diags = _sync_node_run(ros, 'zoom', ckpt, map_path)
            info = CameraInfo(width=camera.width, height=camera.height)
            info.k = [float(v) for v in K.ravel()]
            info_pub = ros.node.create_publisher(CameraInfo, '/zoom/camera_info', 10)
            assert ros.wait_for(lambda: info_pub.get_subscription_count() > 0, TIMEOUT_S)
            info_pub.publish(info)
            assert ros.wait_for(lambda: node._camera_check.values()['camera_info_received'],
                                TIMEOUT_S), 'the node never heard the camera_info'
            for k, (image, res) in enumerate(zip(images, offline)):
                key, got, state, values = send(image, 300.0 + 0.1 * k)
                if not res.refined:
                    continue
                assert ros.wait_for(lambda: key in refined, TIMEOUT_S)
                p = refined[key].pose.pose.position
                np.testing.assert_allclose([p.x, p.y, p.z], res.position, atol=1e-6)
                if got is not None and values['source'] == 'refined':
                    np.testing.assert_allclose(got, res.position, atol=1e-6)
            done = str(sum(r.refined for r in offline))

            def after_all():
                return _diag_values(diags, 'zoom', lambda v: v.get('refine_refined') == done)
            assert ros.wait_for(lambda: after_all() is not None, TIMEOUT_S)
            values = after_all()
            assert values['refine_intrinsics'].startswith(
                f'camera_info ({camera.width}x{camera.height}, fx {camera.fx:.1f}'), values
        finally:
            if node is not None:
                ros.remove(node)
            ros.shutdown()


def test_node_localizes_again_after_a_jump_back_in_time(map_setup, tmp_path):
    """A bag replayed from an earlier stamp: the jump resets the localization (the frame
    right after it is not_localized, nothing on pose), and two consistent refinements later
    the node is localized again and publishes the refinement; the jump is in diagnostics."""
    from camreloc_ros.core.inference.engine import InferenceEngine
    from camreloc_ros.core.localization.refiner import Refiner

    ckpt, map_path, queries = map_setup
    images = [read_rgb(f.image_path) for f in queries]
    engine = InferenceEngine.from_checkpoint(ckpt, runtime='torch', device='cpu')
    refiner = Refiner.from_files(map_path, ckpt)
    nets = [engine.predict(image) for image in images]
    a = next(k for k, (im, p) in enumerate(zip(images, nets))
             if refiner.refine(im, p.position, p.quaternion, p.covariance).refined)
    ref = refiner.refine(images[a], nets[a].position, nets[a].quaternion, nets[a].covariance)
    domain = allocate_domain()
    with ros_environment(domain, tmp_path / 'ros_log'):
        ros = RosHarness(domain)
        node = None
        try:
            node, send, refined, diags = _sync_node_run(ros, 'jump', ckpt, map_path)
            states = [send(images[a], stamp)[1:3] for stamp in (200.0, 200.1, 200.2)]
            assert [s for _, s in states] == ['not_localized', 'localized', 'localized']
            np.testing.assert_allclose(states[1][0], ref.position, atol=1e-6)
            after = [send(images[a], stamp)[1:3] for stamp in (50.0, 50.1)]   # back 150 s
            assert after[0] == (None, 'not_localized'), after[0]
            assert after[1][1] == 'localized'
            np.testing.assert_allclose(after[1][0], ref.position, atol=1e-6)
            assert ros.wait_for(lambda: _diag_values(
                diags, 'jump', lambda v: v.get('refine_time_jumps') == '1') is not None,
                TIMEOUT_S), 'the jump is not in diagnostics'
        finally:
            if node is not None:
                ros.remove(node)
            ros.shutdown()


# ---------------------------------------------------------------------------- bag-eval --map

def test_bag_eval_map_writes_the_evaluate_map_table(map_setup, tmp_path):
    """``bag-eval --map``: evaluate --map's rows, refined poses equal to the offline refiner
    on the bag's images with the network's priors; a bad map is refused before any work."""
    import json

    from camreloc_ros.core.inference.engine import InferenceEngine
    from camreloc_ros.core.evaluation.metrics import load_per_frame
    from camreloc_ros.core.localization.map_file import MapError
    from camreloc_ros.core.localization.refiner import Refiner
    from camreloc_ros.tools import bag_eval, bag_from_dataset

    ckpt, map_path, _ = map_setup
    bag = bag_from_dataset.main({'format': 'posed', 'limit': 5},
                                {'data': HOLO, 'out': tmp_path / 'bag'})
    conf = {'image_topic': '/camera/image_raw', 'gt_topic': '/ground_truth/pose',
            'device': 'cpu'}
    with pytest.raises(MapError, match='does not exist'):
        bag_eval.main(conf, {'bag': bag, 'checkpoint': ckpt, 'out': tmp_path / 'bad',
                             'map': tmp_path / 'missing.npz'})
    assert not (tmp_path / 'bad').exists()
    out = bag_eval.main(conf, {'bag': bag, 'checkpoint': ckpt, 'out': tmp_path / 'ev',
                               'map': map_path})
    map_table(out)
    summary = json.loads((out / 'map_summary.json').read_text())
    assert abs(summary['shares']['refined'] + summary['shares']['fallback'] - 1.0) < 1e-9
    assert len((out / 'refine_per_frame.txt').read_text().splitlines()) == 1 + 5
    # the same refinement offline: images of the dataset, the network's priors
    frames = read_dataset(HOLO, 'posed').frames[:5]
    engine = InferenceEngine.from_checkpoint(ckpt, runtime='torch', device='cpu')
    refiner = Refiner.from_files(map_path, ckpt)
    got = load_per_frame(out / 'refined' / 'per_frame.txt')
    for k, frame in enumerate(frames):
        image = read_rgb(frame.image_path)
        pred = engine.predict(image)
        res = refiner.refine(image, pred.position, pred.quaternion, pred.covariance)
        np.testing.assert_allclose(got['position'][k], res.position, atol=1e-5)


def test_node_latest_frame_refiner_localizes_a_stream(map_setup, tmp_path):
    """refine.sync false: frames at 10 Hz; the refiner runs in its own thread (nice 19).
    Before two refinements agree nothing goes out on pose, every frame's network pose goes
    to ~/network_pose; then the node turns localized (~/localized true, latched: a late
    subscriber gets it), tracked poses follow the refined one to millimetres (a still
    camera), and ~/reset makes it not_localized again."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    from camreloc_ros.core.inference.engine import InferenceEngine
    from camreloc_ros.core.localization.refiner import Refiner
    from camreloc_ros.ros.conversions import rgb_to_image, sec_to_stamp, stamp_to_ns
    from camreloc_ros.ros.localizer_node import LocalizerNode
    from camreloc_ros.ros.qos import LATCHED_QOS

    ckpt, map_path, queries = map_setup
    images = [read_rgb(f.image_path) for f in queries]
    engine = InferenceEngine.from_checkpoint(ckpt, runtime='torch', device='cpu')
    refiner = Refiner.from_files(map_path, ckpt)
    nets = [engine.predict(image) for image in images]
    a = next(k for k, (im, p) in enumerate(zip(images, nets))
             if refiner.refine(im, p.position, p.quaternion, p.covariance).refined)
    ref = refiner.refine(images[a], nets[a].position, nets[a].quaternion, nets[a].covariance)
    domain = allocate_domain()
    with ros_environment(domain, tmp_path / 'ros_log'):
        ros = RosHarness(domain)
        node = None
        try:
            lock = threading.Lock()
            poses, nets_out, states = {}, {}, {}

            def keep(store):
                def callback(msg):
                    with lock:
                        store[stamp_to_ns(msg.header.stamp)] = msg
                return callback
            ros.node.create_subscription(PoseWithCovarianceStamped,
                                         '/async/pose_with_covariance', keep(poses), 10)
            ros.node.create_subscription(PoseWithCovarianceStamped,
                                         '/async/camreloc/network_pose', keep(nets_out), 10)
            ros.node.create_subscription(DiagnosticArray, '/async/camreloc/localization_status',
                                         keep(states), 10)
            params = {'model': str(ckpt), 'map': str(map_path), 'runtime': 'torch',
                      'device': 'cpu', 'qos.reliability': 'reliable', 'refine.period': 0.0}
            node = ros.add(LocalizerNode(
                namespace='async', context=ros.context,
                parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
            assert node.is_active
            pub = ros.node.create_publisher(Image, '/async/image', 10)
            assert ros.wait_for(lambda: pub.get_subscription_count() > 0, TIMEOUT_S)
            msg = rgb_to_image(images[a], 'rgb8')
            sent = []
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                stamp = 200.0 + 0.1 * len(sent)
                msg.header.stamp = sec_to_stamp(stamp)
                key = stamp_to_ns(msg.header.stamp)
                pub.publish(msg)
                assert ros.wait_for(lambda: key in states, TIMEOUT_S), f'no state at {stamp}'
                sent.append(key)
                values = {v.key: v.value for v in states[key].status[0].values}
                if values.get('published') == 'true':   # the status goes out before the pose
                    assert ros.wait_for(lambda: key in poses, TIMEOUT_S), f'no pose at {stamp}'
                    break
                time.sleep(0.1)
            first = sent[-1]
            assert first in poses, 'never localized'
            for key in sent:   # every frame: its network pose and its state
                assert ros.wait_for(lambda: key in nets_out, TIMEOUT_S)
                if key != first:
                    assert key not in poses and states[key].status[0].message != 'localized'
            assert states[first].status[0].message == 'localized'
            p = poses[first].pose.pose.position
            assert np.linalg.norm(np.array([p.x, p.y, p.z]) - ref.position) < 0.01
            # latched: a subscriber that comes late still learns the node is localized
            late = []
            ros.node.create_subscription(Bool, '/async/camreloc/localized', late.append,
                                         LATCHED_QOS)
            assert ros.wait_for(lambda: late and late[-1].data is True, TIMEOUT_S)
            values = node._refiner.diagnostics()
            assert values['localization_state'] == 'localized'
            assert values['refine_priority'].startswith('nice')
            assert int(values['localization_refinements_accepted']) >= 1
            assert int(values['localization_relocalizations']) >= 1
            client = ros.node.create_client(Trigger, '/async/camreloc/reset')
            assert client.wait_for_service(timeout_sec=TIMEOUT_S)
            future = client.call_async(Trigger.Request())
            assert ros.wait_for(future.done, TIMEOUT_S) and future.result().success
            assert ros.wait_for(lambda: late[-1].data is False, TIMEOUT_S)
        finally:
            if node is not None:
                ros.remove(node)
            ros.shutdown()


def test_node_refuses_a_bad_map_clearly(map_setup, tmp_path):
    """A missing or corrupt map, or one of another scene frame than the network's: configure
    fails with the map named, the node stays up."""
    import torch
    from camreloc_ros.core.localization.map_file import load_map, save_map
    from camreloc_ros.core.models.pose_model import load_checkpoint_file
    from camreloc_ros.ros.localizer_node import LocalizerNode

    ckpt, map_path, _ = map_setup
    corrupt = tmp_path / 'corrupt.npz'
    corrupt.write_bytes(b'not a map' * 10)
    lmap = load_map(map_path)      # a map of frame a..., a network retrained in frame b...
    lmap.meta['scene_frame'] = {'id': 'a' * 32, 'frames': 48, 'source': 'walk'}
    framed = save_map(lmap, tmp_path / 'framed.npz')
    state = load_checkpoint_file(ckpt)
    state['extra']['scene_frame'] = {'id': 'b' * 32, 'frames': 9, 'source': 'elsewhere'}
    torch.save(state, tmp_path / 'elsewhere.pt')
    cases = [(str(ckpt), str(tmp_path / 'missing.npz'), 'does not exist'),
             (str(ckpt), str(corrupt), 'not a readable .npz'),
             (str(tmp_path / 'elsewhere.pt'), str(framed), 'but checkpoint '
              f'{tmp_path / "elsewhere.pt"} was trained in scene frame bbbbbbbbbbbb')]
    domain = allocate_domain()
    with ros_environment(domain, tmp_path / 'ros_log'):
        ros = RosHarness(domain)
        try:
            for k, (model, map_path, message) in enumerate(cases):
                params = {'model': model, 'map': map_path, 'runtime': 'torch',
                          'device': 'cpu', 'autostart': False}
                node = LocalizerNode(namespace=f'bad{k}', context=ros.context,
                                     parameter_overrides=[Parameter(n, value=v)
                                                          for n, v in params.items()])
                try:
                    node.trigger_configure()
                    assert not node.is_active and node.engine is None
                    assert message in (node.health.error or ''), node.health.error
                finally:
                    node.destroy_node()
        finally:
            ros.shutdown()
