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

"""Small helpers shared by the command-line tools (no ROS, no argparse), and their logging.

Core and tools report through ``logging.getLogger('camreloc_ros')``; only the tools (the
applications) attach a handler: :func:`configure_logging` (the CLI's ``-v``/``-q``), or
:func:`tool_logging` when a tool's ``main`` runs from Python with nothing configured, so it
prints what it always printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
import sys
from typing import Iterable, Iterator, Sequence

from camreloc_ros.core.data.datasets import Frame, IMAGE_SUFFIXES
from camreloc_ros.core.evaluation.metrics import FALLBACK_FPS
from camreloc_ros.core.io import (  # noqa: F401 - re-exported for the tools
    atomic_output, atomic_write_bytes, atomic_write_text)


LOGGER = 'camreloc_ros'


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
                            inputs: Iterable[tuple[str, str | Path | None]]) -> None:
    """Raise ValueError when output ``out`` is one of ``inputs`` or lies inside one.

    ``inputs`` are ``(what, path)`` pairs (a dataset folder, a bag, a checkpoint); None is
    skipped. A tool writes only beside its inputs, never into them, so no ``--overwrite``
    (and no new file among a dataset's images) can damage what it reads. Paths are compared
    resolved, so a symlink or ``..`` does not hide an input.
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
