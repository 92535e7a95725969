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

"""docs/walkthrough.md end to end: bag -> reconstruct -> train -> map -> node, no ground truth.

The recording is the HoloLens walk's first 40 frames written as a robot would record them
(``bag-from-dataset --odometry drift --no-ground-truth``: JPEG images, camera_info and an
odometry that drifts, nothing else). Every second frame is a keyframe of ``reconstruct``; the
others are never reconstructed, trained on or mapped, and are then sent to the live node over
real rclpy / Fast DDS. Its refined poses are scored against the walk's own poses through a
similarity fitted on the keyframes only: the map's frame is the odometry's, not the walk's.
Each step runs through the ``camreloc`` command line, as the walk-through types it.
"""

import json

import numpy as np
import pytest

from camreloc_ros.core.bags import Bag
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.geometry import matrix_from_pose, orientation_error_deg, pose_from_matrix
from camreloc_ros.core.localization.map_file import load_map
from camreloc_ros.core.models.pose_model import PoseModel
from camreloc_ros.core.sfm.scale import similarity
from camreloc_ros.tools import cli
from camreloc_ros.tools.common import shared_data_dir

HOLO = shared_data_dir() / 'hololens-office'
N = 40
TOPIC = '/camera/image_raw/compressed'
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope='module')
def walkthrough(tmp_path_factory):
    """Run the walk-through's commands once: (folder, reconstruction, checkpoint, map)."""
    d = tmp_path_factory.mktemp('walkthrough')
    steps = [
        ['bag-from-dataset', HOLO, d / 'walk', '--format', 'posed', '--limit', N,
         '--compressed', '--odometry', 'drift', '--no-ground-truth'],
        ['reconstruct', '--bag', d / 'walk', '--image-topic', TOPIC, '--odom-topic', '/odom',
         '--every', 2, '--out', d / 'scene', '--retrieval', 0, '--max-features', 2048,
         '--overlap', 8],
        ['train', '--data', d / 'scene', '--format', 'posed', '--out', d / 'run',
         'train.epochs=3', 'data.block=1000000', 'data.every=2', 'data.val_every=0',
         'model.head.width=256'],
        ['map', '--model', d / 'run' / 'last.pt', '--reconstruction', d / 'scene',
         '--out', d / 'scene_map.npz', '--block', 1000000, '--every', 2],
    ]
    for argv in steps:
        assert cli.main([str(a) for a in argv]) == 0, argv
    return d, d / 'scene', d / 'run' / 'last.pt', d / 'scene_map.npz'


def test_the_recording_carries_no_ground_truth_only_odometry(walkthrough):
    d, *_ = walkthrough
    with Bag(d / 'walk') as bag:
        topics = set(bag.topics)
    assert topics == {TOPIC, '/camera/camera_info', '/odom', '/tf'}, topics


def test_reconstruct_train_and_map_read_one_another(walkthrough):
    d, scene, ckpt, map_path = walkthrough
    rec = read_dataset(scene, 'posed')
    assert len(rec.frames) == N // 2                    # every keyframe registered
    doc = json.loads((scene / 'reconstruct.json').read_text())
    assert doc['scale']['source'] == 'odometry' and doc['unregistered'] == []
    lmap = load_map(map_path)
    assert lmap.meta['points_from'] == 'reconstruction' and len(lmap) == N // 2
    assert PoseModel.from_checkpoint(ckpt).checkpoint_extra['data']['block'] == 1000000


def test_the_node_localizes_held_out_frames_to_centimetres(walkthrough, tmp_path):
    """Frames the pipeline never saw, sent to the node: refined within a few cm of the walk.

    The odometry frame is the walk's until drift builds up (2 % of the distance), so the
    keyframe similarity is near the identity; it is fitted anyway, as for any recording.
    """
    from support import allocate_domain, ros_environment, RosHarness   # ROS only here
    from test_refine_live import _sync_node_run

    d, scene, ckpt, map_path = walkthrough
    walk = read_dataset(HOLO, 'posed').frames[:N]
    rec = read_dataset(scene, 'posed')
    # a keyframe is named by its position in the bag (reconstruct.json lists them)
    keyframes = json.loads((scene / 'reconstruct.json').read_text())['input']['positions']
    assert [f.name for f in rec.frames] == [f'{k:06d}' for k in keyframes]
    s, R, t = similarity(np.array([f.pose_c2w[:3, 3] for f in rec.frames]),
                         np.array([walk[k].pose_c2w[:3, 3] for k in keyframes]))
    assert abs(s - 1.0) < 0.05
    held_out = [k for k in range(N) if k not in keyframes][2:-2]
    assert len(held_out) >= 12
    errors = []
    domain = allocate_domain()
    with ros_environment(domain, tmp_path / 'ros_log'):
        ros = RosHarness(domain)
        node = None
        try:
            node, send, refined, _ = _sync_node_run(ros, 'walk', ckpt, map_path)
            for n, k in enumerate(held_out):
                key, *_ = send(read_rgb(walk[k].image_path), 100.0 + 0.1 * n)
                if not ros.wait_for(lambda: key in refined, 2.0):
                    continue   # a fallback: no refined pose
                p = refined[key].pose.pose
                T = matrix_from_pose([p.position.x, p.position.y, p.position.z],
                                     [p.orientation.x, p.orientation.y, p.orientation.z,
                                      p.orientation.w])
                pos = s * R @ T[:3, 3] + t
                _, quat = pose_from_matrix(np.block([[R @ T[:3, :3], pos[:, None]],
                                                     [np.zeros((1, 3)), np.ones((1, 1))]]))
                gp, gq = pose_from_matrix(walk[k].pose_c2w)
                errors.append((float(np.linalg.norm(pos - gp)),
                               float(orientation_error_deg(quat, gq))))
        finally:
            if node is not None:
                ros.remove(node)
            ros.shutdown()
    assert len(errors) >= 0.7 * len(held_out), (len(errors), len(held_out))
    err = np.array(errors)
    print(f'walk-through: {len(errors)} of {len(held_out)} held-out frames refined, median '
          f'{np.median(err[:, 0]):.3f} m / {np.median(err[:, 1]):.2f} deg; scale {s:.4f}')
    assert np.median(err[:, 0]) < 0.05 and np.median(err[:, 1]) < 2.0, err


