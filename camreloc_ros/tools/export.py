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

"""``camreloc export CKPT [--out FILE] [--precision int8 --data DIR]``: a self-describing ONNX.

The file carries what the checkpoint carries except the optimiser: model config, pose
statistics, the covariance calibration fitted on validation frames
(``extra.covariance_calibration``, applied by the engine as for the ``.pt``), format and
package versions (``metadata_props['camreloc_ros']``, JSON), so the
live node (``runtime: onnx``, ``model: FILE``) and ``InferenceEngine.from_checkpoint`` load
it directly. Batch (and time, for temporal heads) axes are dynamic. After writing, the export
is checked against eager torch on the same inputs. Only ONNX is offered: TorchScript and
torch.compile were measured slower than ONNX Runtime here (docs/performance.md). An existing
``--out`` is replaced only with ``--overwrite`` and only when it is an export of ours.

``--precision int8 --data DIR`` writes the int8 export instead (``precision: int8`` of the
node): the CNN statically quantized by ONNX Runtime, calibrated on the checkpoint's training
frames of ``DIR`` (:mod:`camreloc_ros.core.inference.quantize`). Its check compares it with the
float32 export on held-out frames of ``DIR`` (real images: random ones say nothing of the
ranges) and logs the pose differences; it fails when the median position difference exceeds
``int8_tolerance`` x the pose scale (the training positions' spread), i.e. when quantization
broke the network rather than added its usual noise.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.io import atomic_write_bytes, file_sha256
from camreloc_ros.core.inference.engine import covariance_scales
from camreloc_ros.core.inference.onnx_format import (export_onnx, METADATA_KEY, ONNX_FORMAT,
                                                     ONNX_OPSET, OUTPUT_KEYS)
from camreloc_ros.core.inference.quantize import CALIBRATION_FRAMES, export_int8
from camreloc_ros.core.inference.runtimes import OnnxRuntime, TorchRuntime
from camreloc_ros.tools.common import require_exists, require_file, tool_logging

if TYPE_CHECKING:  # pragma: no cover - annotations only; torch loads when a model does
    from camreloc_ros.core.models.pose_model import PoseModel

logger = logging.getLogger('camreloc_ros')

FORMATS = ('onnx',)
PRECISIONS = ('fp32', 'int8')   # of the exported CNN (fp16/bf16 are autocast, not a file)

default_conf = {
    'format': 'onnx',
    'opset': ONNX_OPSET,
    'check': True,          # compare the export with eager torch after writing it
    'tolerance': 1e-4,      # largest allowed difference (metres, quaternion, variance)
    'overwrite': False,     # replace an existing export (only a camreloc ONNX export)
    'precision': 'fp32',    # fp32 | int8 (static quantization, needs the dataset: data)
    'data_format': None,    # int8: dataset format; None = the checkpoint's training format
    'calibration_frames': CALIBRATION_FRAMES,   # int8: training frames the ranges come from
    'check_frames': 32,     # int8: held-out frames compared with the float32 export
    'int8_tolerance': 0.25,  # int8: largest median position difference / pose scale
}


def export_problem(path: Path) -> str | None:
    """Why ``path`` is not a camreloc ONNX export that ``--overwrite`` may replace (or None).

    The rule is the export's own metadata (``metadata_props['camreloc_ros']`` with the ONNX
    format name), whatever its version: an older export may be redone in place, while a
    checkpoint, another ONNX model or any other file is never replaced.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
        meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    except KeyError:
        return 'it has no camreloc_ros export metadata'
    except Exception as exc:    # protobuf or JSON: whatever it is, it is not an export
        return f'it is not a camreloc ONNX export ({type(exc).__name__})'
    if not isinstance(meta, dict) or meta.get('format') != ONNX_FORMAT:
        return "its metadata is not a camreloc_ros export's"
    return None


def check_export_out(out: Path, overwrite: bool) -> None:
    """Refuse an output that exists, unless ``overwrite`` and it is an export of ours."""
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise ValueError(f'--out {out} already exists; pass --overwrite to replace it (only '
                         'an ONNX file written by camreloc export is replaced)')
    problem = None if out.is_file() else 'it is not a file'
    problem = problem or export_problem(out)
    if problem:
        raise ValueError(f'--out {out} is not replaced: {problem}; --overwrite only replaces '
                         'an ONNX file written by camreloc export')


