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

"""Bag tools over real rosbag2 files (sqlite3 and mcap) of the hololens-office walk, no ROS.

Test bags are written here with rosbags directly (not with the package's writer), so reading,
ground truth and evaluation are checked against files made independently of the code under
test.
"""

import argparse
import json
from pathlib import Path
import shutil

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores
from scipy.spatial.transform import Rotation, Slerp
import yaml

from camreloc_ros.core import bags
from camreloc_ros.core import geometry as g
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset, train_val_split
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.evaluation.metrics import load_per_frame, load_tum
from camreloc_ros.core.robot.messages import NS
from camreloc_ros.core.models.pose_model import build_model
from camreloc_ros.tools import bag_eval, bag_from_dataset, cli, evaluate, train
from camreloc_ros.tools.common import load_bag_frames, shared_data_dir

DATA = shared_data_dir() / 'hololens-office'
BLOCK, EVERY = 25, 4
VAL_BLOCK, VAL_EVERY = 25, 8     # training.default_conf['data']['val_block' / 'val_every']
N_EVAL = 30             # test-split frames 75..99 and 175..179: two blocks, a time gap
IMAGE_TOPIC = '/camera/image_raw'
JPEG_TOPIC = '/camera/image_raw/compressed'
GT_TOPIC = '/ground_truth/pose'

pytestmark = pytest.mark.timeout(300)

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types


# ---------------------------------------------------------------------------- bag writing

def _time(ns: int):
    return T['builtin_interfaces/msg/Time'](sec=int(ns) // NS, nanosec=int(ns) % NS)


def _header(ns: int, frame: str):
    return T['std_msgs/msg/Header'](stamp=_time(ns), frame_id=frame)


def _pose(t, q):
    return T['geometry_msgs/msg/Pose'](
        position=T['geometry_msgs/msg/Point'](x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=T['geometry_msgs/msg/Quaternion'](x=float(q[0]), y=float(q[1]),
                                                      z=float(q[2]), w=float(q[3])))


def _transform(ns: int, parent: str, child: str, t, q):
    return T['geometry_msgs/msg/TransformStamped'](
        header=_header(ns, parent), child_frame_id=child,
        transform=T['geometry_msgs/msg/Transform'](
            translation=T['geometry_msgs/msg/Vector3'](x=float(t[0]), y=float(t[1]),
                                                       z=float(t[2])),
            rotation=T['geometry_msgs/msg/Quaternion'](x=float(q[0]), y=float(q[1]),
                                                       z=float(q[2]), w=float(q[3]))))


class RawBag:
    """A rosbags Writer with the kilted typestore and one connection per topic."""

    def __init__(self, path: Path, storage: str):
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.conns = {}

    def __enter__(self):
        self.writer.open()
        return self

    def __exit__(self, *exc):
        self.writer.close()

    def write(self, topic: str, msgtype: str, ns: int, msg) -> None:
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=TS)
        self.writer.write(self.conns[topic], int(ns), TS.serialize_cdr(msg, msgtype))

    def image(self, ns: int, path: Path, jpeg: bool) -> None:
        if jpeg:
            msg = T['sensor_msgs/msg/CompressedImage'](
                header=_header(ns, 'camera'), format='rgb8; jpeg compressed bgr8',
                data=np.frombuffer(path.read_bytes(), np.uint8))
            self.write(JPEG_TOPIC, 'sensor_msgs/msg/CompressedImage', ns, msg)
        else:
            rgb = read_rgb(path)
            msg = T['sensor_msgs/msg/Image'](
                header=_header(ns, 'camera'), height=rgb.shape[0], width=rgb.shape[1],
                encoding='rgb8', is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1))
            self.write(IMAGE_TOPIC, 'sensor_msgs/msg/Image', ns, msg)

    def gt_pose(self, ns: int, t, q, topic: str = GT_TOPIC) -> None:
        msg = T['geometry_msgs/msg/PoseStamped'](header=_header(ns, 'map'), pose=_pose(t, q))
        self.write(topic, 'geometry_msgs/msg/PoseStamped', ns, msg)

    def tf(self, ns: int, transforms: list, static: bool = False) -> None:
        topic = '/tf_static' if static else '/tf'
        self.write(topic, 'tf2_msgs/msg/TFMessage', ns,
                   T['tf2_msgs/msg/TFMessage'](transforms=transforms))


# map -> odom: a fixed offset, so the chained TF ground truth is a real composition
ODOM_T = np.array([0.7, -1.2, 0.3])
ODOM_Q = g.quat_from_rotvec([0.1, -0.4, 0.25])


def stamp_of(frame) -> int:
    return 1000 * NS + frame.index * NS // 10


