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

"""Runtimes: ONNX exports give eager torch's poses, carry their metadata, run in the node.

Real lite0 models (ImageNet weights, non-trivial pose statistics) on real hololens-office
images; the CUDA path is checked only where CUDA exists.
"""

import json

import numpy as np
import onnx
import pytest
from rclpy.parameter import Parameter
from support import allocate_domain, load_frames, ros_environment, RosHarness
import torch

from camreloc_ros import __version__
from camreloc_ros.core.inference import engine as engine_module
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.core.models.pose_model import build_model
from camreloc_ros.core.training import feature_cache as features
from camreloc_ros.core.bags import default_extract_dir
from camreloc_ros.core.io import cache_root, file_sha256
from camreloc_ros.core.inference.onnx_format import (cached_onnx, export_onnx, load_onnx,
                                                     METADATA_KEY, ONNX_FORMAT_VERSION,
                                                     OnnxModelError)
from camreloc_ros.core.inference.runtimes import auto_runtime, TorchRuntime
from camreloc_ros.tools import cli

DOMAIN_ID = allocate_domain()
ATOL = 1e-4
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]   # ONNX export and real DDS


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """A lite0 regressor (exported with the CLI) and a GRU (window 4), .pt and .onnx."""
    folder = tmp_path_factory.mktemp('models')
    reg = build_model('posenet')
    reg.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    gru = build_model('gru', head={'window': 4})
    gru.set_pose_stats([0.5, 0.2, -1.0], 3.0)
    paths = {'reg': reg.save_checkpoint(folder / 'reg.pt', extra={'epoch': 7}),
             'gru': gru.save_checkpoint(folder / 'gru.pt')}
    assert cli.main(['export', str(paths['reg']), '--format', 'onnx',
                     '--out', str(folder / 'reg.onnx')]) == 0
    paths['reg_onnx'] = folder / 'reg.onnx'
    paths['gru_onnx'] = folder / 'gru.onnx'
    export_onnx(gru, paths['gru_onnx'])
    paths['models'] = {'reg': reg, 'gru': gru}
    return paths


@pytest.fixture(scope='module')
def frames():
    """Seven real frames of the hololens-office sequence."""
    return load_frames(7, stride=6)


def assert_same(pred_a, pred_b, atol: float = ATOL) -> None:
    """Two predictions agree in pose, covariance and window."""
    np.testing.assert_allclose(pred_a.position, pred_b.position, atol=atol)
    np.testing.assert_allclose(pred_a.quaternion, pred_b.quaternion, atol=atol)
    np.testing.assert_allclose(pred_a.covariance, pred_b.covariance, rtol=1e-4, atol=1e-8)
    assert pred_a.window == pred_b.window


def test_onnx_poses_equal_eager_batch_1_and_5(models, frames):
    """The exported regressor gives eager torch's poses, one at a time and in batches of 5."""
    eager = InferenceEngine.from_checkpoint(models['reg'], runtime='torch')
    ort = InferenceEngine.from_checkpoint(models['reg_onnx'], runtime='onnx')
    assert 'onnxruntime' in ort.describe() and 'cpu' in ort.describe()
    expected = [eager.predict(f) for f in frames]
    for frame, exp in zip(frames, expected):
        assert_same(ort.predict(frame), exp)
    for got, exp in zip(ort.predict_frames(frames, batch_size=5), expected):   # 5 + 2
        assert_same(got, exp)
    for got, exp in zip(eager.predict_frames(frames, batch_size=5), expected):
        assert_same(got, exp)
    moved = [p.position for p in expected]
    assert np.ptp(np.stack(moved), axis=0).max() > 1e-3, 'poses should differ across images'


def test_metadata_round_trip(models):
    """The .onnx carries model config, pose statistics, versions and the source's hash."""
    proto, meta = load_onnx(models['reg_onnx'])
    reg = models['models']['reg']
    assert meta['model_conf'] == reg.conf
    assert meta['pose_stats'] == {'mean': [1.0, -2.0, 0.5], 'scale': 5.0}
    assert meta['format_version'] == ONNX_FORMAT_VERSION
    assert meta['package_version'] == __version__
    assert meta['source'] == {'checkpoint': 'reg.pt', 'sha256': file_sha256(models['reg'])}
    assert meta['extra'] == {'epoch': 7}
    assert not meta['temporal'] and meta['feature_dim'] == 1280
    engine = InferenceEngine.from_checkpoint(models['reg_onnx'], runtime='onnx')
    assert engine.conf == reg.conf and engine.checkpoint_extra == {'epoch': 7}
    assert engine.model is None and not engine.temporal
    gru = InferenceEngine.from_checkpoint(models['gru_onnx'], runtime='onnx')
    assert gru.temporal and gru.window == 4


def _rewrite_metadata(src, dst, value: str | None):
    proto = onnx.load(str(src))
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    for key, val in keep + ([(METADATA_KEY, value)] if value is not None else []):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, val
    onnx.save(proto, str(dst))
    return dst