def compare_with_torch(model: PoseModel, onnx_path: str | Path, batch: int = 2,
                       seed: int = 0) -> dict:
    """Largest absolute difference per output between eager torch and ONNX Runtime.

    Inputs are random images in the normalised range; temporal models are compared over a
    window of three frames.
    """
    size = model.spec.input_size
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (batch, 3, size, size)).astype(np.float32)
    eager = TorchRuntime(model, 'cpu')
    ort = OnnxRuntime(onnx_path, 'cpu')
    if model.temporal:
        feat = np.repeat(eager.features(images)[:, None], 3, axis=1)
        feat[:, 1:] *= 0.5   # frames that differ
        ref, got = eager.head(feat), ort.head(feat)
        diffs = {'feat': float(np.abs(ort.features(images) - feat[:, 0]).max())}
    else:
        ref, got = eager.pose(images), ort.pose(images)
        diffs = {}
    diffs.update({k: float(np.abs(ref[k] - got[k]).max()) for k in OUTPUT_KEYS})
    return diffs


def compare_int8(fp32: bytes, int8: bytes, images: list) -> dict:
    """Pose differences of the int8 export from the float32 one on real images (RGB uint8).

    Position in metres and rotation in degrees, median and largest, over ``images`` run one
    at a time as the node runs them.
    """
    from camreloc_ros.core.inference.engine import InferenceEngine
    from camreloc_ros.core.geometry import orientation_error_rad

    engines = [InferenceEngine(OnnxRuntime(b, 'cpu', threads=1)) for b in (fp32, int8)]
    preds = [[e.predict(img) for img in images] for e in engines]
    dpos = np.array([np.linalg.norm(a.position - b.position) for a, b in zip(*preds)])
    drot = np.degrees([float(orientation_error_rad(a.quaternion, b.quaternion))
                       for a, b in zip(*preds)])
    return {'frames': len(images), 'position_median_m': float(np.median(dpos)),
            'position_max_m': float(dpos.max()), 'rotation_median_deg': float(np.median(drot)),
            'rotation_max_deg': float(drot.max())}


def _heldout_images(data: Path, extra: dict, fmt: str | None, count: int) -> list:
    """``count`` held-out (test split) frames of the checkpoint's dataset, spread evenly."""
    from camreloc_ros.core.data.formats import read_dataset, reader_options
    from camreloc_ros.core.data.split import split_dataset, split_params
    from camreloc_ros.core.inference.quantize import pick_calibration_frames

    fmt = fmt or (extra.get('data') or {}).get('format')
    block, every = split_params({}, extra)
    dataset = read_dataset(data, fmt, **reader_options(fmt, extra.get('data')))
    frames = split_dataset(dataset, 'test', block=block, every=every).frames
    return [read_rgb(f.image_path) for f in pick_calibration_frames(frames, count)]


def _export_int8(model: PoseModel, fp32: bytes, conf: dict, paths: dict, out: Path) -> bytes:
    """Quantize ``fp32`` on the training frames, write ``out``, compare on held-out frames."""
    if not paths.get('data'):
        raise ValueError('--precision int8 needs --data DATASET: the training images the '
                         'int8 ranges are calibrated on')
    data = require_exists(paths['data'], 'dataset')
    int8 = export_int8(fp32, data, conf['data_format'], int(conf['calibration_frames']))
    atomic_write_bytes(out, int8)
    logger.info(f'int8 export written to {out} ({len(int8) / 1e6:.1f} MB; float32: '
                f'{len(fp32) / 1e6:.1f} MB)')
    if conf['check']:
        images = _heldout_images(data, model.checkpoint_extra or {}, conf['data_format'],
                                 int(conf['check_frames']))
        diff = compare_int8(fp32, int8, images)
        scale = float(model.pos_scale)
        logger.info(f'int8 vs float32 on {diff["frames"]} held-out frames: position median '
                    f'{diff["position_median_m"]:.3f} m (max {diff["position_max_m"]:.3f}), '
                    f'rotation median {diff["rotation_median_deg"]:.2f} deg (max '
                    f'{diff["rotation_max_deg"]:.2f}); pose scale {scale:.2f} m')
        if diff['position_median_m'] > float(conf['int8_tolerance']) * scale:
            raise RuntimeError(
                f'the int8 export moves the median position {diff["position_median_m"]:.3f} m '
                f'from float32 (> {conf["int8_tolerance"]:g} x the pose scale {scale:.2f} m); '
                f'do not use {out}')
    return int8