def write_frames_bag(path: Path, storage: str, frames, jpeg: bool, gt: str,
                     gt_shift_ns: int = 0) -> Path:
    """Images of ``frames`` (10 Hz by index) with ground truth as PoseStamped or chained TF."""
    with RawBag(path, storage) as bag:
        if gt == 'tf':
            first = stamp_of(frames[0])
            bag.tf(first, [_transform(first, 'map', 'odom', ODOM_T, ODOM_Q)], static=True)
        inv_t, inv_q = g.pose_invert(ODOM_T, ODOM_Q)
        for f in frames:
            ns = stamp_of(f)
            bag.image(ns, f.image_path, jpeg)
            t, q = g.pose_from_matrix(f.pose_c2w)
            if gt == 'pose':
                bag.gt_pose(ns + gt_shift_ns, t, q)
            else:
                t_oc, q_oc = g.pose_compose(inv_t, inv_q, t, q)
                bag.tf(ns, [_transform(ns + gt_shift_ns, 'odom', 'camera', t_oc, q_oc)])
    return path


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def dataset():
    return read_dataset(DATA, 'posed')


@pytest.fixture(scope='module')
def eval_frames(dataset):
    return split_dataset(dataset, 'test', BLOCK, EVERY).frames[:N_EVAL]


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory, dataset):
    """An untrained lite0 regressor with the training split's pose statistics."""
    train_frames = split_dataset(dataset, 'train', BLOCK, EVERY).frames
    pos = np.stack([f.pose_c2w[:3, 3] for f in train_frames])
    model = build_model('posenet', backbone={'pretrained': False})
    model.set_pose_stats(pos.mean(axis=0), float(np.linalg.norm(pos.std(axis=0))))
    return model.save_checkpoint(
        tmp_path_factory.mktemp('ckpt') / 'posenet.pt',
        extra={'data': {'format': 'posed', 'block': BLOCK, 'every': EVERY}})


@pytest.fixture(scope='module')
def reference(ckpt, tmp_path_factory):
    """``evaluate`` on the first N_EVAL test frames: the numbers bag-eval must reproduce."""
    out = evaluate.main({'device': 'cpu', 'limit': N_EVAL, 'baselines': False},
                        {'checkpoint': ckpt, 'data': DATA,
                         'out': tmp_path_factory.mktemp('evaluate')})
    return load_per_frame(out / 'per_frame.txt')


@pytest.fixture(scope='module')
def bag_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('bags')


@pytest.fixture(scope='module')
def jpeg_mcap(bag_dir, eval_frames):
    return write_frames_bag(bag_dir / 'jpeg_pose_mcap', 'mcap', eval_frames, True, 'pose')


def _eval(bag: Path, ckpt: Path, out: Path, **conf) -> Path:
    topic = JPEG_TOPIC if 'jpeg' in bag.name else IMAGE_TOPIC
    gt = {'gt_tf': 'map:camera'} if '_tf_' in bag.name else {'gt_topic': GT_TOPIC}
    return bag_eval.main(dict({'image_topic': topic, 'device': 'cpu', 'batch_size': 8}, **gt,
                              **conf), {'bag': bag, 'checkpoint': ckpt, 'out': out})


# ---------------------------------------------------------------------------- bag-eval

@pytest.mark.slow   # writes and evaluates or trains from bags, 8-60 s
@pytest.mark.parametrize('storage,image,gt', [('mcap', 'raw', 'pose'), ('sqlite3', 'jpeg', 'tf')])
def test_bag_eval_equals_evaluate(storage, image, gt, ckpt, reference, eval_frames,
                                  bag_dir, tmp_path, capsys):
    bag = write_frames_bag(bag_dir / f'{image}_{gt}_{storage}', storage, eval_frames,
                           image == 'jpeg', gt)
    out = _eval(bag, ckpt, tmp_path / 'out')
    printed = capsys.readouterr().out
    assert 'median pos (m)' in printed and f'{N_EVAL} images on' in printed
    per = load_per_frame(out / 'per_frame.txt')
    assert len(per['names']) == N_EVAL
    for key in ('position', 'quaternion', 'pos_err_m', 'rot_err_deg'):
        np.testing.assert_allclose(per[key], reference[key], atol=1e-4, err_msg=key)
    stamps, gt_pos, _ = load_tum(out / 'gt_tum.txt')
    np.testing.assert_allclose(stamps, [stamp_of(f) / NS for f in eval_frames], atol=1e-6)
    np.testing.assert_allclose(gt_pos, [f.pose_c2w[:3, 3] for f in eval_frames], atol=1e-9)
    for name in ('pred_tum.txt', 'summary.json', 'results.md', 'trajectory_topdown.png',
                 'error_cdf.png', 'bag_eval.json'):
        assert (out / name).is_file(), name
    info = json.loads((out / 'bag_eval.json').read_text())
    assert info['images'] == N_EVAL and info['outside_tolerance'] == 0
    if gt == 'tf':
        assert info['ground_truth'] == 'TF map -> camera (via odom)'


