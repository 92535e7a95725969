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
"""Train/test splits and temporal windows that respect time order.

Why contiguous blocks and never an interleaved split: consecutive video frames are nearly
identical (a 30 Hz camera moves millimetres between them), so holding out every k-th frame
puts a near-copy of each test image into the training set and the test error measures
memorisation, not relocalisation. Holding out whole blocks of ``block`` frames (about a
second or more of motion) makes most test views genuinely unseen; only the frames at the
block edges still have close training neighbours.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from camreloc_ros.core.data.datasets import Dataset, DatasetError, Frame
from camreloc_ros.core.data.formats import (FORMATS, OFFICIAL_SPLIT_FORMATS, read_dataset,
                                            reader_options)

SPLIT_NAMES = ('train', 'test', 'all')

# The block split of data without official split files (posed, tum, csv: the HoloLens walk),
# in one place for training (``data`` of the trainer's ``default_conf``), evaluate, map,
# bag-from-dataset, the demo, the benchmarks and the tests. Test: blocks of 25 frames, every
# 4th held out; validation: blocks of 25 of the training side, every 8th (0: none).
SPLIT_DEFAULTS = {'block': 25, 'every': 4, 'val_block': 25, 'val_every': 8}


def _by_sequence(frames: Sequence[Frame]) -> dict[str, list[Frame]]:
    """Group by sequence (first-appearance order), sorted by index; reject duplicates."""
    groups: dict[str, list[Frame]] = {}
    for f in frames:
        groups.setdefault(f.sequence, []).append(f)
    for seq, fs in groups.items():
        fs.sort(key=lambda f: f.index)
        for a, b in zip(fs, fs[1:]):
            if a.index == b.index:
                raise ValueError(f'frames {a.name} and {b.name} of sequence {seq!r} share '
                                 f'index {a.index}; expected one frame per time step')
    return groups


def block_split(frames: Sequence[Frame], block: int = SPLIT_DEFAULTS['block'],
                every: int = SPLIT_DEFAULTS['every'], offset: int | None = None
                ) -> tuple[list[Frame], list[Frame]]:
    """Split into (train, test) by holding out whole blocks of consecutive frames.

    Per sequence, frame ``f`` is in block ``f.index // block``; block ``b`` is held out when
    ``b % every == offset`` (default ``every - 1``: the 4th, 8th, ... block). Blocks use the
    frame's index, not its position in ``frames``, so a frame's side does not change when
    other frames are missing. Both lists are in time order, sequence by sequence (order of
    first appearance). See the module docstring for why the split is never interleaved.
    """
    if block < 1:
        raise ValueError(f'block must be >= 1, got {block}')
    if every < 2:
        raise ValueError(f'every must be >= 2 (every=1 would hold out everything), got {every}')
    if offset is None:
        offset = every - 1
    if not 0 <= offset < every:
        raise ValueError(f'offset must be in [0, {every}), got {offset}')
    train: list[Frame] = []
    test: list[Frame] = []
    for fs in _by_sequence(frames).values():
        for f in fs:
            (test if (f.index // block) % every == offset else train).append(f)
    return train, test


VAL_OFFSET = 1   # the 2nd block of every ``val_every``: never the test blocks' default slot


def train_val_split(train_frames: Sequence[Frame], val_block: int = SPLIT_DEFAULTS['val_block'],
                    val_every: int = SPLIT_DEFAULTS['val_every']
                    ) -> tuple[list[Frame], list[Frame]]:
    """Hold out validation blocks from the TRAINING side: ``(train, val)``.

    ``best.pt`` and hyper-parameter searches are selected on the validation frames, so they
    must never be test frames: pass only the training part of the data here (after the test
    split). Blocks as :func:`block_split` (by frame index, whole blocks, never interleaved);
    block ``b`` validates when ``b % val_every == 1``. ``val_every=0`` holds nothing out.
    """
    if val_every == 0:
        return list(train_frames), []
    if val_every == 1:
        raise ValueError('val_every must be 0 (no validation) or >= 2, got 1 (every block '
                         'would validate and none would train)')
    return block_split(train_frames, val_block, val_every, offset=VAL_OFFSET)


def frame_breaks(frames: Sequence[Frame]) -> list[bool]:
    """Whether each frame starts a new run: a new sequence, or a gap in the frame index.

    The one rule for where temporal windows may not reach across (a held-out block, a
    dropped frame, another sequence): training windows, causal inference windows and the
    evaluation tools all use it.
    """
    return [i == 0 or f.sequence != frames[i - 1].sequence or f.index != frames[i - 1].index + 1
            for i, f in enumerate(frames)]


def causal_window_starts(breaks: Sequence[bool], window: int) -> np.ndarray:
    """First position of the causal window of at most ``window`` frames ending at each frame.

    ``breaks[i]`` true restarts the window at frame ``i`` (see :func:`frame_breaks`); the live
    engine and offline evaluation give the newest frame of this window its pose.
    """
    lo = np.empty(len(breaks), np.int64)
    start = 0
    for i, restart in enumerate(breaks):
        if restart:
            start = i
        lo[i] = max(start, i - window + 1)
    return lo


def causal_window_groups(breaks: Sequence[bool], window: int, chunk: int = 256,
                         first: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Group frames by the length of their causal window, for batched head calls.

    Yields ``(frames, gather)``: positions of up to ``chunk`` frames whose windows have the
    same length ``L``, and the ``(len(frames), L)`` positions of those windows (oldest first,
    the frame itself last). Frames before ``first`` only serve as history. The one batching
    rule of the engine (offline inference) and the trainer (validation).
    """
    lo = causal_window_starts(breaks, window)
    lengths = np.arange(len(lo)) - lo + 1
    for length in np.unique(lengths[first:]):
        frames = first + np.flatnonzero(lengths[first:] == length)
        for c in range(0, frames.size, chunk):
            idx = frames[c:c + chunk]
            yield idx, lo[idx][:, None] + np.arange(length)


