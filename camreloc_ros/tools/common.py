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

"""What two or more command-line tools share (no ROS), and their logging.

The tools never import each other (``test_architecture``): a helper two of them need lives
here (tool-level: options, paths, the training frames named by ``--data`` / ``--bag``) or in
the core stage it belongs to.

Core and tools report through ``logging.getLogger('camreloc_ros')``; only the tools (the
applications) attach a handler: :func:`configure_logging` (the CLI's ``-v``/``-q``), or
:func:`tool_logging` when a tool's ``main`` runs from Python with nothing configured, so it
prints what it always printed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
import signal
import subprocess
import sys
from typing import Iterable, Iterator, Sequence

from camreloc_ros.core.config import merge_conf, parse_overrides
from camreloc_ros.core.data.datasets import DatasetError, Frame, IMAGE_SUFFIXES, READER_OPTIONS
from camreloc_ros.core.data.formats import read_dataset, reader_options
from camreloc_ros.core.data.split import scene_frame, split_dataset, train_val_split
from camreloc_ros.core.evaluation.metrics import FALLBACK_FPS
from camreloc_ros.core.io import (  # noqa: F401 - re-exported for the tools
    atomic_output, atomic_write_bytes, atomic_write_text)
from camreloc_ros.core.robot.camera import camera_record


LOGGER = 'camreloc_ros'
logger = logging.getLogger(LOGGER)


class _StdoutHandler(logging.StreamHandler):
    """Write to the ``sys.stdout`` of the moment, so redirections made later still apply."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):  # noqa: D102 - logging.StreamHandler's attribute
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    """Information as plain lines; warnings and errors prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f'{record.levelname}: {text}'


def configure_logging(verbosity: int = 0) -> logging.Logger:
    """Send the ``camreloc_ros`` logger to stdout: -1 warnings only, 0 information, 1 debug.

    Idempotent: a second call only changes the level.
    """
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(_Formatter())
        logger.addHandler(handler)
    logger.propagate = False   # printed once, not again by a root handler
    logger.setLevel(logging.WARNING if verbosity < 0 else
                    logging.INFO if verbosity == 0 else logging.DEBUG)
    return logger


@contextlib.contextmanager
def logging_for(verbosity: int) -> Iterator[logging.Logger]:
    """:func:`configure_logging` for one command, then the logger as it was (in-process runs)."""
    logger = logging.getLogger(LOGGER)
    saved = logger.level, logger.propagate, list(logger.handlers)
    try:
        yield configure_logging(verbosity)
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]


def tool_logging() -> None:
    """At a tool's start: print information unless the caller configured the logger itself."""
    if not logging.getLogger(LOGGER).handlers:
        configure_logging(0)


def shared_data_dir() -> Path:
    """Locate the real posed images: ``$CAMRELOC_SHARED_DATA`` or ``<repo>/../shared/data``.

    Tests, benchmarks and the demo all find the data here, so a checkout next to ``shared/``
    (as CI has it) needs no configuration.
    """
    env = os.environ.get('CAMRELOC_SHARED_DATA')
    return Path(env) if env else Path(__file__).resolve().parents[3] / 'shared' / 'data'


@contextlib.contextmanager
def scoped_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block (child processes inherit them), then restore."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{what} {path} does not exist or is not a file')
    return path