@pytest.mark.slow   # writes and evaluates or trains from bags, 8-60 s
def test_write_bag_reads_back(jpeg_mcap, ckpt, tmp_path, eval_frames):
    written = tmp_path / 'pred_bag'
    # path_period 0: a Path with every frame, so every topic has one message per frame
    out = _eval(jpeg_mcap, ckpt, tmp_path / 'out', write_bag=written, storage='sqlite3',
                with_images=True, path_period=0.0)
    per = load_per_frame(out / 'per_frame.txt')
    stamps = [stamp_of(f) for f in eval_frames]
    got: dict = {}
    with Reader(written) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert reader.message_count > 0
        for conn, log_ns, raw in reader.messages():
            got.setdefault(conn.topic, []).append((log_ns, TS.deserialize_cdr(raw, conn.msgtype)))
    assert (written / f'{written.name}.db3').is_file()
    assert types == {
        '/camreloc/pose': 'geometry_msgs/msg/PoseStamped',
        '/camreloc/pose_with_covariance': 'geometry_msgs/msg/PoseWithCovarianceStamped',
        '/tf': 'tf2_msgs/msg/TFMessage', '/camreloc/path': 'nav_msgs/msg/Path',
        '/camreloc/ground_truth': 'geometry_msgs/msg/PoseStamped',
        JPEG_TOPIC: 'sensor_msgs/msg/CompressedImage'}
    for topic, msgs in got.items():
        assert len(msgs) == N_EVAL, topic
        assert [log for log, _ in msgs] == stamps, topic     # recorded as the source
    for topic in ('/camreloc/pose', '/camreloc/pose_with_covariance', '/camreloc/ground_truth',
                  JPEG_TOPIC, '/camreloc/path'):
        assert [m.header.stamp.sec * NS + m.header.stamp.nanosec
                for _, m in got[topic]] == stamps, topic
    pose = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z]
                     for _, m in got['/camreloc/pose']])
    np.testing.assert_allclose(pose, per['position'], atol=1e-6)
    assert got['/camreloc/pose'][0][1].header.frame_id == 'map'
    cov = got['/camreloc/pose_with_covariance'][0][1].pose.covariance.reshape(6, 6)
    assert np.all(np.diag(cov) > 0) and np.allclose(cov, cov.T)
    tf = got['/tf'][3][1].transforms
    assert [(t.header.frame_id, t.child_frame_id) for t in tf] == [
        ('map', 'camreloc_camera'), ('map', 'camreloc_ground_truth')]
    assert tf[0].transform.translation.x == pytest.approx(per['position'][3, 0], abs=1e-6)
    gt = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z]
                   for _, m in got['/camreloc/ground_truth']])
    np.testing.assert_allclose(gt, [f.pose_c2w[:3, 3] for f in eval_frames], atol=1e-9)
    assert [len(m.poses) for _, m in got['/camreloc/path']] == list(range(1, N_EVAL + 1))
    image = got[JPEG_TOPIC][0][1]
    assert image.data.tobytes() == eval_frames[0].image_path.read_bytes()


