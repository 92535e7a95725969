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

"""The training input pipeline: ``torch.utils.data`` datasets, batch sampler and loaders.

Images are decoded and preprocessed in ``DataLoader`` workers, so decoding overlaps the
network instead of sitting in the training loop. Randomness never depends on which worker
or process handles a frame: the batch order of an epoch comes from one generator seeded by
``(seed, epoch)`` (the trainer's), and each frame's augmentation from a generator seeded by
``(seed, epoch, frame)``. An epoch is therefore the same with 0, 1 or N workers, on one
process or sharded over DDP ranks, and after a resume (nianticlabs/ace seeds per worker; a
per-frame seed is the stricter form of the same idea).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from camreloc_ros.core.data.transforms import Augmenter, Preprocessor, read_rgb


class FrameImages(Dataset):
    """Frames as preprocessed ``(3, S, S)`` float32 tensors, augmented when asked.

    Items are addressed by ``(epoch, position)``: the epoch travels with the index, so
    persistent workers (which keep the dataset object they started with) still draw each
    epoch's augmentation.
    """

    def __init__(self, frames: Sequence, pre: Preprocessor, augmenter: Augmenter | None = None,
                 seed: int = 0):
        self.frames = list(frames)
        self.pre = pre
        self.augmenter = augmenter if augmenter is not None and augmenter.active else None
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        image = read_rgb(self.frames[i].image_path)
        out = np.empty((3, self.pre.size, self.pre.size), np.float32)
        if self.augmenter is None:
            self.pre(image, out=out)
        else:
            rng = np.random.default_rng([self.seed, int(epoch), int(i)])
            self.augmenter(image, self.pre, rng, out=out)
        return torch.from_numpy(out)


class CachedFrozen(Dataset):
    """Rows of the memory-mapped frozen-feature cache; a batch is read in one sorted slice."""

    def __init__(self, cache: np.ndarray):
        self.cache = cache

    def __len__(self) -> int:
        return int(self.cache.shape[0])

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        i = key[1] if isinstance(key, tuple) else key
        return torch.from_numpy(np.array(self.cache[i]))

    def __getitems__(self, keys: list) -> torch.Tensor:
        """Whole batch at once (DataLoader's batched fetch): far fewer memmap reads."""
        idx = np.array([k[1] if isinstance(k, tuple) else k for k in keys], np.int64)
        order = np.argsort(idx, kind='stable')
        rows = np.ascontiguousarray(self.cache[idx[order]])
        out = np.empty_like(rows)
        out[order] = rows
        return torch.from_numpy(out)


def stack_batch(items: list | torch.Tensor) -> torch.Tensor:
    """Collate: a batched fetch is already one tensor; single items are stacked."""
    return items if isinstance(items, torch.Tensor) else torch.stack(items)


def shard(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Take this rank's part of a global batch (rows ``rank::world``): a DistributedSampler.

    Every rank draws the same global batches (same seeded generator) and takes its rows, so
    DDP's averaged gradient is the gradient of the same global batch a single process
    would use: a 2-process run follows the 1-process run.
    """
    return batch[rank::world] if world > 1 else batch


class EpochBatches(Sampler):
    """Yields this epoch's batches as lists of ``(epoch, position)`` keys (set per epoch)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.epoch = 0

    def set_epoch(self, epoch: int, batches: list[np.ndarray]) -> None:
        """Use ``batches`` (position arrays, any shape) for ``epoch``."""
        self.epoch = int(epoch)
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list]:
        for batch in self.batches:
            yield [(self.epoch, int(i)) for i in np.asarray(batch).reshape(-1)]


def make_loader(dataset: Dataset, batch_sampler: Sampler, workers: int,
                pin_memory: bool = False) -> DataLoader:
    """Build a DataLoader with ``workers`` processes kept alive across epochs."""
    workers = int(workers)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                      collate_fn=stack_batch, pin_memory=pin_memory,
                      persistent_workers=workers > 0,
                      prefetch_factor=2 if workers > 0 else None)