def require_exists(path: str | Path, what: str) -> Path:
    """Return ``path`` if it exists (file or folder), else raise FileNotFoundError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'{what} {path} does not exist')
    return path


def refuse_output_in_inputs(flag: str, out: str | Path,
                            inputs: Iterable[tuple[str, str | Path | None]],
                            held: Iterable[tuple[str, str | Path | None]] = ()) -> None:
    """Raise ValueError when output ``out`` is one of ``inputs`` or lies inside one.

    ``inputs`` are ``(what, path)`` pairs (a dataset folder, a bag, a checkpoint); None is
    skipped. A tool writes only beside its inputs, never into them, so no ``--overwrite``
    (and no new file among a dataset's images) can damage what it reads. Paths are compared
    resolved, so a symlink or ``..`` does not hide an input. ``held`` are paths that ``out``
    may lie inside but must neither be nor hold, because replacing ``out`` (bag-eval's
    ``--write-bag --overwrite``) would delete them with it.
    """
    real = Path(out).resolve()
    for what, path in inputs:
        if path is None:
            continue
        other = Path(path).resolve()
        if real == other or other in real.parents:
            relation = 'is' if real == other else 'lies inside'
            raise ValueError(f'{flag} {out} {relation} the {what} {path}; a tool never writes '
                             'into its inputs: choose a path outside it')
    for what, path in held:
        if path is None:
            continue
        other = Path(path).resolve()
        if real == other or real in other.parents:
            relation = 'is' if real == other else 'holds'
            raise ValueError(f'{flag} {out} {relation} the {what} {path}; choose another '
                             'output path')


# ``data`` section of map and evaluate: the reader options (None = as the checkpoint was
# trained, else the reader's default), set as ``data.KEY=VALUE`` arguments as for train.
READER_CONF = {key: None for key in READER_OPTIONS}


def add_reader_overrides(parser) -> None:
    """Add the ``data.KEY=VALUE`` arguments of map and evaluate (the reader options)."""
    parser.add_argument('overrides', nargs='*', metavar='data.KEY=VALUE',
                        help='reader options as for train: ' + ', '.join(
                            f'data.{k} ({"/".join(f)})' for k, (_, f, _) in
                            READER_OPTIONS.items()))


def reader_overrides(items: Sequence[str]) -> dict:
    """``['data.drop_unmatched=true']`` -> the ``data`` section (unknown keys refused)."""
    conf = parse_overrides(items)
    return merge_conf({'data': READER_CONF}, conf)['data']


def default_out_dir(checkpoint: str | Path, name: str) -> Path:
    """Results live next to the checkpoint they describe: ``<checkpoint dir>/<name>``."""
    return Path(checkpoint).resolve().parent / name


def frame_stamps(frames: Sequence[Frame], fps: float = FALLBACK_FPS) -> list[float]:
    """Time of each frame for TUM files: its timestamp, else its index / ``fps``.

    Later sequences without timestamps are shifted to start one second after the previous
    sequence ends, so stamps of a multi-sequence split stay increasing and unique (evo
    associates poses by stamp).
    """
    stamps = []
    next_start = 0.0   # where a new untimed sequence may start
    seq_start = 0.0
    seq = None
    for f in frames:
        if f.sequence != seq:
            seq = f.sequence
            seq_start = next_start
        if f.timestamp is not None:
            t = float(f.timestamp)
        else:
            t = seq_start + f.index / fps
            next_start = max(next_start, t + 1.0)
        stamps.append(t)
    return stamps


def collect_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (sorted, not recursive) in named folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f'folder {p} holds no {"/".join(IMAGE_SUFFIXES)} '
                                        'images')
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f'image {p} does not exist')
    if not out:
        raise ValueError('no images given')
    return out


def parse_intrinsics(value) -> list[float] | None:
    """``'fx,fy,cx,cy'`` (or four numbers) -> four floats, focal lengths positive.

    ``--intrinsics`` of ``map`` (bags without CameraInfo) and ``reconstruct``.
    """
    if value is None:
        return None
    parts = value.split(',') if isinstance(value, str) else list(value)
    try:
        vals = [float(v) for v in parts]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 4 or not all(map(math.isfinite, vals)) or vals[0] <= 0 or vals[1] <= 0:
        raise ValueError(f'--intrinsics must be fx,fy,cx,cy in pixels (focal lengths > 0), '
                         f'got {value!r}')
    return vals


def add_bag_topic_arguments(group) -> None:
    """``--image-topic``, ``--gt-topic``, ``--gt-tf``, ``--gt-tolerance`` of training bags."""
    group.add_argument('--image-topic', help='Image or CompressedImage topic of the bags')
    group.add_argument('--gt-topic', help='ground truth: PoseStamped, '
                       'PoseWithCovarianceStamped or Odometry topic')
    group.add_argument('--gt-tf', metavar='PARENT:CHILD', help='ground truth from /tf')
    group.add_argument('--gt-tolerance', type=float, default=None,
                       help='seconds between an image and its ground truth (default 0.05)')


def checked_bag_topics(image_topic: str | None, gt_topic: str | None, gt_tf: str | None,
                       tolerance: float | None) -> float:
    """Refuse incomplete bag options before any work; return the tolerance in seconds."""
    if not image_topic or (gt_topic is None) == (gt_tf is None):
        raise ValueError('--bag needs --image-topic and one of --gt-topic / --gt-tf')
    from camreloc_ros.core.bags import DEFAULT_TOLERANCE

    return DEFAULT_TOLERANCE if tolerance is None else float(tolerance)


def bag_training_frames(path: str | Path, topic: str, gt_topic: str | None,
                        gt_tf: str | None, tolerance: float, cache_dir: Path | None,
                        log) -> tuple[list, dict]:
    """Images of a bag with ground truth, extracted once into ``cache_dir``; says how many."""
    from camreloc_ros.core import bags as bag_io

    frames, info = bag_io.extract_frames(path, topic, gt_topic, gt_tf, tolerance,
                                         cache_dir=cache_dir, log=log)
    outside = info['outside_tolerance']
    log(f'{path}: {info["frames"]} of {info["images"]} images with ground truth '
        f'({info["ground_truth"]})'
        + (f'; {outside} outside {tolerance:g} s, not used' if outside else ''))
    return frames, info


# ----------------------------------------------------------------------------- training frames

class FrameSplit(tuple):
    """``(train, val)`` frames, with ``info``: the three counts and where validation is from."""

    info: dict

    def __new__(cls, train: list, val: list, info: dict) -> 'FrameSplit':
        """Make the pair and attach ``info``."""
        obj = super().__new__(cls, (train, val))
        obj.info = info
        return obj


def split_info(train: list, val: list, test: int | None, val_source: str) -> dict:
    """Describe a split as a run records it: counts and the validation frames' names."""
    return {'train': len(train), 'val': len(val), 'test': test, 'val_source': val_source,
            'val_names': [f.name for f in val]}


def load_frames(data: str | Path, conf: dict, val_data: str | Path | None = None,
                log=None) -> FrameSplit:
    """Training and validation frames of a dataset folder; the test split is never used.

    The test split (official files, or ``data.block``/``data.every`` blocks) is set aside
    first; validation is ``val_data`` (a second folder of the same format, read whole) or
    held-out blocks of the training side (``data.val_block``/``data.val_every``).
    """
    log = log or logger.info
    dconf = conf['data']
    dataset = read_dataset(data, dconf['format'], **reader_options(dconf['format'], None, dconf))
    train = split_dataset(dataset, 'train', dconf['block'], dconf['every']).frames
    try:
        test = len(split_dataset(dataset, 'test', dconf['block'], dconf['every']).frames)
    except DatasetError:
        test = 0
    if val_data is not None:
        val = read_dataset(val_data, dconf['format'],
                           **reader_options(dconf['format'], None, dconf)).frames
        source = f'--val-data {val_data}'
    else:
        train, val = train_val_split(train, dconf['val_block'], dconf['val_every'])
        source = (f'held-out training blocks (val_block={dconf["val_block"]}, '
                  f'val_every={dconf["val_every"]})')
    info = split_info(train, val, test, source)
    info['camera'] = camera_record(dataset)   # the node checks its live camera against it
    info['scene_frame'] = scene_frame(dataset.frames, str(Path(data).resolve()))
    log(f'split: train {len(train)}, val {len(val)}, test {test} frames (test never used; '
        f'validation: {source})')
    if not val:
        log('no validation frames: best.pt will be the last epoch')
    return FrameSplit(train, val, info)


def load_bag_frames(bags: list, val_bags: list | None, conf: dict, image_topic: str,
                    gt_topic: str | None = None, gt_tf: str | None = None,
                    tolerance: float | None = None, log=None) -> FrameSplit:
    """Training and validation frames from bags: ``val_bags``, else a block split.

    Each bag is one sequence; without ``val_bags`` its held-out blocks (``data.val_block`` /
    ``data.val_every``, by image position in the topic) validate, as for the training side of
    a dataset folder (a bag has no test split: test recordings are scored with bag-eval).
    Extracted images live in ``train.cache_dir/bag_frames`` (or the default cache).
    """
    log = log or logger.info
    tol = checked_bag_topics(image_topic, gt_topic, gt_tf, tolerance)
    cache = conf['train'].get('cache_dir')
    root = Path(cache) / 'bag_frames' if cache else None

    def frames_of(paths: list) -> list:
        out = []
        for path in paths:
            out += bag_training_frames(path, image_topic, gt_topic, gt_tf, tol, root, log)[0]
        return out

    train = frames_of(list(bags))
    frame = scene_frame(train, ', '.join(str(Path(b).resolve()) for b in bags))
    if val_bags:
        val = frames_of(list(val_bags))
        source = '--val-bag ' + ' '.join(map(str, val_bags))
    else:
        train, val = train_val_split(train, conf['data']['val_block'], conf['data']['val_every'])
        source = (f'held-out blocks of the training bags (val_block={conf["data"]["val_block"]}'
                  f', val_every={conf["data"]["val_every"]})')
    log(f'split: train {len(train)}, val {len(val)} frames (validation: {source}; test bags '
        'are scored with bag-eval)')
    info = split_info(train, val, None, source)
    info['camera'] = camera_record(train)      # image size only: bags carry no intrinsics here
    info['scene_frame'] = frame
    return FrameSplit(train, val, info)


def frames_from_paths(conf: dict, paths: dict, log=None) -> FrameSplit:
    """Training and validation frames named by ``paths``: a dataset folder or rosbags.

    ``paths``: ``data`` (+ ``val_data``), or ``bags`` (+ ``val_bags``) with the topics in
    ``conf['data']['bag']``. The test split is never read.
    """
    if paths.get('data') is not None and paths.get('bags'):
        raise ValueError('give either --data or --bag, not both')
    if paths.get('bags'):
        bag = conf['data']['bag']
        return load_bag_frames(list(paths['bags']), paths.get('val_bags'), conf,
                               bag['image_topic'], bag['gt_topic'], bag['gt_tf'],
                               bag['gt_tolerance'], log=log)
    if paths.get('data') is None:
        raise ValueError('--data (a dataset folder) or --bag is required')
    return load_frames(paths['data'], conf, paths.get('val_data'), log=log)


def stop_process(proc: subprocess.Popen, timeout_s: float = 15.0) -> int:
    """Stop a started node: SIGINT (rclpy shuts down cleanly), then SIGTERM, then SIGKILL.

    Returns its exit code. The demo's and the live benchmark's node processes stop this way.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()