def test_wrong_or_missing_metadata_is_a_clear_error(models, tmp_path):
    """An .onnx not from `camreloc export`, or from another format version, is refused."""
    meta = load_onnx(models['reg_onnx'])[1]
    cases = {
        'missing': (None, 'no camreloc_ros metadata'),
        'not_json': ('{not json', 'not valid JSON'),
        'version': (json.dumps(dict(meta, format_version=99)), 'format version 99'),
        'lacking': (json.dumps({k: v for k, v in meta.items() if k != 'pose_stats'}),
                    'lacks pose_stats'),
    }
    for name, (value, message) in cases.items():
        path = _rewrite_metadata(models['reg_onnx'], tmp_path / f'{name}.onnx', value)
        with pytest.raises(OnnxModelError, match=message):
            InferenceEngine.from_checkpoint(path, runtime='onnx')
    with pytest.raises(OnnxModelError, match='camreloc export'):
        InferenceEngine.from_checkpoint(tmp_path / 'missing.onnx', runtime='onnx')
    with pytest.raises(ValueError, match='runtime onnx'):
        InferenceEngine.from_checkpoint(models['reg_onnx'], runtime='torch')
    with pytest.raises(ValueError, match='runtime must be'):
        InferenceEngine.from_checkpoint(models['reg'], runtime='tensorrt')


def test_gru_sequence_equals_torch(models, frames):
    """Temporal GRU through ONNX Runtime: the same predict() sequence as torch, gaps included."""
    stamps = [0.1 * i for i in range(5)] + [3.0, 3.1]          # a gap > max_gap at frame 5
    eager = InferenceEngine.from_checkpoint(models['gru'], runtime='torch')
    ort = InferenceEngine.from_checkpoint(models['gru_onnx'], runtime='onnx')
    live_t = [eager.predict(f, s) for f, s in zip(frames, stamps)]
    live_o = [ort.predict(f, s) for f, s in zip(frames, stamps)]
    assert [p.window for p in live_o] == [1, 2, 3, 4, 4, 1, 2]
    for a, b in zip(live_o, live_t):
        assert_same(a, b)
    offline = ort.predict_frames(frames, batch_size=3, stamps=stamps)
    for a, b in zip(offline, live_t):
        assert_same(a, b)
    ort.reset()
    assert_same(ort.predict(frames[0], 10.0), eager.predict_frames(frames[:1])[0])


def test_predict_frames_streams_with_breaks_and_gaps(models, frames, monkeypatch):
    """Any iterable of frames (a generator: no len), windows cut by breaks and time gaps.

    The same poses as the live engine reset at the break, whatever the batch size and however
    the head calls are cut (HEAD_CHUNK 2: the history carries over between head calls).
    """
    stamps = [0.1 * i for i in range(5)] + [3.0, 3.1]          # a gap > max_gap at frame 5
    breaks = [False, False, False, True, False, False, False]  # a new run at frame 3
    ort = InferenceEngine.from_checkpoint(models['gru_onnx'], runtime='onnx')
    live = []
    for i, (frame, stamp) in enumerate(zip(frames, stamps)):
        if breaks[i]:
            ort.reset()
        live.append(ort.predict(frame, stamp))
    assert [p.window for p in live] == [1, 2, 3, 1, 2, 1, 2]
    for batch_size, head_chunk in ((1, 256), (3, 2), (16, 256)):
        monkeypatch.setattr(engine_module, 'HEAD_CHUNK', head_chunk)
        loads = []
        images = (loads.append(i) or f for i, f in enumerate(frames))
        offline = ort.predict_frames(images, breaks=iter(breaks), stamps=stamps,
                                     batch_size=batch_size)
        assert loads == list(range(len(frames)))
        assert len(offline) == len(frames)
        for a, b in zip(offline, live):
            assert_same(a, b)
    callables = [lambda f=f: f for f in frames]
    for a, b in zip(ort.predict_frames(callables, breaks, stamps, batch_size=4), live):
        assert_same(a, b)
    assert ort.predict_frames(iter([])) == []
    with pytest.raises(ValueError, match='breaks ended after 2 frames'):
        ort.predict_frames(frames, breaks=breaks[:2])
    with pytest.raises(ValueError, match='images ended after 7 frames'):
        ort.predict_frames(frames, stamps=stamps + [4.0])
    with pytest.raises(ValueError, match='batch_size'):
        ort.predict_frames(frames, batch_size=0)


def test_checkpoint_exported_once_into_the_cache(models, frames, tmp_path):
    """runtime='onnx' with a .pt exports it to a cache keyed by the checkpoint's hash."""
    cache = tmp_path / 'cache'
    first = InferenceEngine.from_checkpoint(models['reg'], runtime='onnx', cache_dir=cache)
    files = list(cache.glob('*.onnx'))
    assert len(files) == 1 and file_sha256(models['reg'])[:16] in files[0].name
    stat = files[0].stat()
    second = InferenceEngine.from_checkpoint(models['reg'], runtime='onnx', cache_dir=cache)
    assert files[0].stat().st_mtime_ns == stat.st_mtime_ns
    assert_same(first.predict(frames[0]), second.predict(frames[0]))


