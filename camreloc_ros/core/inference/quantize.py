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

"""``precision: int8``: an ONNX export statically quantized, calibrated on training images.

ONNX Runtime's ``quantize_static`` in QDQ format (the format its CPU kernels are optimised
for), weights int8 per output channel, activations uint8 per tensor with MinMax ranges
collected on training frames of the checkpoint's own dataset, preprocessed exactly as at
inference (:class:`~camreloc_ros.core.data.transforms.Preprocessor`). Weights use 7 bits
(``reduce_range``): without VNNI (AVX2) the uint8 x int8 kernel sums pairs of products in
int16, which saturates with 8-bit weights; onnxruntime advises it there, and a file exported
on one machine must run on every robot. It cut the pooled features' error from 22 % to 18 %
on the HoloLens walk. uint8 weights (no saturation) were 4x slower, as onnxruntime has no fast
uint8 x uint8 convolution. What stays float32, and why (docs/performance.md):

* the head (every node that is not an ancestor of the pooled features): as on CUDA, poses
  keep float32 precision, and the head's weights are shared by the fused and the temporal
  path of the export, which must stay one graph;
* the full-resolution convolutions (output side >= half the input side: lite0's stem and
  first block): quantized, they alone moved the median pose 0.28 m of the 0.39 m that
  quantizing everything did, for little time.

The result is one self-contained ONNX file like the float32 export, with the same metadata
plus ``precision: int8`` and a ``quantization`` entry (settings, float nodes, calibration
frames). It is data, never code: it loads through the same checks
(:func:`~camreloc_ros.core.inference.onnx_format.check_self_contained`). onnxruntime ships
the quantizer; nothing else is needed.
"""

from __future__ import annotations

from contextlib import contextmanager
import copy
import hashlib
import json
import logging
from pathlib import Path
import tempfile
from typing import Callable, Iterable, Sequence, TYPE_CHECKING

import numpy as np

from camreloc_ros import __version__
from camreloc_ros.core.data.transforms import Preprocessor, read_rgb
from camreloc_ros.core.inference.onnx_format import (cached_onnx, check_self_contained, FEAT,
                                                     FEATURES, IMAGES, METADATA_KEY,
                                                     OnnxModelError, read_metadata)
from camreloc_ros.core.io import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from camreloc_ros.core.data.datasets import Frame

logger = logging.getLogger('camreloc_ros')

#: training frames the ranges are collected on, spread evenly over the training split
#: (16, 64 and all 248 HoloLens training frames gave the same poses within 0.03 m)
CALIBRATION_FRAMES = 64
CALIBRATION_BATCH = 8       # frames per calibration run: bounds the activations kept at once
QUANTIZER_VERSION = 1       # bump when the recipe changes: int8 cache entries are redone
FLOAT_SIDE_FRACTION = 0.5   # convolutions with an output side >= this x input stay float32