def temporal_windows(frames: Sequence[Frame], window: int, stride: int = 1) -> list[list[int]]:
    """Positions in ``frames`` of every run of ``window`` time-consecutive frames.

    ``frames`` is taken in its given (dataset) order. A window only contains frames that
    are neighbours in the list, belong to the same sequence and have indices increasing by
    exactly 1, so it never crosses a sequence boundary or a gap (a held-out block, a dropped
    frame). Window starts advance by ``stride`` inside each gap-free run; runs shorter than
    ``window`` give no window.
    """
    if window < 1:
        raise ValueError(f'window must be >= 1, got {window}')
    if stride < 1:
        raise ValueError(f'stride must be >= 1, got {stride}')
    out: list[list[int]] = []
    start = 0
    n = len(frames)
    breaks = frame_breaks(frames) + [True]
    for i in range(1, n + 1):
        if breaks[i]:
            for s in range(start, i - window + 1, stride):
                out.append(list(range(s, s + window)))
            start = i
    return out


def split_dataset(dataset: Dataset, split: str, block: int = SPLIT_DEFAULTS['block'],
                  every: int = SPLIT_DEFAULTS['every']) -> Dataset:
    """Return the ``'train'``, ``'test'`` or ``'all'`` part of ``dataset`` as a new Dataset.

    7scenes and cambridge use their official split files (what published results use);
    the other formats have none, so they get :func:`block_split` with ``block``/``every``.
    Raises DatasetError when the requested part is empty or when frames of an official-split
    dataset are listed in no split file (they would silently vanish from both halves).
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f'split must be one of {", ".join(SPLIT_NAMES)}, got {split!r}')
    if split == 'all':
        return dataclasses.replace(dataset, frames=list(dataset.frames))
    if dataset.format in OFFICIAL_SPLIT_FORMATS:
        unlisted = sorted({f.sequence for f in dataset.frames
                           if f.name not in dataset.official_split})
        if unlisted:
            raise DatasetError(f'sequence(s) {", ".join(unlisted)} are in no official split '
                               'file; expected every sequence in the train or test list',
                               dataset.root)
        frames = [f for f in dataset.frames if dataset.official_split[f.name] == split]
    else:
        train, test = block_split(dataset.frames, block=block, every=every)
        frames = train if split == 'train' else test
    if not frames:
        raise DatasetError(f'the {split} split is empty (was the dataset read with a split '
                           'already, or is it shorter than every * block frames?)',
                           dataset.root)
    return dataclasses.replace(dataset, frames=frames)


def split_params(conf: dict, extra: dict) -> tuple[int, int]:
    """Return a checkpoint's block split: explicit ``conf`` first, then what training stored.

    ``extra`` is the checkpoint's ``checkpoint_extra``; without a stored split (older or
    foreign checkpoints) the :data:`SPLIT_DEFAULTS`, which are what training used then too.
    Evaluate and map both call this, so "test" means the same frames in both.
    """
    data = (extra or {}).get('data') or {}
    block = conf.get('block') or data.get('block') or SPLIT_DEFAULTS['block']
    every = conf.get('every') or data.get('every') or SPLIT_DEFAULTS['every']
    return int(block), int(every)


def checkpoint_train_frames(data: str | Path, fmt: str | None, extra: dict, conf: dict
                            ) -> tuple[Dataset, list[Frame], str, int, int]:
    """Return a checkpoint's training frames: ``(dataset, frames, format, block, every)``.

    The frames a map holds and the retrieval baselines search, so neither ever sees a
    held-out frame: the format and block split are the ones the checkpoint was trained
    with (``extra['data']``) unless ``fmt`` / ``conf`` name others.
    """
    fmt = fmt or (extra.get('data') or {}).get('format')
    if fmt is None:
        raise ValueError(f'dataset format not given and not stored in the checkpoint; pass '
                         f'--format ({", ".join(FORMATS)})')
    block, every = split_params(conf, extra)
    dataset = read_dataset(data, fmt, **reader_options(fmt, (extra or {}).get('data'),
                                                       conf.get('data')))
    frames = split_dataset(dataset, 'train', block=block, every=every).frames
    return dataset, frames, fmt, block, every


def frames_fingerprint(names: Sequence[str], poses_c2w) -> str:
    """Hash of frame names and poses (mm): the same training frames give the same value."""
    import hashlib
    h = hashlib.sha256()
    for name, pose in zip(names, np.asarray(poses_c2w, np.float64)):
        h.update(str(name).encode('utf-8') + b'\0')
        h.update(np.round(pose[:3] * 1000.0).astype(np.int64).tobytes())
    return h.hexdigest()


def scene_frame(frames: Sequence[Frame], source: str) -> dict:
    """Identify the coordinate frame the poses of ``frames`` are in: what a map belongs to.

    The id hashes every frame of the dataset or reconstruction (names and poses, the split
    left out), so a network retrained on the same data with another seed, more epochs or
    other split knobs has the same frame and keeps working with a map built before, while a
    network trained on another dataset, or on a re-run reconstruction whose poses moved, has
    another. Stored in a checkpoint's ``extra['scene_frame']`` (and so in its ONNX export's
    metadata) and in a map's ``meta['scene_frame']``.
    """
    frames = list(frames)
    if not frames:
        raise ValueError(f'{source}: no frames to identify a scene frame from')
    fingerprint = frames_fingerprint([f.name for f in frames], [f.pose_c2w for f in frames])
    return {'id': fingerprint[:32], 'frames': len(frames), 'source': str(source)}