def test_one_cache_root_for_every_cache(models, tmp_path, monkeypatch):
    """$CAMRELOC_CACHE_DIR (else $XDG_CACHE_HOME/camreloc_ros) holds features, onnx, bag_frames."""
    monkeypatch.delenv('CAMRELOC_CACHE_DIR', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert cache_root() == tmp_path / 'xdg' / 'camreloc_ros'
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert cache_root() == tmp_path / 'home' / '.cache' / 'camreloc_ros'
    root = tmp_path / 'root'
    monkeypatch.setenv('CAMRELOC_CACHE_DIR', str(root))
    assert features.default_cache_dir() == root / 'features'
    assert default_extract_dir() == root / 'bag_frames'
    exported = cached_onnx(models['reg'])
    assert exported.parent == root / 'onnx' and exported.is_file()
    assert sorted(p.name for p in root.iterdir()) == ['onnx']


def test_node_with_runtime_onnx(models, frames, tmp_path):
    """The live node with runtime onnx and an .onnx model publishes eager torch's pose."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image

    from camreloc_ros.ros.conversions import rgb_to_image, sec_to_stamp, stamp_to_ns
    from camreloc_ros.ros.localizer_node import LocalizerNode

    expected = InferenceEngine.from_checkpoint(models['reg'], runtime='torch').predict(frames[1])
    with ros_environment(DOMAIN_ID, tmp_path / 'ros_log'):
        harness = RosHarness(DOMAIN_ID)
        try:
            node = harness.add(LocalizerNode(
                namespace='onnx', context=harness.context, parameter_overrides=[
                    Parameter('model', value=str(models['reg_onnx'])),
                    Parameter('runtime', value='onnx'), Parameter('device', value='cpu'),
                    Parameter('qos.reliability', value='reliable')]))
            assert node.is_active and 'onnxruntime' in node.engine.describe()
            poses = {}
            harness.node.create_subscription(
                PoseStamped, '/onnx/pose',
                lambda m: poses.__setitem__(stamp_to_ns(m.header.stamp), m), 10)
            pub = harness.node.create_publisher(Image, '/onnx/image', 10)
            assert harness.wait_for(lambda: pub.get_subscription_count() > 0, 10.0)
            msg = rgb_to_image(frames[1])
            msg.header.stamp = sec_to_stamp(42.0)
            pub.publish(msg)
            key = stamp_to_ns(msg.header.stamp)
            assert harness.wait_for(lambda: key in poses, 10.0), 'no pose from the onnx node'
            p, q = poses[key].pose.position, poses[key].pose.orientation
            np.testing.assert_allclose([p.x, p.y, p.z], expected.position, atol=ATOL)
            np.testing.assert_allclose([q.x, q.y, q.z, q.w], expected.quaternion, atol=ATOL)
            harness.remove(node)
        finally:
            harness.shutdown()


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason='no CUDA device here: the fp16/bf16 pinned-buffer path needs a GPU')
def test_cuda_fp16_bf16_close_to_cpu(models, frames):
    """CUDA: pinned input buffer, fp16/bf16 CNN, float32 head; poses close to the CPU's."""
    expected = InferenceEngine.from_checkpoint(models['reg'], runtime='torch').predict_frames(
        frames)
    for precision in ('fp32', 'fp16', 'bf16'):
        engine = InferenceEngine.from_checkpoint(models['reg'], runtime='torch', device='cuda',
                                                 precision=precision)
        assert isinstance(engine.runtime, TorchRuntime)
        assert engine.runtime._host[1].is_pinned()
        atol = 1e-3 if precision == 'fp32' else 0.05
        for frame, exp in zip(frames, expected):
            got = engine.predict(frame)
            np.testing.assert_allclose(got.position, exp.position, atol=atol)
            np.testing.assert_allclose(got.quaternion, exp.quaternion, atol=atol)
        for got, exp in zip(engine.predict_frames(frames, batch_size=4), expected):
            np.testing.assert_allclose(got.position, exp.position, atol=atol)


def test_auto_runtime_is_onnx_on_the_cpu(models, frames):
    """runtime auto (the node's default) takes ONNX Runtime on a CPU, torch on CUDA."""
    assert auto_runtime(models['reg'], 'cpu') == 'onnx'
    assert auto_runtime(models['reg_onnx'], 'cuda' if torch.cuda.is_available() else 'cpu') \
        == 'onnx'
    auto = InferenceEngine.from_checkpoint(models['reg_onnx'], runtime='auto', device='cpu')
    eager = InferenceEngine.from_checkpoint(models['reg'], runtime='torch', device='cpu')
    assert 'onnx' in auto.describe().lower()
    assert_same(auto.predict(frames[0]), eager.predict(frames[0]))
    if torch.cuda.is_available():
        assert auto_runtime(models['reg'], 'cuda') == 'torch'
