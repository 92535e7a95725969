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

"""``camreloc export CKPT --format onnx [--out FILE]``: a checkpoint as a self-describing ONNX.

The file carries what the checkpoint carries except the optimiser: model config, pose
statistics, the covariance calibration fitted on validation frames
(``extra.covariance_calibration``, applied by the engine as for the ``.pt``), format and
package versions (``metadata_props['camreloc_ros']``, JSON), so the
live node (``runtime: onnx``, ``model: FILE``) and ``InferenceEngine.from_checkpoint`` load
it directly. Batch (and time, for temporal heads) axes are dynamic. After writing, the export
is checked against eager torch on the same inputs. Only ONNX is offered: TorchScript and
torch.compile were measured slower than ONNX Runtime here (docs/performance.md). An existing
``--out`` is replaced only with ``--overwrite`` and only when it is an export of ours.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.io import file_sha256
from camreloc_ros.core.inference.engine import covariance_scales
from camreloc_ros.core.inference.onnx_format import (export_onnx, METADATA_KEY, ONNX_FORMAT,
                                                     ONNX_OPSET, OUTPUT_KEYS)
from camreloc_ros.core.inference.runtimes import OnnxRuntime, TorchRuntime
from camreloc_ros.tools.common import require_file, tool_logging

if TYPE_CHECKING:  # pragma: no cover - annotations only; torch loads when a model does
    from camreloc_ros.core.models.pose_model import PoseModel

logger = logging.getLogger('camreloc_ros')

FORMATS = ('onnx',)

default_conf = {
    'format': 'onnx',
    'opset': ONNX_OPSET,
    'check': True,          # compare the export with eager torch after writing it
    'tolerance': 1e-4,      # largest allowed difference (metres, quaternion, variance)
    'overwrite': False,     # replace an existing export (only a camreloc ONNX export)
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


def main(conf: dict, paths: dict) -> Path:
    """Export ``paths['checkpoint']`` to ``paths['out']`` (default: beside it, ``.onnx``)."""
    import torch

    from camreloc_ros.core.models.pose_model import PoseModel

    conf = merge_conf(default_conf, conf)
    tool_logging()
    if conf['format'] not in FORMATS:
        raise ValueError(f'format must be one of {", ".join(FORMATS)}, got {conf["format"]!r}')
    ckpt = require_file(paths['checkpoint'], 'checkpoint')
    out = Path(paths.get('out') or ckpt.with_suffix('.onnx'))
    if out.resolve() == ckpt.resolve():
        raise ValueError(f'--out {out} would overwrite the checkpoint')
    check_export_out(out, bool(conf['overwrite']))
    model = PoseModel.from_checkpoint(ckpt)
    data = export_onnx(model, out, source={'checkpoint': ckpt.name,
                                           'sha256': file_sha256(ckpt)},
                       opset=int(conf['opset']))
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
                        help='skip the comparison with eager torch after exporting')


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    conf = {'format': args.format, 'opset': args.opset, 'check': not args.no_check,
            'overwrite': args.overwrite}
    return main(conf, {'checkpoint': args.checkpoint, 'out': args.out})