@pytest.mark.slow   # writes and evaluates or trains from bags, 8-60 s
def test_write_bag_paths_come_every_path_period_not_every_frame(jpeg_mcap, ckpt, tmp_path):
    """A Path per frame grows as frames x path_length: by default one per second of bag time."""
    written = tmp_path / 'pred_bag'
    _eval(jpeg_mcap, ckpt, tmp_path / 'out', write_bag=written, path_period=0.5)
    with Reader(written) as reader:
        conns = [c for c in reader.connections if c.topic == '/camreloc/path']
        paths = [(log, TS.deserialize_cdr(raw, c.msgtype))
                 for c, log, raw in reader.messages(connections=conns)]
        poses = sum(c.msgcount for c in reader.connections if c.topic == '/camreloc/pose')
    logs = [log for log, _ in paths]
    assert all(b - a >= NS // 2 for a, b in zip(logs[:-2], logs[1:-1]))   # last: the final one
    assert len(paths) < poses and len(paths[-1][1].poses) == poses


# ---------------------------------------------------------------------------- ground truth

@pytest.mark.slow   # writes and evaluates or trains from bags, 8-60 s
def test_gt_interpolation_midway_and_tolerance(dataset, ckpt, tmp_path, capsys):
    """Images between two GT samples get linear + slerp poses; others are counted."""
    frames = dataset.frames
    poses = [g.pose_from_matrix(f.pose_c2w) for f in frames[:40]]
    base = 5000 * NS
    image_ns = [base + k * NS for k in range(6)]
    d = NS // 50   # 0.02 s
    with RawBag(tmp_path / 'interp', 'mcap') as bag:
        for k, ns in enumerate(image_ns):
            bag.image(ns, frames[k].image_path, jpeg=True)
        for k in range(3):          # two samples 0.02 s either side: interpolated midway
            bag.gt_pose(image_ns[k] - d, *poses[k])
            bag.gt_pose(image_ns[k] + d, *poses[k + 20])
        bag.gt_pose(image_ns[3] - d // 2, *poses[3])        # near one side only
        bag.gt_pose(image_ns[3] + 3 * NS // 10, *poses[23])  # 0.3 s: too far to use
        bag.gt_pose(image_ns[4] + 3 * d // 2, *poses[4])     # one sample 0.03 s after
        bag.gt_pose(image_ns[5] - NS // 5, *poses[5])         # 0.2 s before: outside
    with bags.Bag(tmp_path / 'interp') as bag:
        scan = bags.scan_bag(bag, JPEG_TOPIC, gt_topic=GT_TOPIC, tolerance=0.05)
    assert scan.gt_ok.tolist() == [True] * 5 + [False] and scan.outside == 1
    for k in range(3):
        (t0, q0), (t1, q1) = poses[k], poses[k + 20]
        np.testing.assert_allclose(scan.gt_pos[k], (t0 + t1) / 2, atol=1e-12)
        rot = Slerp([0.0, 1.0], Rotation.from_quat([q0, q1]))([0.5])[0]
        assert g.orientation_error_deg(scan.gt_quat[k], rot.as_quat()) < 1e-6
    np.testing.assert_allclose(scan.gt_pos[3], poses[3][0])
    np.testing.assert_allclose(scan.gt_pos[4], poses[4][0])
    assert np.all(np.isnan(scan.gt_pos[5]))

    out = bag_eval.main({'image_topic': JPEG_TOPIC, 'gt_topic': GT_TOPIC, 'device': 'cpu'},
                        {'bag': tmp_path / 'interp', 'checkpoint': ckpt, 'out': tmp_path / 'o'})
    assert '1 of 6 images have no ground truth within 0.05 s' in capsys.readouterr().out
    info = json.loads((out / 'bag_eval.json').read_text())
    assert info['outside_tolerance'] == 1 and info['outside_tolerance_stamps'] == [5005.0]
    assert len(load_per_frame(out / 'per_frame.txt')['names']) == 5
    # A wider tolerance reaches the far sample: then frame 5 is scored as well.
    with bags.Bag(tmp_path / 'interp') as bag:
        assert bags.scan_bag(bag, JPEG_TOPIC, gt_topic=GT_TOPIC, tolerance=0.25).outside == 0


def test_trajectory_rules():
    traj = bags.Trajectory([10 * NS, 11 * NS], [[0, 0, 0], [1, 0, 0]],
                           [[0, 0, 0, 1], [0, 0, 0, 1]])
    times = [10 * NS, 10 * NS + NS // 2, 9 * NS, 11 * NS + NS // 20, 12 * NS]
    pos, _, ok = traj.at(times, 0.6)
    assert ok.tolist() == [True, True, False, True, False]
    np.testing.assert_allclose(pos[:2, 0], [0.0, 0.5])
    np.testing.assert_allclose(pos[3], [1, 0, 0])
    _, _, ok = traj.at(times, 0.4)      # midway 0.5 s from both: outside
    assert ok.tolist() == [True, False, False, True, False]


def test_tf_chain_interpolates_every_dynamic_link(tmp_path):
    """map -> odom (static) -> base (dynamic, between samples) -> camera (static)."""
    ts, qs = np.array([0.0, 0.5, 0.0]), g.quat_from_rotvec([0.0, 0.3, 0.0])
    tb0, qb0 = np.array([1.0, 2.0, 0.0]), g.quat_from_rotvec([0.0, 0.0, 0.2])
    tb1, qb1 = np.array([2.0, 2.0, 1.0]), g.quat_from_rotvec([0.0, 0.0, 0.6])
    tc, qc = np.array([0.1, 0.0, 0.2]), g.quat_from_rotvec([-np.pi / 2, 0.0, -np.pi / 2])
    with RawBag(tmp_path / 'tf', 'sqlite3') as bag:
        bag.tf(0, [_transform(0, 'map', 'odom', ts, qs),
                   _transform(0, 'base', 'camera', tc, qc)], static=True)
        bag.tf(NS, [_transform(NS, 'odom', 'base', tb0, qb0)])
        bag.image(NS + NS // 100, DATA / 'images' / '00003.jpg', jpeg=True)
        bag.tf(NS + NS // 50, [_transform(NS + NS // 50, 'odom', 'base', tb1, qb1)])
    with bags.Bag(tmp_path / 'tf') as bag:
        scan = bags.scan_bag(bag, JPEG_TOPIC, gt_tf='/map:camera')
        inverse = bags.scan_bag(bag, JPEG_TOPIC, gt_tf='camera:map')
        with pytest.raises(bags.BagError, match="frame 'nowhere' is not in the TF tree"):
            bags.scan_bag(bag, JPEG_TOPIC, gt_tf='map:nowhere')
    assert scan.gt_source == 'TF map -> camera (via base, odom)'
    tb, qb = g.interpolate_pose(tb0, qb0, tb1, qb1, 0.5)
    expected = g.matrix_from_pose(ts, qs) @ g.matrix_from_pose(tb, qb) @ g.matrix_from_pose(
        tc, qc)
    np.testing.assert_allclose(g.matrix_from_pose(scan.gt_pos[0], scan.gt_quat[0]), expected,
                               atol=1e-12)
    np.testing.assert_allclose(g.matrix_from_pose(inverse.gt_pos[0], inverse.gt_quat[0]),
                               np.linalg.inv(expected), atol=1e-12)


# ---------------------------------------------------------------------------- bad input

@pytest.mark.slow   # trains the module checkpoint and writes a bag first (~4 s)
def test_unknown_topic_lists_the_bags_topics(jpeg_mcap, ckpt, capsys):
    code = cli.main(['bag-eval', str(jpeg_mcap), '--model', str(ckpt), '--image-topic',
                     '/nope', '--gt-topic', GT_TOPIC])
    err = capsys.readouterr().err
    assert code == 1
    assert "--image-topic '/nope' is not in the bag" in err and str(jpeg_mcap) in err
    assert f'{JPEG_TOPIC} (sensor_msgs/msg/CompressedImage, {N_EVAL} msgs)' in err
    assert f'{GT_TOPIC} (geometry_msgs/msg/PoseStamped, {N_EVAL} msgs)' in err
    code = cli.main(['bag-eval', str(jpeg_mcap), '--model', str(ckpt), '--image-topic',
                     GT_TOPIC, '--gt-topic', GT_TOPIC])
    assert code == 1
    assert ('has type geometry_msgs/msg/PoseStamped; expected sensor_msgs/msg/Image or '
            'sensor_msgs/msg/CompressedImage') in capsys.readouterr().err
    with bags.Bag(jpeg_mcap) as bag:
        with pytest.raises(bags.BagError, match='--gt-topic .* has type sensor_msgs/msg/Comp'):
            bags.scan_bag(bag, JPEG_TOPIC, gt_topic=JPEG_TOPIC)
        with pytest.raises(bags.BagError, match='needs /tf or /tf_static'):
            bags.scan_bag(bag, JPEG_TOPIC, gt_tf='map:camera')


@pytest.mark.slow   # writes and evaluates or trains from bags, 8-60 s
@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_truncated_bag_names_the_file_and_keeps_what_was_read(storage, eval_frames, ckpt,
                                                              bag_dir, tmp_path, capsys):
    src = write_frames_bag(bag_dir / f'trunc_src_{storage}', storage, eval_frames, False,
                           'pose')
    bag = tmp_path / 'truncated'
    shutil.copytree(src, bag)
    storage_file = next(p for p in bag.iterdir() if p.suffix in ('.mcap', '.db3'))
    data = storage_file.read_bytes()
    storage_file.write_bytes(data[:int(len(data) * 0.6)])
    code = cli.main(['bag-eval', str(bag), '--model', str(ckpt), '--image-topic',
                     IMAGE_TOPIC, '--gt-topic', GT_TOPIC, '--out', str(tmp_path / 'x')])
    err = capsys.readouterr().err
    assert code == 1 and str(bag) in err and 'truncated or corrupt' in err
    with bags.Bag(bag) as b:
        with pytest.raises(bags.BagCorruptError) as info:
            bags.scan_bag(b, IMAGE_TOPIC, gt_topic=GT_TOPIC)
    exc = info.value
    partial = exc.partial
    assert f'{exc.messages_read} messages were read' in str(exc)
    assert 10 <= len(partial) < N_EVAL and exc.messages_read >= len(partial)
    assert partial.gt_ok.sum() >= len(partial) - 1
    out = _eval(bag, ckpt, tmp_path / 'out', allow_truncated=True)
    assert 'WARNING' in capsys.readouterr().out
    per = load_per_frame(out / 'per_frame.txt')
    assert len(per['names']) == int(partial.gt_ok.sum())
    assert json.loads((out / 'bag_eval.json').read_text())['truncated']


@pytest.mark.slow   # trains the module checkpoint and writes a bag first (~4 s)
def test_no_ground_truth_within_tolerance_is_an_error(bag_dir, eval_frames, ckpt, tmp_path):
    bag = write_frames_bag(bag_dir / 'shifted', 'mcap', eval_frames[:5], True, 'pose',
                           gt_shift_ns=10 * NS)
    with pytest.raises(bags.BagError, match='none of the 5 images has ground truth within '
                       r'0.05 s: images \[1007.500, 1007.900\] s, ground truth'):
        bag_eval.main({'image_topic': JPEG_TOPIC, 'gt_topic': GT_TOPIC},
                      {'bag': bag, 'checkpoint': ckpt, 'out': tmp_path})
    assert not (tmp_path / 'per_frame.txt').exists()


def test_decode_image_encodings():
    import cv2
    rgb = read_rgb(DATA / 'images' / '00003.jpg')
    h, w = rgb.shape[:2]

    def raw(encoding, pixels):
        pixels = np.ascontiguousarray(pixels)
        return T['sensor_msgs/msg/Image'](header=_header(0, 'c'), height=h, width=w,
                                          encoding=encoding, is_bigendian=0,
                                          step=pixels.strides[0], data=pixels.reshape(-1))
    for enc, pixels in (('rgb8', rgb), ('bgr8', rgb[..., ::-1]),
                        ('rgba8', cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)),
                        ('bgra8', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))):
        np.testing.assert_array_equal(bags.decode_image(bags.IMAGE, raw(enc, pixels)), rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(bags.decode_image(bags.IMAGE, raw('mono8', gray))[..., 1],
                                  gray)
    with pytest.raises(ValueError, match="unsupported image encoding '16UC1'"):
        bags.decode_image(bags.IMAGE, raw('16UC1', gray))


# ---------------------------------------------------------------------------- training

def _posed_folder(path: Path, count: int) -> Path:
    """The first ``count`` frames of the walk as a posed dataset folder (images linked)."""
    (path / 'images').mkdir(parents=True)
    images = sorted((DATA / 'images').glob('*.jpg'))[:count]
    for image in images:
        (path / 'images' / image.name).symlink_to(image)
    lines = (DATA / 'poses.txt').read_text().splitlines()
    (path / 'poses.txt').write_text('\n'.join(lines[:count]) + '\n')
    shutil.copy(DATA / 'K.txt', path / 'K.txt')
    return path


@pytest.mark.slow   # writes and evaluates or trains from bags, 8-60 s
def test_train_from_bag_equals_train_from_folder(tmp_path):
    """Same split, same seed: the same first-epoch loss from a bag as from the folder."""
    folder_data = _posed_folder(tmp_path / 'walk100', 100)
    frames = read_dataset(folder_data, 'posed').frames
    bag = tmp_path / 'walk'
    with RawBag(bag, 'mcap') as writer:
        for f in frames:
            ns = stamp_of(f)
            writer.image(ns, f.image_path, jpeg=True)
            writer.gt_pose(ns - NS // 100, *g.pose_from_matrix(f.pose_c2w))   # 0.01 s early
            writer.gt_pose(ns + NS // 100, *g.pose_from_matrix(f.pose_c2w))
    cache = tmp_path / 'cache'
    overrides = ['train.epochs=1', 'train.limit=40', 'train.batch_size=8', 'train.seed=5',
                 f'train.cache_dir={cache}', 'model.backbone.trainable_stages=1',
                 'model.head.width=128']
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    folder_args = parser.parse_args(['--data', str(folder_data), '--format', 'posed', '--out',
                                     str(tmp_path / 'folder'), *overrides])
    bag_args = parser.parse_args(['--bag', str(bag), '--image-topic', JPEG_TOPIC,
                                  '--gt-topic', GT_TOPIC, '--out', str(tmp_path / 'bag'),
                                  *overrides])
    train.from_args(folder_args)
    train.from_args(bag_args)
    folder = json.loads((tmp_path / 'folder' / 'history.json').read_text())
    from_bag = json.loads((tmp_path / 'bag' / 'history.json').read_text())
    assert from_bag[0]['loss'] == pytest.approx(folder[0]['loss'], abs=1e-5)
    # the bags are paths, their topics config: recorded with the run
    recorded = yaml.safe_load((tmp_path / 'bag' / 'train_conf.yaml').read_text())
    assert recorded['data']['bag']['image_topic'] == JPEG_TOPIC
    assert recorded['data']['bag']['gt_topic'] == GT_TOPIC

    conf = train.conf_from_args(bag_args)
    tr, val = load_bag_frames([bag], None, conf, JPEG_TOPIC, GT_TOPIC)
    with pytest.raises(ValueError, match="unknown paths key.*'frames'"):   # paths are paths
        train.main(conf, {'frames': (tr, val), 'out': tmp_path / 'x'}, log=print)
    assert not (tmp_path / 'x').exists()
    # a training bag has no test split: its held-out blocks of the training side validate
    ref_tr, ref_val = train_val_split(frames, VAL_BLOCK, VAL_EVERY)
    assert [f.index for f in tr] == [f.index for f in ref_tr]
    assert [f.index for f in val] == [f.index for f in ref_val]
    # poses.txt holds 6 digits: its rotations are orthonormal to ~1e-6 only
    np.testing.assert_allclose(np.stack([f.pose_c2w for f in tr]),
                               np.stack([f.pose_c2w for f in ref_tr]), atol=1e-5)
    assert tr[0].image_path.read_bytes() == ref_tr[0].image_path.read_bytes()
    assert tr[0].timestamp == stamp_of(ref_tr[0]) / NS
    tr2, val2 = load_bag_frames([bag], [bag], conf, JPEG_TOPIC, GT_TOPIC)   # --val-bag
    assert len(tr2) == len(val2) == 100
    # Extracted once: a second call reads the index and finds the same files.
    files = sorted((cache / 'bag_frames').rglob('*.jpg'))
    assert len(files) == 100
    mtimes = [p.stat().st_mtime_ns for p in files]
    again, _ = bags.extract_frames(bag, JPEG_TOPIC, GT_TOPIC, cache_dir=cache / 'bag_frames')
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    assert sorted(f.image_path for f in again) == sorted(f.image_path for f in tr + val)


def test_train_from_raw_bag_extracts_lossless_png(dataset, tmp_path):
    bag = write_frames_bag(tmp_path / 'raw', 'sqlite3', dataset.frames[:3], False, 'tf')
    frames, info = bags.extract_frames(bag, IMAGE_TOPIC, gt_tf='map:camera',
                                       cache_dir=tmp_path / 'c')
    assert info['frames'] == 3 and info['outside_tolerance'] == 0
    for f, ref in zip(frames, dataset.frames[:3]):
        assert f.image_path.suffix == '.png'
        np.testing.assert_array_equal(read_rgb(f.image_path), read_rgb(ref.image_path))
        np.testing.assert_allclose(f.pose_c2w, ref.pose_c2w, atol=1e-5)


# ---------------------------------------------------------------------------- bag-from-dataset

def test_bag_from_dataset_writes_camera_info_and_ground_truth(dataset, tmp_path):
    out = tmp_path / 'ds_bag'
    code = cli.main(['bag-from-dataset', str(DATA), str(out), '--format', 'posed', '--split',
                     'test', '--limit', '8', '--storage', 'sqlite3', '--rate', '5'])
    assert code == 0
    frames = split_dataset(dataset, 'test', BLOCK, EVERY).frames[:8]
    stamps = [1_700_000_000 * NS + f.index * NS // 5 for f in frames]
    got: dict = {}
    with Reader(out) as reader:
        assert reader.message_count == 32
        digests = {c.topic: c.digest for c in reader.connections}
        for conn, log_ns, raw in reader.messages():
            got.setdefault(conn.topic, []).append((log_ns, TS.deserialize_cdr(raw, conn.msgtype)))
    assert digests['/camera/camera_info'] == TS.hash_rihs01('sensor_msgs/msg/CameraInfo')
    assert sorted(got) == ['/camera/camera_info', '/camera/image_raw', '/ground_truth/pose',
                           '/tf']
    K = dataset.intrinsics
    for topic, msgs in got.items():
        assert [log for log, _ in msgs] == stamps, topic
    info = got['/camera/camera_info'][0][1]
    assert (info.width, info.height) == (K.width, K.height)
    np.testing.assert_allclose(info.k.reshape(3, 3), K.matrix())
    assert info.header.frame_id == 'camera'
    image = got['/camera/image_raw'][2][1]
    assert image.encoding == 'rgb8'
    np.testing.assert_array_equal(image.data.reshape(image.height, image.width, 3),
                                  read_rgb(frames[2].image_path))
    for (_, pose), (_, tf), f in zip(got['/ground_truth/pose'], got['/tf'], frames):
        t, q = g.pose_from_matrix(f.pose_c2w)
        p = pose.pose
        np.testing.assert_allclose([p.position.x, p.position.y, p.position.z], t)
        assert g.orientation_error_deg([p.orientation.x, p.orientation.y, p.orientation.z,
                                        p.orientation.w], q) < 1e-6
        assert pose.header.frame_id == 'map'
        (tr,) = tf.transforms
        assert (tr.header.frame_id, tr.child_frame_id) == ('map', 'camera_gt')
        assert tr.transform.translation.x == pytest.approx(t[0])
    # --compressed copies the JPEG files byte for byte
    jpeg = bag_from_dataset.main({'format': 'posed', 'limit': 3, 'compressed': True},
                                 {'data': DATA, 'out': tmp_path / 'jpeg'})
    with Reader(jpeg) as reader:
        msgs = [TS.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()
                if c.topic == '/camera/image_raw/compressed']
    assert [m.data.tobytes() for m in msgs] == [f.image_path.read_bytes()
                                                for f in dataset.frames[:3]]
    with pytest.raises(bags.BagError, match='exists already'):
        bag_from_dataset.main({'format': 'posed', 'limit': 3}, {'data': DATA, 'out': jpeg})


def test_two_matching_rules(tmp_path):
    """TUM folders take the nearest sample within max_dt; bags interpolate within tolerance.

    Both rules are documented side by side in ``camreloc_ros/core/bags/groundtruth.py``.
    """
    import cv2

    gt = [(1.00, 0.0), (1.04, 0.4), (1.20, 2.0)]      # (time s, x m), identity rotation
    images = [1.01, 1.03, 1.12]
    (tmp_path / 'rgb').mkdir()
    lines = []
    for k, t in enumerate(images):
        cv2.imwrite(str(tmp_path / 'rgb' / f'{k}.png'), np.zeros((4, 4, 3), np.uint8))
        lines.append(f'{t:.6f} rgb/{k}.png')
    (tmp_path / 'rgb.txt').write_text('\n'.join(lines) + '\n')
    (tmp_path / 'groundtruth.txt').write_text(
        ''.join(f'{t:.6f} {x} 0 0 0 0 0 1\n' for t, x in gt))
    tum = read_dataset(tmp_path, 'tum', max_dt=0.02, drop_unmatched=True)
    # nearest sample, as it is: 1.01 -> 1.00, 1.03 -> 1.04; 1.12 has none within 0.02 s
    assert [f.pose_c2w[0, 3] for f in tum.frames] == [0.0, 0.4] and tum.dropped == 1
    traj = bags.Trajectory([round(t * NS) for t, _ in gt], [[x, 0, 0] for _, x in gt],
                           [[0, 0, 0, 1]] * len(gt))
    pos, _, ok = traj.at([round(t * NS) for t in images], bags.DEFAULT_TOLERANCE)
    # interpolated between the samples around each stamp; 1.12 is 0.08 s from both: none
    np.testing.assert_allclose(pos[:2, 0], [0.1, 0.3], atol=1e-9)
    assert ok.tolist() == [True, True, False]
    pos, _, ok = traj.at([round(1.01 * NS)], 0.005)       # one side only within tolerance
    assert ok.tolist() == [False]
    pos, _, ok = traj.at([round(1.22 * NS)], 0.05)        # the last sample, as it is
    assert ok.tolist() == [True] and pos[0, 0] == 2.0


def test_bag_and_live_messages_share_their_field_mapping():
    """The bag writer and the live node's rclpy builders give equal fields, refuse the same."""
    from camreloc_ros.ros import conversions as conv

    m = bags.Messages()
    cov = np.diag([0.1, 0.2, 0.3, 0.01, 0.02, 0.03])
    cov[0, 1] = 0.05                                        # not symmetric: both symmetrise
    ns = 1_700_000_000_123_456_789
    bag_msg = m.pose_with_covariance_stamped(ns, 'map', [1, 2, 3], [0, 0, 0.6, 0.8], cov)
    header = conv.Header(stamp=conv.ns_to_stamp(ns), frame_id='map')
    live = conv.pose_with_covariance_stamped(header, [1, 2, 3], [0, 0, 0.6, 0.8], cov)
    assert list(bag_msg.pose.covariance) == list(live.pose.covariance)
    assert (bag_msg.header.stamp.sec, bag_msg.header.stamp.nanosec) == \
        (live.header.stamp.sec, live.header.stamp.nanosec)
    p, q = bag_msg.pose.pose.position, bag_msg.pose.pose.orientation
    lp, lq = live.pose.pose.position, live.pose.pose.orientation
    assert (p.x, p.y, p.z, q.x, q.y, q.z, q.w) == (lp.x, lp.y, lp.z, lq.x, lq.y, lq.z, lq.w)
    bad = cov.copy()
    bad[2, 2] = np.inf

    def bag_builder(c):
        return m.pose_with_covariance_stamped(ns, 'map', [0, 0, 0], [0, 0, 0, 1], c)

    for build in (bag_builder, conv.covariance_to_list):
        with pytest.raises(ValueError, match='non-finite'):
            build(bad)
        with pytest.raises(ValueError, match='6x6'):
            build(np.eye(3))
    for stamp in (m.time, conv.ns_to_stamp):
        with pytest.raises(ValueError, match='negative'):
            stamp(-1)
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    bag_img, live_img = m.image(ns, 'cam', rgb), conv.rgb_to_image(rgb)
    assert [(i.height, i.width, i.encoding, i.is_bigendian, i.step) for i in (bag_img, live_img)
            ] == [(2, 3, 'rgb8', 0, 9)] * 2
    assert m.compressed(ns, 'cam', b'').format == \
        conv.rgb_to_compressed(rgb, 'jpeg').format == 'rgb8; jpeg compressed bgr8'
