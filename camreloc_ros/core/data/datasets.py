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
"""Readers for posed-image datasets: one in-memory form for every on-disk layout.

Every reader returns a :class:`Dataset` of :class:`Frame` objects with camera-to-world
poses in metres, so training and evaluation never care where the data came from.

Readers are strict on purpose: a relocaliser trained on a misaligned or partly broken pose
list still trains, just badly, and nobody notices. So anything unexpected (a missing image,
a short pose list, a NaN, a non-rigid matrix, ...) raises :class:`DatasetError` naming the
file and line, and nothing is ever skipped silently.

Supported formats (:data:`camreloc_ros.core.data.formats.FORMATS`):

``7scenes``
    Microsoft 7-Scenes: ``seq-XX/frame-XXXXXX.color.png|jpg`` + ``frame-XXXXXX.pose.txt``
    (4x4 camera-to-world), ``TrainSplit.txt`` / ``TestSplit.txt`` listing ``sequenceN``.
    ``split='train'|'test'`` reads the sequences of that file, ``None`` every ``seq-XX``.
    Intrinsics: fx = fy = 585, cx = 320, cy = 240 at 640x480, scaled to the image size.
``posed``
    ``images/`` (jpg/png, sorted by name = time order) + ``poses.txt`` (one row-major 4x4
    camera-to-world per line, same order) + optional ``K.txt`` (3x3). One sequence named
    after the folder.
``cambridge``
    Cambridge Landmarks ``dataset_train.txt`` / ``dataset_test.txt``: 3 header lines, then
    ``seqN/frameXXXXX.png X Y Z W P Q R``: camera centre and the *world-to-camera* rotation
    as a w, x, y, z quaternion (VisualSFM convention); converted to camera-to-world.
    ``split='train'|'test'`` reads one file, ``None`` both. No intrinsics.
``tum``
    TUM RGB-D: ``rgb.txt`` (``timestamp filename``) + ``groundtruth.txt`` (``timestamp tx ty
    tz qx qy qz qw``, camera-to-world). Each image gets the ground-truth pose nearest in time
    if it is within ``max_dt`` seconds (option ``data.max_dt``, default 0.02), not interpolated
    as in bags (both rules and why: :mod:`camreloc_ros.core.bags.groundtruth`). Images without
    one raise, unless ``drop_unmatched=True`` (``data.drop_unmatched=true`` on the command
    line): then they are dropped and counted in ``Dataset.dropped``,
    and ``Frame.index`` keeps the original position so the gap stays visible.
``csv``
    One csv file with header ``image,x,y,z,qx,qy,qz,qw`` (camera-to-world position and
    x, y, z, w quaternion; ``image`` relative to the dataset root) and optional ``sequence``
    and ``timestamp`` columns. ``root`` is the csv file itself or a folder holding it (option
    ``file``, ``data.file``; default ``poses.csv`` or the only ``*.csv`` there).

The readers themselves are in :mod:`camreloc_ros.core.data.readers`, and
:func:`camreloc_ros.core.data.formats.read_dataset` picks one by name.
``posed``, ``tum`` and ``csv`` have no official split: use :func:`split.split_dataset`.
An optional ``K.txt`` next to the data gives intrinsics for ``tum`` and ``csv`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camreloc_ros.core.config import Spec

SPLITS = ('train', 'test')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')

# Every reader option: a keyword of read_dataset and the config key ``data.<name>`` of
# ``camreloc train``, ``map`` and ``evaluate`` (``key=value`` arguments; the trainer's schema
# holds these), so any advice a reader gives can be followed from the command line.
# name -> (default, formats that take it, allowed values).
READER_OPTIONS = {
    'max_dt': (0.02, ('tum',), Spec('float', lo=0.0, lo_open=True)),   # s to ground truth
    'drop_unmatched': (False, ('tum',), Spec('bool')),   # drop images without ground truth
    'file': (None, ('csv',), Spec('str', optional=True)),   # the csv in the folder
}

# 7-Scenes RGB camera (Kinect v1 colour stream, as used by the dataset's authors).
SEVEN_SCENES_K = {'width': 640, 'height': 480, 'fx': 585.0, 'fy': 585.0, 'cx': 320.0,
                  'cy': 240.0}


class DatasetError(ValueError):
    """Bad or inconsistent dataset on disk.

    The message names the file (and line, where there is one) and what was expected;
    ``path`` and ``line`` hold the same for code that wants to point at it.
    """

    def __init__(self, message: str, path: Path | None = None,
                 line: int | None = None) -> None:
        where = ''
        if path is not None:
            where = f'{path}, line {line}: ' if line is not None else f'{path}: '
        super().__init__(where + message)
        self.path = None if path is None else Path(path)
        self.line = line


@dataclass(frozen=True, eq=False)
class Frame:
    """One posed image; ``pose_c2w`` maps camera coordinates to world (metres).

    The pose is stored as a read-only float64 copy so a frame cannot be changed behind the
    dataset's back. Frames compare by identity (arrays have no single truth value); compare
    ``name`` to match frames across datasets.
    """

    name: str
    image_path: Path
    pose_c2w: np.ndarray
    sequence: str
    index: int
    timestamp: float | None = None

    def __post_init__(self) -> None:
        pose = np.array(self.pose_c2w, dtype=np.float64)
        if pose.shape != (4, 4):
            raise ValueError(f'pose_c2w of {self.name} has shape {pose.shape}; expected (4, 4)')
        pose.setflags(write=False)
        object.__setattr__(self, 'pose_c2w', pose)
        object.__setattr__(self, 'image_path', Path(self.image_path))


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the images as stored (pixels)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def matrix(self) -> np.ndarray:
        """Return the 3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> 'Intrinsics':
        """Return these intrinsics for the same camera resized to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(int(width), int(height), self.fx * sx, self.fy * sy,
                          self.cx * sx, self.cy * sy)


@dataclass
class Dataset:
    """Frames of one scene, in dataset order (sequence by sequence, time order inside).

    ``dropped`` counts frames a reader dropped on request (only TUM with
    ``drop_unmatched=True``); it is 0 otherwise, because readers never drop anything
    unasked. ``official_split`` maps frame name to ``'train'`` / ``'test'`` for formats
    that ship a split (7scenes, cambridge) and is empty otherwise.
    """

    root: Path
    format: str
    frames: list[Frame]
    intrinsics: Intrinsics | None
    dropped: int = 0
    official_split: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def sequences(self) -> dict[str, list[Frame]]:
        """Frames grouped by sequence (first-appearance order), each in time order."""
        groups: dict[str, list[Frame]] = {}
        for f in self.frames:
            groups.setdefault(f.sequence, []).append(f)
        return {k: sorted(v, key=lambda f: f.index) for k, v in groups.items()}
