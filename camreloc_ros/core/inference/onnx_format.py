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
a robot runs an exported model without it.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING
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


class OnnxModelError(CheckpointError):
    """An ONNX file without camreloc_ros metadata, or with metadata this version cannot read."""


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
    }


def export_onnx(model: PoseModel, path: str | Path | None = None,
                source: dict | None = None, opset: int = ONNX_OPSET) -> bytes:
    """Export ``model`` (float32, CPU) to ONNX with metadata; write ``path`` atomically.

    Batch (and, for temporal heads, time) axes are dynamic, so the same file serves the live
    node (batch 1) and batched offline evaluation.
    """
    import onnx
    import torch

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
    names = {i.name for i in proto.graph.input}
    outputs = {o.name for o in proto.graph.output}
    want = {FEAT, *HEAD_OUTPUTS} | (set() if meta['temporal'] else set(OUTPUT_KEYS))
    if not {IMAGES, FEATURES} <= names or not want <= outputs:
        raise OnnxModelError(f'{source}: graph inputs/outputs do not match a camreloc_ros '
                             f'export (inputs {sorted(names)}, outputs {sorted(outputs)})')
    return meta


def load_onnx(path: str | Path):
    """Read an ONNX file and its metadata: ``(ModelProto, metadata dict)``."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f'ONNX model {path} does not exist')
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise OnnxModelError(f'ONNX model {path} could not be read: {exc}') from None
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
