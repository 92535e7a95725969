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

"""``camreloc evaluate CKPT DATA``: score a checkpoint on a dataset split.

Predictions come from :class:`InferenceEngine` (the live node's code path), so the numbers
here are the numbers the node would publish for the same images. The block split defaults to
the one the checkpoint was trained with (``extra['data']``), so "test" means the frames the
model never saw. Results go through :func:`camreloc_ros.core.evaluation.metrics.write_results`.

Every evaluation also scores the bar a pose network must clear
(:mod:`camreloc_ros.core.evaluation.baselines`): retrieval top-1 over the checkpoint's training
frames with its own trunk's global descriptor, and the oracle nearest training pose, and
says whether the network beats retrieval (``baselines: False`` / ``--no-baselines`` skips it).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from camreloc_ros.core.config import merge_conf
from camreloc_ros.core.data.formats import FORMATS, read_dataset, reader_options
from camreloc_ros.core.data.split import (checkpoint_train_frames, frame_breaks,
                                          SPLIT_DEFAULTS, split_dataset, SPLIT_NAMES,
                                          split_params)
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.core.inference.runtimes import PRECISIONS, RUNTIMES
from camreloc_ros.core.evaluation.map_eval import evaluate_map, open_map
from camreloc_ros.core.evaluation.metrics import format_table, write_results
from camreloc_ros.core.geometry import pose_from_matrix
from camreloc_ros.tools.common import (add_reader_overrides, default_out_dir, frame_stamps,
                                       READER_CONF, reader_overrides, require_exists,
                                       require_file, tool_logging)

logger = logging.getLogger('camreloc_ros')

default_conf = {
    'format': None,      # dataset format; None = the checkpoint's training format
    'split': 'test',     # train | test | all
    'block': None,       # None = checkpoint's extra['data']['block'], else SPLIT_DEFAULTS
    'every': None,       # None = checkpoint's extra['data']['every'], else SPLIT_DEFAULTS
    'batch_size': 16,
    'device': 'auto',
    'runtime': 'torch',        # torch | onnx (same poses to 1e-4; onnx is faster on CPU)
    'precision': 'fp32',       # of the CNN; int8 (onnx): quantized once on the training frames
    'limit': None,       # evaluate only the first N frames of the split (quick checks)
    'title': None,       # row name in the table; None = '<checkpoint name> <split>'
    'refine': None,      # with a map: localization.refiner.default_conf overrides
    'baselines': True,   # retrieval top-1 and oracle rows (one trunk pass per training frame)
    'data': READER_CONF,  # reader options (data.drop_unmatched=true ...); None = checkpoint's
}


def selection_warnings(extra: dict, frames: list, ckpt: Path) -> list[str]:
    """Say when the scored frames are ones the checkpoint was selected (or trained) on.

    Validation frames chose ``best.pt`` and the hyper-parameters: scores on them are
    optimistic. Checkpoints from before the train/val separation validated on the test split.
    """
    split = extra.get('split') or {}
    names = {f.name for f in frames}
    if 'val_names' not in split:
        if extra.get('history') and any('val_score' in h for h in extra['history']):
            return [f'{ckpt} predates the train/validation separation: its validation frames '
                    'were the test split, so a best-on-validation checkpoint was selected on '
                    'these very frames and its test numbers are optimistic']
        return []
    seen = names & set(split['val_names'])
    if not seen:
        return []
    return [f'{len(seen)} of the {len(names)} scored frames are validation frames that '
            f'{ckpt} was selected on ({split.get("val_source", "validation")}): these numbers '
            'are optimistic; score the test split for an honest number']


def retrieval_baselines(ckpt: Path, train: list, frames: list, preds: list,
                        gt_pos: np.ndarray, gt_quat: np.ndarray, title: str,
                        device: str = 'cpu') -> dict:
    """Score retrieval top-1 and the oracle for ``frames`` against the ``train`` frames.

    The descriptor is the checkpoint's own trunk (GeM), also for an ONNX runtime (the
    ``.pt`` is loaded for it); an ``.onnx`` model has no trunk to describe images with, so
    its entry says the rows are not shown and why. Returns the ``baselines`` entry of
    :func:`~camreloc_ros.core.evaluation.metrics.write_results`.
    """
    from camreloc_ros.core.evaluation import baselines as bl

    if ckpt.suffix.lower() == '.onnx':
        return bl.not_shown(f'{ckpt} is an ONNX model; retrieval needs the trunk of its .pt '
                            'checkpoint (evaluate the .pt, --runtime onnx for ONNX poses)')
    if not train:
        return bl.not_shown('the checkpoint has no training frames in this dataset')
    from camreloc_ros.core.localization.retrieval import describe_files, GlobalDescriptor

    t0 = time.perf_counter()
    describe = GlobalDescriptor.from_checkpoint(ckpt, device=device)
    train_desc = describe_files(describe, [f.image_path for f in train])   # cached
    top1 = bl.retrieval_top1(describe, train_desc, (read_rgb(f.image_path) for f in frames))
    rows = bl.comparison_rows(np.stack([p.position for p in preds]),
                              np.stack([p.quaternion for p in preds]), gt_pos, gt_quat,
                              np.stack([f.pose_c2w for f in train]), top1, network_row=title)
    seconds = time.perf_counter() - t0
    doc = bl.baselines_doc(rows, title, train_frames=len(train), seconds=round(seconds, 2),
                           descriptor=describe.conf(), top1=[train[i].name for i in top1])
    seen = len({f.name for f in frames} & {f.name for f in train})
    if seen:   # --split train / all: those frames retrieve themselves
        doc['verdict'] += (f'; {seen} of the {len(frames)} scored frames are training frames, '
                           'which retrieval finds exactly: score the test split')
    return doc


def _retrieval_errors(baselines: dict, train: list, gt_pos: np.ndarray,
                      gt_quat: np.ndarray) -> dict | None:
    """Per-frame errors of retrieval top-1 (``baselines['top1']``) for error_cdf.png."""
    if not baselines.get('top1'):
        return None   # not shown (ONNX model, no training frames)
    from camreloc_ros.core.evaluation.baselines import RETRIEVAL_ROW
    from camreloc_ros.core.evaluation.metrics import pose_errors

    pose_of = {f.name: f.pose_c2w for f in train}
    pos, quat = pose_from_matrix(np.stack([pose_of[name] for name in baselines['top1']]))
    return {RETRIEVAL_ROW: pose_errors(pos, quat, gt_pos, gt_quat)}


def query_intrinsics(intrinsics, image_path) -> np.ndarray | None:
    """Return the test camera's K at its image size (None: the dataset has no calibration).

    The queries are refined with their own camera's calibration, as the live node uses its
    ``camera_info``, never the map's camera assumed for them.
    """
    if intrinsics is None:
        return None
    import cv2
    image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    h, w = image.shape[:2]
    return intrinsics.scaled(w, h).matrix()


def main(conf: dict, paths: dict) -> Path:
    """Predict every frame of the split, write the result files, return the output folder.

    ``paths``: ``checkpoint``, ``data`` and optional ``out`` (default
    ``<checkpoint dir>/eval_<split>``) and ``map`` (a ``camreloc map`` file: adds the
    retrieval, oracle and refined rows,
    :func:`camreloc_ros.core.evaluation.map_eval.evaluate_map`).
    """
    conf = merge_conf(default_conf, conf)
    tool_logging()
    ckpt = require_file(paths['checkpoint'], 'checkpoint')
    data = require_exists(paths['data'], 'dataset')
    if conf['split'] not in SPLIT_NAMES:
        raise ValueError(f'split must be one of {", ".join(SPLIT_NAMES)}, '
                         f'got {conf["split"]!r}')
    if int(conf['batch_size']) < 1:
        raise ValueError(f'batch_size must be >= 1, got {conf["batch_size"]}')
    if conf['limit'] is not None and int(conf['limit']) < 1:
        raise ValueError(f'limit must be >= 1 (or None for all frames), got {conf["limit"]}')
    out = Path(paths.get('out') or default_out_dir(ckpt, f'eval_{conf["split"]}'))

    engine = InferenceEngine.from_checkpoint(ckpt, runtime=conf['runtime'],
                                             device=conf['device'], precision=conf['precision'],
                                             calibration=data)
    extra = engine.checkpoint_extra or {}   # torch or ONNX Runtime alike
    fmt = conf['format'] or ((extra.get('data') or {}).get('format'))
    if fmt is None:
        raise ValueError(f'dataset format not given and not stored in {ckpt}; '
                         f'pass --format ({", ".join(FORMATS)})')
    block, every = split_params(conf, extra)
    options = reader_options(fmt, extra.get('data'), conf['data'])   # as training read it
    dataset = split_dataset(read_dataset(data, fmt, **options), conf['split'], block=block,
                            every=every)
    frames = dataset.frames
    if engine.scr and dataset.intrinsics is not None:   # PnP with the scored camera's own K
        engine.set_intrinsics(dataset.intrinsics.matrix(), dataset.intrinsics.width,
                              dataset.intrinsics.height)
    lmap = train = None
    if paths.get('map') or conf['baselines']:
        train = checkpoint_train_frames(data, fmt, extra, conf)[1]   # the map's frames
    if paths.get('map'):   # checked before any work: a wrong map is an error, not a row
        lmap = open_map(paths['map'], ckpt, train, str(data))
    if conf['limit'] is not None:
        frames = frames[:int(conf['limit'])]
    if not frames:
        raise ValueError(f'no frames to evaluate in the {conf["split"]} split of {data}')

    for line in selection_warnings(extra, frames, ckpt):
        logger.warning(line)
    official = fmt in ('7scenes', 'cambridge')
    how = 'official split' if official else f'block={block}, every={every}'
    logger.info(f'evaluating {ckpt} ({engine.describe()}) on {len(frames)} {conf["split"]} '
                f'frames of {data} ({fmt}, {how})')
    t0 = time.perf_counter()
    preds = engine.predict_frames((read_rgb(f.image_path) for f in frames),
                                  breaks=frame_breaks(frames),
                                  stamps=[f.timestamp for f in frames],
                                  batch_size=int(conf['batch_size']))
    seconds = time.perf_counter() - t0
    gt_pos, gt_quat = pose_from_matrix(np.stack([f.pose_c2w for f in frames]))
    pred_pos = np.stack([p.position for p in preds])
    pred_quat = np.stack([p.quaternion for p in preds])
    title = conf['title'] or f'{ckpt.stem} {conf["split"]}'
    info = {'checkpoint': str(ckpt), 'data': str(data), 'format': fmt,
            'split': conf['split'], 'block': None if official else block,
            'every': None if official else every, 'limit': conf['limit'],
            'model': engine.describe(), 'frames_per_second': len(frames) / max(seconds, 1e-9)}
    names, stamps = [f.name for f in frames], frame_stamps(frames)
    baselines, compare = None, None   # compare: other methods' errors on error_cdf.png
    if lmap is not None:
        msum = evaluate_map(lmap, ckpt, (read_rgb(f.image_path) for f in frames), names, stamps,
                            preds, gt_pos, gt_quat, out, title, conf['refine'], info,
                            K=query_intrinsics(dataset.intrinsics, frames[0].image_path))
        from camreloc_ros.core.evaluation.baselines import baselines_doc, NETWORK_ROW
        rows = {k: v for k, v in msum['rows'].items() if not k.startswith('refined')}
        baselines = baselines_doc(rows, NETWORK_ROW, map=str(lmap.path))
        compare = {k: v for k, v in msum['errors'].items() if k != NETWORK_ROW}
    elif conf['baselines']:
        logger.info(f'retrieval baselines: describing {len(train)} training and {len(frames)} '
                    "scored frames with the checkpoint's trunk")
        baselines = retrieval_baselines(ckpt, train, frames, preds, gt_pos, gt_quat, title,
                                        str(engine.device))
        if 'seconds' in baselines:
            logger.info(f'retrieval baselines took {baselines["seconds"]:.1f} s '
                        '(--no-baselines skips them)')
        compare = _retrieval_errors(baselines, train, gt_pos, gt_quat)
    results = write_results(out, names, stamps, pred_pos, pred_quat, gt_pos, gt_quat,
                            var=np.stack([np.diag(p.covariance) for p in preds]), title=title,
                            info=info, baselines=baselines, compare=compare)
    rows = {title: results.summary, **((baselines or {}).get('rows') or {})}
    print(format_table(rows), end='')   # the product: always printed
    if baselines is not None:
        print(baselines['verdict'])
    if lmap is not None:   # the localization states: is a wrong pose published as localized
        print(msum['localization']['table'], end='')
    written = ', '.join(p.name for p in results.paths.values())
    logger.info(f'{len(frames)} frames in {seconds:.1f} s ({len(frames) / max(seconds, 1e-9):.1f} '
                f'frames/s); results in {out}: {written}')
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc evaluate``."""
    parser.add_argument('checkpoint', type=Path, help='checkpoint file (.pt)')
    parser.add_argument('data', type=Path, help='dataset root folder (or csv file)')
    parser.add_argument('--format', choices=FORMATS, default=None,
                        help='dataset format (default: the one stored in the checkpoint)')
    parser.add_argument('--split', choices=SPLIT_NAMES, default=default_conf['split'],
                        help='frames to score (default test: the held-out blocks)')
    parser.add_argument('--out', type=Path, default=None,
                        help='output folder (default: <checkpoint dir>/eval_<split>)')
    parser.add_argument('--batch-size', type=int, default=default_conf['batch_size'],
                        help='frames per network call (default %(default)s)')
    parser.add_argument('--device', default=default_conf['device'],
                        help='auto, cpu or cuda[:N]')
    parser.add_argument('--runtime', default=default_conf['runtime'], choices=RUNTIMES,
                        help='inference runtime (onnx: exported once, cached)')
    parser.add_argument('--precision', default=default_conf['precision'], choices=PRECISIONS,
                        help='CNN precision: fp16/bf16 torch autocast (CUDA; bf16 also a CPU '
                        'with native bf16), int8 ONNX Runtime on the CPU, quantized once on the '
                        'training frames of DATA (docs/performance.md)')
    parser.add_argument('--block', type=int, default=None,
                        help=f'frames per held-out block (default: from the checkpoint, '
                        f'else {SPLIT_DEFAULTS["block"]}); ignored for 7scenes/cambridge')
    parser.add_argument('--every', type=int, default=None,
                        help=f'every N-th block is test (default: from the checkpoint, '
                        f'else {SPLIT_DEFAULTS["every"]})')
    parser.add_argument('--limit', type=int, default=None,
                        help='only the first N frames of the split (quick checks)')
    parser.add_argument('--title', default=None, help='name of the result row')
    parser.add_argument('--map', type=Path, default=None,
                        help='localization map (camreloc map): also score PnP-refined poses '
                        '(retrieval and the oracle from the map)')
    add_reader_overrides(parser)
    parser.add_argument('--no-baselines', action='store_true',
                        help='skip the retrieval top-1 and oracle rows (they describe every '
                        "training frame once with the checkpoint's trunk)")


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    conf = {'format': args.format, 'split': args.split, 'block': args.block,
            'every': args.every, 'batch_size': args.batch_size, 'device': args.device,
            'runtime': args.runtime, 'precision': args.precision, 'limit': args.limit,
            'title': args.title, 'baselines': not args.no_baselines,
            'data': reader_overrides(args.overrides)}
    return main(conf, {'checkpoint': args.checkpoint, 'data': args.data, 'out': args.out,
                       'map': args.map})