def test_the_map_from_the_reconstruction_refines_within_2_5x_of_one_from_true_poses(
        walkthrough, tmp_path):
    """Issue 22 part 3 on the walk's first 40 frames: the same keyframes mapped twice.

    Once from the reconstruction (``map --reconstruction``: its points and tracks, the
    odometry's frame) and once from the walk's own poses (``map --data``: triangulated); the
    held-out frames are refined against each (retrieval, no prior) and scored against the
    walk's poses, the first through the keyframes' similarity. Measured 1.64-1.78x over
    three runs (1.4-1.5 vs 0.8 cm; each run reconstructs anew; a map triangulated from the
    reconstruction's poses gives the same 1.3 cm): the issue asks for 1.5x, which is NOT
    met; this test keeps the measured level from getting worse (2.5x). The gap is the
    reconstruction's poses against the headset's own tracking, which is the reference here
    and has errors of its own.
    """
    import shutil

    from camreloc_ros.core.localization.refiner import map_descriptor, Refiner
    from camreloc_ros.core.evaluation.metrics import pose_errors
    from camreloc_ros.tools import map as map_tool

    d, scene, ckpt, map_path = walkthrough
    walk = read_dataset(HOLO, 'posed').frames[:N]
    keyframes = json.loads((scene / 'reconstruct.json').read_text())['input']['positions']
    rec = read_dataset(scene, 'posed')
    s, R, t = similarity(np.array([f.pose_c2w[:3, 3] for f in rec.frames]),
                         np.array([walk[k].pose_c2w[:3, 3] for k in keyframes]))
    truth = tmp_path / 'truth'
    (truth / 'images').mkdir(parents=True)
    for k in keyframes:
        shutil.copy2(walk[k].image_path, truth / 'images' / f'{k:06d}.jpg')
    (truth / 'poses.txt').write_text(''.join(
        ' '.join(f'{v:.17g}' for v in walk[k].pose_c2w.ravel()) + '\n' for k in keyframes))
    shutil.copy2(HOLO / 'K.txt', truth / 'K.txt')
    truth_map = map_tool.main({'calibration': {'enabled': False}, 'block': 1000000,
                               'every': 2}, {'model': ckpt, 'data': truth,
                                             'out': tmp_path / 'truth.npz'},
                              log=lambda text: None)
    held_out = [k for k in range(N) if k not in keyframes][2:-2]
    errors = {}
    for label, path, frame in (('truth', truth_map, None), ('reconstruction', map_path, 1)):
        lmap = load_map(path)
        refiner = Refiner(lmap, map_descriptor(lmap, None), {})
        for k in held_out:
            res = refiner.refine(read_rgb(walk[k].image_path))
            if not res.refined:
                continue
            T = res.pose_c2w
            if frame is not None:   # the odometry's frame -> the walk's
                T = np.block([[R @ T[:3, :3], (s * R @ T[:3, 3] + t)[:, None]],
                              [np.zeros((1, 3)), np.ones((1, 1))]])
            gp, gq = pose_from_matrix(walk[k].pose_c2w)
            p, q = pose_from_matrix(T)
            errors.setdefault(label, {})[k] = float(pose_errors(p[None], q[None], gp[None],
                                                                gq[None])[0][0])
    both = sorted(set(errors['truth']) & set(errors['reconstruction']))
    assert len(both) >= 0.7 * len(held_out), errors
    med_truth = np.median([errors['truth'][k] for k in both])
    med_rec = np.median([errors['reconstruction'][k] for k in both])
    print(f'map from the reconstruction {med_rec:.4f} m, from the true poses {med_truth:.4f} m '
          f'({med_rec / med_truth:.2f}x) on {len(both)} held-out frames')
    assert med_rec <= 2.5 * med_truth, (med_rec, med_truth)
