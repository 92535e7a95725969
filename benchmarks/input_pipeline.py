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

"""Frames/s of the training input pipeline for 0, 1 and 2 ``train.workers``, in one run.

Three measurements on the real HoloLens images, each for every worker count, in interleaved
rounds (a busy moment of a shared machine hits every worker count alike):

- loader only: decode + augment (brightness 0.2, contrast 0.2, crop_scale 0.1) through the
  ``DataLoader``, no network: the pipeline's ceiling;
- feature caching: ``frozen_features`` into a fresh cache folder (decode + frozen trunk);
- augmented training epoch: ``Trainer.train_epoch`` with the cache off (augmentation forbids
  it), the default model; the workers are started (persistent) before timing.

Ratios are to 0 workers (decoding in the training loop) of the same round.
"""

import argparse
import os
from pathlib import Path
import platform
import tempfile
import time

import numpy as np
import torch

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.loading import EpochBatches, FrameImages, make_loader
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.data.transforms import Augmenter, Preprocessor
from camreloc_ros.core.training.feature_cache import frozen_features
from camreloc_ros.core.training.trainer import Trainer
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'
AUGMENT = {'brightness': 0.2, 'contrast': 0.2, 'crop_scale': 0.1}


def loader_fps(frames, workers: int, batch: int) -> float:
    """Frames/s of decode + augment alone through a DataLoader (fresh workers, warm-up 1)."""
    pre = Preprocessor(224, (0.5,) * 3, (0.5,) * 3)
    dataset = FrameImages(frames, pre, Augmenter(**AUGMENT), seed=0)
    sampler = EpochBatches()
    idx = np.arange(len(frames))
    loader = make_loader(dataset, sampler, workers)
    sampler.set_epoch(0, [idx[:batch]])
    for _ in loader:            # start the workers
        pass
    sampler.set_epoch(1, [idx[s:s + batch] for s in range(0, len(idx), batch)])
    t0 = time.perf_counter()
    n = sum(len(x) for x in loader)
    return n / (time.perf_counter() - t0)


def cache_fps(trainer: Trainer, frames, workers: int, tmp: str) -> float:
    """Frames/s of building the frozen-feature cache into a fresh folder."""
    folder = tempfile.mkdtemp(dir=tmp)
    t0 = time.perf_counter()
    frozen_features(trainer.model, frames, folder, workers=workers)
    return len(frames) / (time.perf_counter() - t0)


def load() -> float:
    """1-minute load average."""
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> str:
    """Print (and return) the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--frames', type=int, default=128)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--stages', type=int, default=None,
                        help='trainable trunk stages (default: the model default)')
    args = parser.parse_args(argv)
    frames = split_dataset(read_dataset(DATA, 'posed'), 'train').frames[:args.frames]
    print(f'{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch '
          f'threads, torch {torch.__version__}; {len(frames)} frames; load average '
          f'{load():.2f}', flush=True)
    load0 = load()
    res = {w: {'loader': [], 'cache': [], 'epoch': []} for w in args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for w in args.workers:
            conf = {'data': {'augment': AUGMENT},
                    'model': {'backbone': {'trainable_stages': args.stages}},
                    'train': {'cache': False, 'workers': w, 'batch_size': args.batch_size,
                              'cache_dir': tmp}}
            trainers[w] = Trainer(conf, frames, [], Path(tmp) / f'run{w}',
                                  log=lambda s: None, progress_bars=False)
            loader, sampler, _ = trainers[w]._source('train')
            sampler.set_epoch(0, [np.arange(2)])
            for _ in loader:            # start the persistent workers (not timed)
                pass
        for r in range(args.rounds):
            for w in args.workers:
                res[w]['loader'].append(loader_fps(frames, w, args.batch_size))
                res[w]['cache'].append(cache_fps(trainers[w], frames, w, tmp))
                res[w]['epoch'].append(len(frames) / trainers[w].train_epoch()['seconds'])
                print(f'round {r + 1}, {w} workers: loader {res[w]["loader"][-1]:.1f}, cache '
                      f'{res[w]["cache"][-1]:.1f}, epoch {res[w]["epoch"][-1]:.1f} frames/s '
                      f'(load {load():.2f})', flush=True)
        stages = trainers[args.workers[0]].model.backbone.num_trainable_stages
    best = {w: {k: max(v) for k, v in d.items()} for w, d in res.items()}
    base = best[args.workers[0]]
    rows = [f'{len(frames)} HoloLens frames, batch {args.batch_size}, lite0 + Regressor with '
            f'{stages} trainable stages, augmentation {AUGMENT}; best of {args.rounds} '
            f'interleaved rounds; load average {load0:.2f} at the start, {load():.2f} at the '
            f'end, {os.cpu_count()} cores.', '',
            '| train.workers | loader only (decode + augment), frames/s | feature caching, '
            'frames/s | augmented epoch (cache off), frames/s |', '|---|---|---|---|']
    for w in args.workers:
        b = best[w]
        rows.append(f'| {w} | {b["loader"]:.1f} ({b["loader"] / base["loader"]:.2f}x) | '
                    f'{b["cache"]:.1f} ({b["cache"] / base["cache"]:.2f}x) | '
                    f'{b["epoch"]:.1f} ({b["epoch"] / base["epoch"]:.2f}x) |')
    table = '\n'.join(rows)
    print('\n' + table)
    return table


if __name__ == '__main__':
    main()