def main(conf: dict, paths: dict) -> Path:
    """Export ``paths['checkpoint']`` to ``paths['out']`` (default: beside it, ``.onnx``).

    ``conf['precision'] == 'int8'`` quantizes the export on the training frames of
    ``paths['data']`` (default out: ``<checkpoint>.int8.onnx``).
    """
    import torch

    from camreloc_ros.core.models.pose_model import PoseModel

    conf = merge_conf(default_conf, conf)
    tool_logging()
    if conf['format'] not in FORMATS:
        raise ValueError(f'format must be one of {", ".join(FORMATS)}, got {conf["format"]!r}')
    if conf['precision'] not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got '
                         f'{conf["precision"]!r} (fp16 and bf16 are autocast at run time: '
                         'export fp32)')
    int8 = conf['precision'] == 'int8'
    ckpt = require_file(paths['checkpoint'], 'checkpoint')
    out = Path(paths.get('out') or ckpt.with_suffix('.int8.onnx' if int8 else '.onnx'))
    if out.resolve() == ckpt.resolve():
        raise ValueError(f'--out {out} would overwrite the checkpoint')
    check_export_out(out, bool(conf['overwrite']))
    model = PoseModel.from_checkpoint(ckpt)
    data = export_onnx(model, None if int8 else out,
                       source={'checkpoint': ckpt.name, 'sha256': file_sha256(ckpt)},
                       opset=int(conf['opset']))
    if int8:
        _export_int8(model, data, conf, paths, out)
        return out
    conf_m = model.conf
    logger.info(f'exported {ckpt} ({conf_m["backbone"]["name"]}+{conf_m["head"]["name"]}'
                f'{", window " + str(model.window) if model.temporal else ""}) to {out} '
                f'({len(data) / 1e6:.1f} MB, opset {conf["opset"]}, dynamic batch'
                f'{" and time" if model.temporal else ""} axes)')
    s_pos, s_rot = covariance_scales(model.checkpoint_extra)
    if (s_pos, s_rot) == (1.0, 1.0):
        logger.warning(f'{ckpt} carries no covariance calibration (trained before it '
                       'existed, or with train.calibrate_covariance false): the export '
                       "publishes the variance head's raw variances, fitted to training errors")
    else:
        logger.info(f'covariance calibration travels with the export: variances x {s_pos:.3g} '
                    f'(position), x {s_rot:.3g} (rotation)')
    if conf['check']:
        with torch.inference_mode():
            diffs = compare_with_torch(model, out)
        worst = max(diffs.values())
        logger.info('largest difference from eager torch: '
                    + ', '.join(f'{k} {v:.1e}' for k, v in diffs.items()))
        if worst > float(conf['tolerance']):
            raise RuntimeError(f'the export differs from eager torch by {worst:.2e} '
                               f'(> {conf["tolerance"]:g}); do not use {out}')
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc export``."""
    parser.add_argument('checkpoint', type=Path, help='checkpoint file (.pt)')
    parser.add_argument('--format', choices=FORMATS, default=default_conf['format'],
                        help='export format (default onnx)')
    parser.add_argument('--out', type=Path, default=None,
                        help='output file (default: the checkpoint path with .onnx)')
    parser.add_argument('--opset', type=int, default=ONNX_OPSET, help='ONNX opset version')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing ONNX export (never another kind of file)')
    parser.add_argument('--no-check', action='store_true',
                        help='skip the comparison with eager torch (int8: with float32 on '
                        'held-out frames) after exporting')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                        help='int8: quantize the CNN (ONNX Runtime static, calibrated on the '
                        'training frames of --data); default fp32')
    parser.add_argument('--data', type=Path, default=None,
                        help='int8: dataset root the checkpoint was trained on')
    parser.add_argument('--data-format', default=None,
                        help="int8: dataset format (default: the checkpoint's)")
    parser.add_argument('--calibration-frames', type=int, default=CALIBRATION_FRAMES,
                        help=f'int8: training frames to calibrate on (default '
                        f'{CALIBRATION_FRAMES})')


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    conf = {'format': args.format, 'opset': args.opset, 'check': not args.no_check,
            'overwrite': args.overwrite, 'precision': args.precision,
            'data_format': args.data_format, 'calibration_frames': args.calibration_frames}
    return main(conf, {'checkpoint': args.checkpoint, 'out': args.out, 'data': args.data})
