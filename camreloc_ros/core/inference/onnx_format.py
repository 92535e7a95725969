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

"""The ONNX file format of camreloc_ros: export, metadata, and the export cache.

ONNX files are self-describing like checkpoints: model config, pose statistics, format and
package versions are one JSON string in ``metadata_props`` under the key ``camreloc_ros``.
One graph holds two independent paths, ``images`` -> features (and, for single-frame heads,
the pose) and ``features`` -> pose, so the runtime (:class:`~.runtimes.OnnxRuntime`) can run
image to pose in one call or a temporal head over buffered features. Checkpoints run with ONNX
Runtime are exported once into the ``onnx`` cache (:func:`camreloc_ros.core.io.cache_root`),
keyed by the checkpoint's content. Reading a file needs no torch (only exporting does), so
a robot runs an exported model without it. The metadata's ``precision`` says what the CNN
runs in: ``fp32``, or ``int8`` for an export quantized by
:mod:`camreloc_ros.core.inference.quantize` (files without the key are fp32).

ONNX files come from strangers (a model handed over, a map's descriptor network): every
session the package builds goes through :func:`inference_session`, which first refuses any
tensor with *external data* (:func:`check_self_contained`). ONNX Runtime reads such data from
a path the file names, relative to the working directory for an in-memory model, so a
hostile network would otherwise load ``etc/passwd`` as its weights and return it as output.
Exports of camreloc_ros are always one self-contained file.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Iterator, TYPE_CHECKING
import warnings

from camreloc_ros import __version__
from camreloc_ros.core.io import atomic_write_bytes, cache_folder, file_sha256
from camreloc_ros.core.models.errors import CheckpointError

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from camreloc_ros.core.models.pose_model import PoseModel

OUTPUT_KEYS = ('pos', 'quat', 'var')
ONNX_FORMAT = 'camreloc_ros.onnx'
ONNX_FORMAT_VERSION = 1
METADATA_KEY = 'camreloc_ros'
ONNX_OPSET = 17
IMAGES, FEATURES, FEAT = 'images', 'features', 'feat'
HEAD_OUTPUTS = tuple(f'head_{k}' for k in OUTPUT_KEYS)
EXPORT_PRECISIONS = ('fp32', 'int8')   # of the CNN in a file (metadata ``precision``)


class OnnxModelError(CheckpointError):
    """An ONNX file without camreloc_ros metadata, or with metadata this version cannot read."""


def _tensor_files(tensor, where: str) -> Iterator[tuple[str, str]]:
    """``(where, location)`` when a TensorProto takes its bytes from a file."""
    from onnx import TensorProto

    if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
        entries = {e.key: e.value for e in tensor.external_data}
        yield f'tensor {tensor.name!r} ({where})', entries.get('location', '(no location)')


def _sparse_files(sparse, where: str) -> Iterator[tuple[str, str]]:
    yield from _tensor_files(sparse.values, where)
    yield from _tensor_files(sparse.indices, where)


def _graph_files(graph, where: str) -> Iterator[tuple[str, str]]:
    """Every file reference of a graph: initializers, node attributes, nested subgraphs."""
    for tensor in graph.initializer:
        yield from _tensor_files(tensor, f'initializer of {where}')
    for sparse in graph.sparse_initializer:
        yield from _sparse_files(sparse, f'sparse initializer of {where}')
    for node in graph.node:
        yield from _node_files(node, where)


def _node_files(node, where: str) -> Iterator[tuple[str, str]]:
    for attr in node.attribute:
        at = f'attribute {attr.name} of node {node.name or node.op_type} in {where}'
        if attr.HasField('t'):
            yield from _tensor_files(attr.t, at)
        for tensor in attr.tensors:
            yield from _tensor_files(tensor, at)
        if attr.HasField('sparse_tensor'):
            yield from _sparse_files(attr.sparse_tensor, at)
        for sparse in attr.sparse_tensors:
            yield from _sparse_files(sparse, at)
        if attr.HasField('g'):           # If / Loop / Scan bodies
            yield from _graph_files(attr.g, f'subgraph {at}')
        for graph in attr.graphs:
            yield from _graph_files(graph, f'subgraph {at}')


def check_self_contained(model, what: str, error: type[Exception] = OnnxModelError):
    """Parse an ONNX model (bytes or ``ModelProto``) and refuse any reference to a file.

    Every tensor is looked at (initializers, sparse initializers, tensor attributes such as
    ``Constant``'s, inside If/Loop/Scan subgraphs, local functions and training graphs): one
    with external data (``data_location=EXTERNAL`` or any ``external_data`` entry) raises
    ``error`` naming ``what`` and the file, before any runtime could read it. Bytes that are
    no ONNX model raise ``error`` too. Returns the parsed ``ModelProto``, which is what a
    caller must hand on (the bytes that were checked, not others).
    """
    import onnx

    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as exc:  # noqa: BLE001 - protobuf's errors: not an ONNX model
            raise error(f'{what} is not an ONNX model ({type(exc).__name__}: '
                        f'{str(exc).splitlines()[0] if str(exc) else "undecodable"})') from None
    else:
        proto = model
    if not isinstance(proto, onnx.ModelProto) or not proto.HasField('graph') \
            or proto.ir_version <= 0 or not proto.graph.node:
        raise error(f'{what} is not an ONNX model (it holds no graph to run)')
    refs = list(_graph_files(proto.graph, 'the main graph'))
    for function in proto.functions:
        for node in function.node:
            refs += _node_files(node, f'function {function.domain}.{function.name}')
    for i, info in enumerate(proto.training_info):
        refs += _graph_files(info.initialization, f'training initialization {i}')
        refs += _graph_files(info.algorithm, f'training algorithm {i}')
    if refs:
        where, location = refs[0]
        more = f' (and {len(refs) - 1} more)' if len(refs) > 1 else ''
        raise error(f'{what} refers to a file: {where} has external data at {location!r}'
                    f'{more}; refused before anything was read. camreloc_ros runs only '
                    'self-contained ONNX networks (as `camreloc export` and `camreloc map` '
                    'write them)')
    return proto


def inference_session(model, what: str, options=None, providers=None,
                      error: type[Exception] = OnnxModelError):
    """Build an ``onnxruntime.InferenceSession`` (the package's only way to build one).

    ``model`` (bytes or ``ModelProto``) is checked by :func:`check_self_contained` and the
    checked proto is what ONNX Runtime gets, parsed as ONNX only (never as an ORT-format
    flatbuffer that the check did not look at).
    """
    import onnxruntime as ort

    proto = check_self_contained(model, what, error)
    opts = options if options is not None else ort.SessionOptions()
    opts.add_session_config_entry('session.load_model_format', 'ONNX')
    return ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=providers or ['CPUExecutionProvider'])


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX model (by suffix: checkpoints are ``.pt``)."""
    return Path(path).suffix.lower() == '.onnx'


def _jsonable(value):
    """Checkpoint extras as plain JSON (numpy scalars and arrays become numbers and lists)."""
    def default(obj):
        if hasattr(obj, 'tolist'):
            return obj.tolist()
        return str(obj)
    return json.loads(json.dumps(value, default=default))


def _export_graph(model: PoseModel):
    """Two independent paths in one graph: ``images`` -> (feat[, pose]); ``features`` -> pose.

    The first path is the per-frame call (fused image -> pose for single-frame heads); the
    second lets temporal heads run over a window of buffered features. Loading splits them
    into separate sessions, so neither input is ever fed a dummy. (A class made here, so
    that importing this module needs no torch.)
    """
    from torch import nn

    class ExportGraph(nn.Module):
        def __init__(self, model: PoseModel):
            super().__init__()
            self.model = model

        def forward(self, images, features) -> tuple:
            feat = self.model.features(images)
            outs = [feat]
            if not self.model.temporal:
                fused = self.model.head_forward(feat)
                outs += [fused[k] for k in OUTPUT_KEYS]
            head = self.model.head_forward(features)
            return tuple(outs + [head[k] for k in OUTPUT_KEYS])

    return ExportGraph(model)


def model_metadata(model: PoseModel, source: dict | None = None) -> dict:
    """Describe an exported model as JSON: what a checkpoint carries, minus the weights."""
    from camreloc_ros.core.models.pose_model import CHECKPOINT_VERSION

    spec = model.spec
    return {
        'format': ONNX_FORMAT,
        'format_version': ONNX_FORMAT_VERSION,
        'package_version': __version__,
        'checkpoint_format_version': CHECKPOINT_VERSION,
        'model_conf': copy.deepcopy(model.conf),
        'pose_stats': {'mean': model.pos_mean.tolist(), 'scale': float(model.pos_scale)},
        'temporal': bool(model.temporal),
        'window': int(model.window),
        'feature_dim': int(model.backbone.out_channels),
        'preprocessing': {'size': spec.input_size, 'mean': list(spec.mean),
                          'std': list(spec.std)},
        'inputs': {IMAGES: 'B,3,S,S float32, normalised',
                   FEATURES: 'B,T,C float32' if model.temporal else 'B,C float32'},
        'source': source or {},
        'extra': _jsonable(model.checkpoint_extra),
        'precision': 'fp32',   # int8 exports (core.inference.quantize) say int8
    }


def export_onnx(model: PoseModel, path: str | Path | None = None,
                source: dict | None = None, opset: int = ONNX_OPSET) -> bytes:
    """Export ``model`` (float32, CPU) to ONNX with metadata; write ``path`` atomically.

    Batch (and, for temporal heads, time) axes are dynamic, so the same file serves the live
    node (batch 1) and batched offline evaluation.
    """
    import onnx
    import torch

    if getattr(model, 'scr', False):
        raise ValueError('ONNX export of the scene-coordinate head (model.head.name=scr) is not '
                         'implemented yet: run it with runtime torch')
    model = copy.deepcopy(model).cpu().float().eval().to(memory_format=torch.contiguous_format)
    size = model.spec.input_size
    channels = int(model.backbone.out_channels)
    images = torch.zeros(2, 3, size, size)
    features = torch.zeros((2, 3, channels) if model.temporal else (2, channels))
    outputs = [FEAT] + ([] if model.temporal else list(OUTPUT_KEYS)) + list(HEAD_OUTPUTS)
    feat_axes = {0: 'batch', 1: 'time'} if model.temporal else {0: 'batch'}
    axes = {IMAGES: {0: 'batch'}, FEATURES: feat_axes, FEAT: {0: 'batch'}}
    axes.update({k: {0: 'batch'} for k in outputs[1:] if not k.startswith('head_')})
    axes.update({k: feat_axes for k in HEAD_OUTPUTS})
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')   # the TorchScript exporter's deprecation/tracer notes
        torch.onnx.export(_export_graph(model), (images, features), buf, dynamo=False,
                          input_names=[IMAGES, FEATURES], output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    proto = onnx.load_model_from_string(buf.getvalue())
    proto.producer_name = 'camreloc_ros'
    proto.producer_version = __version__
    proto.doc_string = ('camreloc_ros pose model; metadata_props["camreloc_ros"] holds the '
                        'model config and pose statistics as JSON')
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(model_metadata(model, source))
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def read_metadata(proto, source: str = '<onnx>') -> dict:
    """Read and check the camreloc_ros metadata of a loaded ONNX model (clear errors)."""
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise OnnxModelError(
            f'{source} has no camreloc_ros metadata (metadata_props key {METADATA_KEY!r}): '
            'it was not written by `camreloc export`; export the checkpoint with '
            '`camreloc export CKPT --format onnx`')
    try:
        meta = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise OnnxModelError(f'{source}: camreloc_ros metadata is not valid JSON: {exc}')
    if not isinstance(meta, dict) or meta.get('format') != ONNX_FORMAT:
        raise OnnxModelError(f'{source}: metadata is not camreloc_ros ONNX metadata '
                             f'(no format={ONNX_FORMAT!r})')
    if meta.get('format_version') != ONNX_FORMAT_VERSION:
        raise OnnxModelError(
            f'{source} has ONNX format version {meta.get("format_version")}; this camreloc_ros '
            f'({__version__}) reads version {ONNX_FORMAT_VERSION}: export it again')
    missing = [k for k in ('model_conf', 'pose_stats', 'temporal', 'window', 'feature_dim',
                           'preprocessing') if k not in meta]
    if missing:
        raise OnnxModelError(f'{source}: camreloc_ros metadata lacks {", ".join(missing)}')
    if meta.setdefault('precision', 'fp32') not in EXPORT_PRECISIONS:   # older: fp32
        raise OnnxModelError(f'{source}: metadata precision {meta["precision"]!r} is none of '
                             f'{", ".join(EXPORT_PRECISIONS)}')
    names = {i.name for i in proto.graph.input}
    outputs = {o.name for o in proto.graph.output}
    want = {FEAT, *HEAD_OUTPUTS} | (set() if meta['temporal'] else set(OUTPUT_KEYS))
    if not {IMAGES, FEATURES} <= names or not want <= outputs:
        raise OnnxModelError(f'{source}: graph inputs/outputs do not match a camreloc_ros '
                             f'export (inputs {sorted(names)}, outputs {sorted(outputs)})')
    return meta


def load_onnx(path: str | Path):
    """Read an ONNX file and its metadata: ``(ModelProto, metadata dict)``.

    Never reads the external data a file may name: such a file is refused
    (:func:`check_self_contained`).
    """
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f'ONNX model {path} does not exist')
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OnnxModelError(f'ONNX model {path} could not be read: {exc}') from None
    proto = check_self_contained(data, f'ONNX model {path}')
    return proto, read_metadata(proto, str(path))


def cached_onnx(checkpoint: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Return the ONNX export of a checkpoint, exported once and kept under its content hash.

    The key is the checkpoint's SHA-256 plus the package and ONNX format versions, so a
    retrained checkpoint at the same path, or a new exporter, never reuses a stale file.
    """
    from camreloc_ros.core.models.pose_model import load_checkpoint_file, PoseModel

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        load_checkpoint_file(checkpoint)   # raises the reason: missing, or a directory
    digest = file_sha256(checkpoint)
    folder = Path(cache_dir) if cache_dir else cache_folder('onnx')
    target = folder / (f'{checkpoint.stem}-{digest[:16]}-{__version__}'
                       f'-v{ONNX_FORMAT_VERSION}.onnx')
    if target.is_file():
        return target   # written atomically, so it is complete; the loader checks it
    model = PoseModel.from_checkpoint_dict(load_checkpoint_file(checkpoint), str(checkpoint))
    export_onnx(model, target, source={'checkpoint': checkpoint.name, 'sha256': digest})
    return target
