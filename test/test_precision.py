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

"""int8 and bf16 on the CPU: ``precision`` selects the path, or says why it cannot (issue 21).

The int8 export is built once per module from the lite0 regressor checkpoint of conftest,
calibrated on 16 real training-side frames of the HoloLens walk and compared with the float32
export on other real frames.
"""

import json

import numpy as np
import onnx
import pytest
from support import DATA_DIR, load_frames

from camreloc_ros.core.config import ConfigError
from camreloc_ros.core.inference import precision as precision_module
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.core.inference.onnx_format import (check_self_contained, export_onnx,
                                                     METADATA_KEY, OnnxModelError)
from camreloc_ros.core.inference.precision import check_precision
from camreloc_ros.core.inference.quantize import (cached_int8, int8_cache_path, int8_plan,
                                                  pick_calibration_frames, quantize_export,
                                                  training_calibration)
from camreloc_ros.core.inference.runtimes import (auto_runtime, make_runtime, OnnxRuntime,
                                                  TorchRuntime)
from camreloc_ros.core.geometry import orientation_error_rad
from camreloc_ros.core.models.pose_model import PoseModel

pytestmark = pytest.mark.timeout(120)
DATA = DATA_DIR


@pytest.fixture(scope='module')
def model(checkpoints):
    """The conftest lite0 regressor (ImageNet CNN, pose scale 5 m)."""
    return PoseModel.from_checkpoint(checkpoints['reg'])


@pytest.fixture(scope='module')
def exports(model):
    """``(fp32 bytes, int8 bytes)``: the int8 one calibrated on 16 real frames (0-120)."""
    fp32 = export_onnx(model)
    int8 = quantize_export(fp32, load_frames(16, start=0, stride=8), {'dataset': 'test'})
    return fp32, int8


@pytest.fixture(scope='module')
def heldout():
    """Twelve real frames after the calibration frames (130-350)."""
    return load_frames(12, start=130, stride=20)


# ---------------------------------------------------------------------------- the table

@pytest.mark.parametrize('runtime, device, precision, valid', [
    ('onnx', 'cpu', 'fp16', 'fp32, int8'),
    ('onnx', 'cpu', 'bf16', 'fp32, int8'),
    ('torch', 'cpu', 'int8', 'fp32, bf16'),
    ('torch', 'cpu', 'fp16', 'fp32, bf16'),
    ('onnx', 'cuda', 'int8', 'fp32'),
    ('torch', 'cuda', 'int8', 'fp32, fp16, bf16'),
])
def test_an_unsupported_combination_names_the_value_and_the_valid_choices(
        runtime, device, precision, valid):
    with pytest.raises(ValueError) as info:
        check_precision(runtime, device, precision)
    text = str(info.value)
    assert f"precision '{precision}'" in text and f'valid there: {valid}' in text
    assert f'runtime {runtime} on {device}' in text


def test_an_unknown_precision_is_refused_with_the_list():
    with pytest.raises(ValueError, match=r"one of fp32, fp16, bf16, int8, got 'fp8'"):
        check_precision('onnx', 'cpu', 'fp8')


def test_supported_combinations_pass():
    for runtime, device, precision in [('onnx', 'cpu', 'int8'), ('onnx', 'cpu', 'fp32'),
                                       ('torch', 'cuda', 'fp16'), ('torch', 'cuda', 'bf16')]:
        assert check_precision(runtime, device, precision) == precision


def test_bf16_on_the_cpu_follows_the_cpu_flags(monkeypatch):
    """Refused without native bf16 (it would be emulated, 19x slower), accepted with it."""
    monkeypatch.setattr(precision_module, 'cpu_flags', lambda: frozenset({'avx2', 'fma'}))
    with pytest.raises(ValueError, match="precision 'bf16' on the CPU needs native bf16"):
        check_precision('torch', 'cpu', 'bf16')
    assert check_precision('torch', 'cpu', 'bf16', emulated_bf16=True) == 'bf16'
    for flag in ('avx512_bf16', 'amx_bf16', 'bf16'):
        monkeypatch.setattr(precision_module, 'cpu_flags', lambda flag=flag: frozenset({flag}))
        assert check_precision('torch', 'cpu', 'bf16') == 'bf16'


def test_auto_runtime_takes_the_runtime_that_has_the_precision(checkpoints):
    assert auto_runtime(checkpoints['reg'], 'cpu', 'int8') == 'onnx'
    assert auto_runtime(checkpoints['reg'], 'cpu', 'bf16') == 'torch'
    assert auto_runtime(checkpoints['reg'], 'cpu', 'fp32') == 'onnx'