def cnn_nodes(proto) -> list:
    """Return the nodes the pooled features depend on (the CNN), in graph order."""
    nodes = list(proto.graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    needed, todo = set(), [FEAT]
    while todo:
        i = producer.get(todo.pop())
        if i is None or i in needed:
            continue
        needed.add(i)
        todo.extend(nodes[i].input)
    return [nodes[i] for i in sorted(needed)]


def int8_plan(proto, size: int) -> tuple[list[str], list[str]]:
    """``(nodes to quantize, convolutions kept float32)`` of an export with input side ``size``.

    Node names are made unique first where the exporter left them empty or repeated (the
    quantizer selects nodes by name).
    """
    from onnx import shape_inference

    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f'{node.op_type}_{i}'
        seen.add(node.name)
    inferred = shape_inference.infer_shapes(proto)
    sides = {}
    for info in inferred.graph.value_info:
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[2].HasField('dim_value'):
            sides[info.name] = dims[2].dim_value
    quantize, keep = [], []
    for node in cnn_nodes(proto):
        if node.op_type == 'Conv' and sides.get(node.output[0], 0) >= FLOAT_SIDE_FRACTION * size:
            keep.append(node.name)
        else:
            quantize.append(node.name)
    return quantize, keep


def calibration_batches(images: Iterable, pre: Preprocessor,
                        batch: int = CALIBRATION_BATCH) -> list[np.ndarray]:
    """RGB uint8 images (or callables returning one) -> ``(B, 3, S, S)`` network inputs.

    Through the inference preprocessing itself, so the ranges are those the node feeds.
    """
    arrays = [pre(img() if callable(img) else img) for img in images]
    if not arrays:
        raise ValueError('int8 calibration needs at least one image')
    return [np.stack(arrays[i:i + batch]) for i in range(0, len(arrays), batch)]


def _reader(batches: list[np.ndarray], features: Callable[[int], np.ndarray]):
    """Make a CalibrationDataReader over ``batches`` that the strided calibration restarts.

    The export's second input (``features``, the temporal path) gets zeros: it feeds only the
    head, which is not quantized.
    """
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._items = iter(batches[start_index:end_index])

        def get_next(self) -> dict | None:
            x = next(self._items, None)
            return None if x is None else {IMAGES: x, FEATURES: features(len(x))}

    return Reader()


@contextmanager
def _quiet():
    """Silence the quantizer's chatter for the block, then restore the log levels.

    onnxruntime's quantizer logs on the root logger (a line per weight scale it widens for
    an int32 bias, advice to pre-process) and its calibration sessions warn about every
    folded constant they drop: hundreds of lines that say nothing about the result.
    """
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)   # onnxruntime's default: warnings
        root.setLevel(level)


