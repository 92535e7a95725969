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

"""Frozen-trunk feature cache: the frozen part of the CNN runs once per image, ever.

As in the thesis, only the trainable stages and the head are trained, so the frozen stages'
output is a pure function of (frozen weights, preprocessing, image file). It is stored on disk
as a memory-mapped ``.npy`` and keyed by a hash of exactly those inputs, so changing the
backbone, its weights, the number of trainable stages, the preprocessing or the frame list
can never reuse stale features.
"""

import hashlib
import json
import os
from pathlib import Path
import tempfile
from typing import Callable, Sequence

import numpy as np
import torch

from camreloc_ros.core.data.loading import EpochBatches, FrameImages, make_loader
from camreloc_ros.core.data.transforms import Preprocessor
from camreloc_ros.core.io import cache_folder, clean_stale_temps, reserve, temp_prefix

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``features`` below the cache root (:func:`camreloc_ros.core.io.cache_root`)."""
    return cache_folder('features')


def _frozen_digest(frozen: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in frozen.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(model, pre: Preprocessor, frames: Sequence) -> str:
    """Hash of everything the frozen features depend on."""
    files = []
    for f in frames:
        st = Path(f.image_path).stat()
        files.append([f.name, str(Path(f.image_path).resolve()), st.st_size, st.st_mtime_ns])
    desc = {
        'version': CACHE_VERSION,
        'backbone': model.conf['backbone']['name'],
        'trainable_stages': model.backbone.num_trainable_stages,
        'frozen_weights': _frozen_digest(model.backbone.frozen),
        'preprocess': pre.conf(),
        'frames': files,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]


def frozen_features(model, frames: Sequence, cache_dir: str | Path | None = None,
                    batch_size: int = 16, progress: Callable | None = None,
                    workers: int = 0) -> np.ndarray:
    """Return ``(N, C, h, w)`` float32 frozen-trunk features, memory-mapped from the cache.

    Images are decoded by a ``DataLoader`` with ``workers`` processes while the trunk runs;
    ``progress(done, total)`` is called after each batch when the cache is being filled.
    """
    spec = model.spec
    pre = Preprocessor(spec.input_size, spec.mean, spec.std)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f'{cache_key(model, pre, frames)}.npy'
    if path.is_file():
        return np.load(path, mmap_mode='r')
    shape = (len(frames),) + tuple(model.backbone.frozen_shape)
    clean_stale_temps(cache_dir)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix='.npy', dir=cache_dir)
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.float32, shape=shape)
        # a memory map on a full disk dies of SIGBUS at the first page written: allocate
        # the whole (sparse) file now, so a full disk is a clear error instead
        fd = os.open(tmp, os.O_RDWR)
        try:
            reserve(fd, os.fstat(fd).st_size, path)
        finally:
            os.close(fd)
        frozen = model.backbone.frozen.eval()
        device = next(frozen.parameters(), torch.zeros(())).device
        batches = [np.arange(s, min(s + batch_size, len(frames)))
                   for s in range(0, len(frames), batch_size)]
        sampler = EpochBatches()
        sampler.set_epoch(0, batches)
        loader = make_loader(FrameImages(frames, pre), sampler, workers,
                             pin_memory=device.type == 'cuda')
        done = 0
        with torch.inference_mode():
            for x in loader:
                x = x.to(device, non_blocking=True)
                out[done:done + len(x)] = frozen(x).float().cpu().numpy()
                done += len(x)
                if progress:
                    progress(done, len(frames))
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return np.load(path, mmap_mode='r')