def test_make_runtime_refuses_before_loading(checkpoints):
    """Each refusal names the value; int8 from a checkpoint says how to quantize it."""
    ckpt = checkpoints['reg']
    with pytest.raises(ValueError, match=r"'int8' with .*reg\.pt needs training images.*"
                                         r'camreloc export CKPT --precision int8'):
        make_runtime(ckpt, 'onnx', 'cpu', 'int8')
    with pytest.raises(ValueError, match=r"precision 'int8' is not supported by runtime torch"):
        make_runtime(ckpt, 'torch', 'cpu', 'int8')
    with pytest.raises(ValueError, match=r"precision 'fp16' is not supported by runtime torch "
                                         'on cpu'):
        make_runtime(ckpt, 'torch', 'cpu', 'fp16')   # once silently fp32
    with pytest.raises(ValueError, match=r"precision 'fp16' is not supported by runtime onnx "
                                         'on cpu: valid there: fp32, int8'):
        make_runtime(ckpt, 'auto', 'cpu', 'fp16')


def test_training_takes_no_int8():
    from camreloc_ros.core.config import check_conf
    from camreloc_ros.core.training.trainer import schema

    check_conf({'train': {'precision': 'bf16'}}, schema)
    with pytest.raises(ConfigError, match=r"'train\.precision'.*'int8'"):
        check_conf({'train': {'precision': 'int8'}}, schema)


# ---------------------------------------------------------------------------- bf16

def test_bf16_cpu_autocast_runs_the_cnn_in_bf16_and_the_head_in_float32(model, heldout):
    """Emulated here when the CPU lacks bf16: the numbers are bf16's either way."""
    fp32 = TorchRuntime(model, threads=1)
    bf16 = TorchRuntime(model, precision='bf16', threads=1, emulated_bf16=True)
    assert 'bf16' in bf16.describe() and 'bf16' not in fp32.describe()
    x = fp32.input_buffer(1)
    InferenceEngine(fp32).pre(heldout[0], out=x[0])
    a, b = fp32.features(x), bf16.features(x)
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    assert 1e-4 < rel < 0.1, rel   # rounded to bf16 (not float32), yet the same features
    out = bf16.pose(x)
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out['pos'], fp32.pose(x)['pos'], atol=0.05 * 5.0)


# ---------------------------------------------------------------------------- int8

def test_int8_export_is_a_self_describing_quantized_file(exports, model):
    fp32, int8 = exports
    proto = check_self_contained(int8, 'int8 export')   # no external data: the loader's check
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert meta['precision'] == 'int8' and meta['model_conf'] == model.conf
    assert meta['quantization']['calibration'] == {'dataset': 'test', 'frames': 16}
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count('QuantizeLinear') > 20 and ops.count('DequantizeLinear') > 40
    assert any(t.data_type == onnx.TensorProto.INT8 for t in proto.graph.initializer)
    # the head stays float32: its matrix products take float weights, never dequantized ones
    produced_by = {out: n.op_type for n in proto.graph.node for out in n.output}
    for node in proto.graph.node:
        if node.op_type == 'Gemm':
            assert produced_by.get(node.input[1]) != 'DequantizeLinear', node.name
    # the full-resolution convolutions stay float32 too (lite0: stem and first block)
    quantize, keep = int8_plan(onnx.load_model_from_string(fp32), 224)
    assert len(keep) == 4 and keep[0].endswith('frozen.0.0/Conv')
    assert len(int8) < 0.8 * len(fp32)


def test_int8_poses_stay_near_fp32_on_real_images(exports, heldout):
    """Within 0.05 x the pose scale and 0.5 deg; features still tell the frames apart.

    Measured: median move 0.13 m of a 5 m pose scale, 0.03 deg; pooled features 18 % off
    float32 (relative L2), against 105 % between different frames.
    """
    fp32, int8 = (OnnxRuntime(b, threads=1) for b in exports)
    assert int8.precision == 'int8' and 'int8' in int8.describe()
    e32, e8 = InferenceEngine(fp32), InferenceEngine(int8)
    a, b = [e32.predict(f) for f in heldout], [e8.predict(f) for f in heldout]
    moved = np.array([np.linalg.norm(p.position - q.position) for p, q in zip(a, b)])
    turned = np.degrees([orientation_error_rad(p.quaternion, q.quaternion) for p, q in zip(a, b)])
    assert 1e-4 < np.median(moved) < 0.05 * 5.0, moved
    assert np.median(turned) < 0.5, turned
    x = np.stack([e32.pre(f) for f in heldout])
    f32, f8 = fp32.features(x), int8.features(x)
    dist = np.linalg.norm(f8[:, None] - f32[None], axis=2)     # int8 frame i vs fp32 frame j
    assert (dist.argmin(axis=1) == np.arange(len(heldout))).all()
    rel = np.linalg.norm(f8 - f32, axis=1) / np.linalg.norm(f32, axis=1)
    assert np.median(rel) < 0.3, rel