def quantize_export(model, images: Iterable, calibration: dict | None = None) -> bytes:
    """Quantize a float32 camreloc export (bytes or ModelProto): its int8 export, as bytes.

    ``images``: RGB uint8 training frames (or callables returning one); ``calibration`` is
    recorded in the metadata (dataset, frames). Ranges are collected one batch at a time
    (``CalibStridedMinMax``): onnxruntime's ``CalibMaxIntermediateOutputs`` drops the outputs
    it collected instead of reducing them.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    proto = copy.deepcopy(check_self_contained(model, 'ONNX model to quantize'))
    meta = read_metadata(proto, '<export to quantize>')
    if meta.get('precision', 'fp32') != 'fp32':
        raise OnnxModelError(f'only a float32 export can be quantized; this one is '
                             f'{meta["precision"]}')
    pre = meta['preprocessing']
    size = int(pre['size'])
    batches = calibration_batches(images, Preprocessor(size, pre['mean'], pre['std']))
    channels = int(meta['feature_dim'])
    window = (1,) if meta['temporal'] else ()   # (B, T, C) or (B, C)
    quantize, keep = int8_plan(proto, size)
    reader = _reader(batches, lambda b: np.zeros((b, *window, channels), np.float32))
    with tempfile.TemporaryDirectory(prefix='camreloc_int8_') as tmp, _quiet():
        out = Path(tmp) / 'int8.onnx'
        quantize_static(
            proto, out, reader,
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=quantize,
            extra_options={'CalibStridedMinMax': 1})
        data = out.read_bytes()
    qproto = check_self_contained(data, 'int8 export')
    meta = dict(meta, precision='int8', quantization={
        'method': 'onnxruntime quantize_static, QDQ, MinMax calibration',
        'onnxruntime': ort.__version__, 'quantizer_version': QUANTIZER_VERSION,
        'weights': 'int8 (7-bit range), per output channel',
        'activations': 'uint8, per tensor',
        'float32': 'head; convolutions with output side >= '
                   f'{FLOAT_SIDE_FRACTION:g} x input: {", ".join(keep) or "none"}',
        'quantized_nodes': len(quantize),
        'calibration': dict(calibration or {}, frames=sum(len(b) for b in batches)),
    })
    del qproto.metadata_props[:]
    entry = qproto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta)
    qproto.producer_name = 'camreloc_ros'
    qproto.producer_version = __version__
    qproto.doc_string = ('camreloc_ros pose model, CNN int8 (QDQ); metadata_props["camreloc_ros"] '
                         'holds the model config, pose statistics and quantization as JSON')
    onnx.checker.check_model(qproto)
    return qproto.SerializeToString()


def pick_calibration_frames(frames: Sequence[Frame], count: int = CALIBRATION_FRAMES
                            ) -> list[Frame]:
    """``count`` frames spread evenly over ``frames`` (all of them when there are fewer)."""
    if count < 1:
        raise ValueError(f'calibration frames must be >= 1, got {count}')
    if len(frames) <= count:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in idx]


def training_calibration(data: str | Path, extra: dict, fmt: str | None = None,
                         count: int = CALIBRATION_FRAMES) -> tuple[list[Frame], dict]:
    """Pick the checkpoint's training frames to calibrate on; their record for the metadata.

    The format and block split are those the checkpoint was trained with (as ``camreloc
    map`` reads them), so a held-out frame never sets a range.
    """
    from camreloc_ros.core.data.split import checkpoint_train_frames

    _, frames, fmt, block, every = checkpoint_train_frames(data, fmt, extra or {}, {})
    picked = pick_calibration_frames(frames, count)
    names = [f.name for f in picked]
    digest = hashlib.sha256(json.dumps(
        [[f.name, Path(f.image_path).stat().st_size] for f in picked]).encode()).hexdigest()
    record = {'dataset': str(Path(data).resolve()), 'format': fmt, 'split': 'train',
              'block': block, 'every': every, 'first': names[0], 'last': names[-1],
              'images_sha256': digest}
    return picked, record


def export_int8(model, data: str | Path, fmt: str | None = None,
                count: int = CALIBRATION_FRAMES) -> bytes:
    """Quantize a float32 export (bytes or ModelProto) on its checkpoint's training frames."""
    meta = read_metadata(check_self_contained(model, 'ONNX model to quantize'), '<export>')
    frames, record = training_calibration(data, meta.get('extra') or {}, fmt, count)
    logger.info(f'int8: calibrating on {len(frames)} training frames of {data}')
    return quantize_export(model, [lambda f=f: read_rgb(f.image_path) for f in frames], record)


def int8_cache_path(fp32: Path, calibration: dict) -> Path:
    """Where the int8 export of the cached float32 export ``fp32`` with ``calibration`` goes."""
    import onnxruntime as ort

    key = hashlib.sha256(json.dumps([QUANTIZER_VERSION, ort.__version__, calibration],
                                    sort_keys=True).encode()).hexdigest()[:16]
    return fp32.with_name(f'{fp32.stem}-int8-{key}.onnx')


def cached_int8(checkpoint: str | Path, data: str | Path, cache_dir: str | Path | None = None,
                fmt: str | None = None, count: int = CALIBRATION_FRAMES) -> Path:
    """Return the int8 export of a checkpoint, quantized once and kept beside its fp32 export.

    The key adds to the float32 export's (checkpoint hash, package and format versions) the
    quantizer version, onnxruntime's and the calibration frames (names and file sizes), so a
    new recipe or other calibration images never reuse a stale file.
    """
    fp32 = cached_onnx(checkpoint, cache_dir)
    data_bytes = fp32.read_bytes()
    meta = read_metadata(check_self_contained(data_bytes, f'ONNX model {fp32}'), str(fp32))
    frames, record = training_calibration(data, meta.get('extra') or {}, fmt, count)
    target = int8_cache_path(fp32, record)
    if target.is_file():
        return target
    logger.info(f'int8: quantizing {checkpoint} on {len(frames)} training frames of {data} '
                f'(once, into {target.parent})')
    atomic_write_bytes(target, quantize_export(
        data_bytes, [lambda f=f: read_rgb(f.image_path) for f in frames], record))
    return target