def test_the_precision_must_match_the_file(exports, tmp_path):
    fp32, int8 = exports
    with pytest.raises(ValueError, match=r"'int8' needs an int8 export, and .* is fp32: "
                                         r'quantize the checkpoint with `camreloc export'):
        OnnxRuntime(fp32, precision='int8')
    with pytest.raises(ValueError, match=r'is an int8 export: set precision int8'):
        OnnxRuntime(int8, precision='fp32')
    path = tmp_path / 'model.int8.onnx'
    path.write_bytes(int8)
    engine = InferenceEngine.from_checkpoint(path, runtime='auto', device='auto',
                                             precision='int8')
    assert engine.runtime.precision == 'int8' and engine.device.type == 'cpu'
    with pytest.raises(OnnxModelError, match='only a float32 export can be quantized'):
        quantize_export(int8, load_frames(1))


def test_int8_cache_is_keyed_by_the_calibration_frames(checkpoints, tmp_path):
    """Quantized once per checkpoint and calibration set, next to the float32 export."""
    first = cached_int8(checkpoints['reg'], DATA, tmp_path, fmt='posed', count=4)
    stamp = first.stat().st_mtime_ns
    assert cached_int8(checkpoints['reg'], DATA, tmp_path, fmt='posed', count=4) == first
    assert first.stat().st_mtime_ns == stamp   # not redone
    meta = json.loads({p.key: p.value for p in onnx.load(str(first)).metadata_props}[
        METADATA_KEY])
    calib = meta['quantization']['calibration']
    assert calib['split'] == 'train' and calib['frames'] == 4 and calib['format'] == 'posed'
    fp32 = next(p for p in tmp_path.glob('*.onnx') if '-int8-' not in p.name)
    assert first == int8_cache_path(fp32, {k: v for k, v in calib.items() if k != 'frames'})
    # other calibration frames (or another dataset) are another file
    _, other = training_calibration(DATA, {}, 'posed', 5)
    assert int8_cache_path(fp32, other) != first
    assert int8_cache_path(fp32, dict(other, dataset='/elsewhere')) != int8_cache_path(fp32, other)


def test_calibration_frames_are_spread_over_the_split():
    frames = list(range(100))
    assert pick_calibration_frames(frames, 5) == [0, 25, 50, 74, 99]
    assert pick_calibration_frames(frames[:3], 5) == [0, 1, 2]
    with pytest.raises(ValueError):
        pick_calibration_frames(frames, 0)


def test_export_tool_writes_and_checks_an_int8_file(checkpoints, tmp_path):
    """``camreloc export --precision int8 --data``; its check fails a quantization that moves
    the poses more than the tolerance (here made impossibly tight)."""
    from camreloc_ros.tools import export

    paths = {'checkpoint': str(checkpoints['reg']), 'out': str(tmp_path / 'reg.int8.onnx')}
    with pytest.raises(ValueError, match='--precision int8 needs --data DATASET'):
        export.main({'precision': 'int8'}, paths)
    conf = {'precision': 'int8', 'data_format': 'posed', 'calibration_frames': 4,
            'check_frames': 4, 'int8_tolerance': 1e-9}
    with pytest.raises(RuntimeError, match=r'the int8 export moves the median position .* m '
                                           r'from float32 \(> 1e-09 x the pose scale 5\.00 m\)'):
        export.main(conf, dict(paths, data=str(DATA)))
    assert OnnxRuntime(paths['out'], precision='int8').precision == 'int8'


def test_node_precision_parameter_selects_int8_or_fails_configure(
        exports, checkpoints, tmp_path):
    """int8 .onnx: the node runs it; a .pt with int8: configure fails saying what to do."""
    from rclpy.parameter import Parameter
    from support import allocate_domain, ros_environment, RosHarness

    from camreloc_ros.ros.localizer_node import LocalizerNode

    domain = allocate_domain()

    path = tmp_path / 'reg.int8.onnx'
    path.write_bytes(exports[1])
    with ros_environment(domain, tmp_path / 'ros_log'):
        harness = RosHarness(domain)
        try:
            for model, ok in ((path, True), (checkpoints['reg'], False)):
                node = harness.add(LocalizerNode(
                    namespace='int8', context=harness.context, parameter_overrides=[
                        Parameter('model', value=str(model)),
                        Parameter('precision', value='int8'),
                        Parameter('device', value='cpu')]))
                assert node.is_active == ok
                if ok:
                    assert 'int8' in node.engine.describe()
                    assert node.engine.runtime.precision == 'int8'
                else:
                    assert "precision 'int8'" in node.health.error
                    assert 'camreloc export CKPT --precision int8' in node.health.error
                harness.remove(node)
        finally:
            harness.shutdown()
