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

"""bag-eval frames/s against ``evaluate`` on the same held-out frames and checkpoint.

The hololens-office test split is written to bags (JPEG CompressedImage and raw rgb8, mcap);
``evaluate`` reads the same frames as JPEG files. Both tools run end to end (model load,
reading, inference, result files and plots), interleaved, best of ``--repeats``; the table
gives frames per second and the ratio bag-eval / evaluate (target >= 0.9). A second table
times only what differs between them, the input path (files: read + decode; bag: scan for
stamps and ground truth, then read + deserialise + decode), which is stable even on a busy
machine where end-to-end times vary by 10-20 % from run to run.
"""

import argparse
import contextlib
import io
from pathlib import Path
import tempfile
import time

import torch

from camreloc_ros.core import bags as bag_io
from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.models.pose_model import build_model
from camreloc_ros.tools import bag_eval, bag_from_dataset, evaluate
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'


def _timed(fn) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def _read_bag(path: Path, topic: str) -> list:
    with bag_io.Bag(path) as bag:
        scan = bag_io.scan_bag(bag, topic, gt_topic='/ground_truth/pose')
        return list(bag_io.decoded_images(bag, scan, range(len(scan))))


def input_table(frames: list, bags: dict, repeats: int = 7) -> str:
    """Milliseconds per frame of the input paths alone (best of ``repeats``)."""
    paths = {
        'JPEG files (evaluate)': lambda: [read_rgb(f.image_path) for f in frames],
        'bag, JPEG CompressedImage': lambda: _read_bag(bags['jpeg'],
                                                       '/camera/image_raw/compressed'),
        'bag, raw rgb8 Image': lambda: _read_bag(bags['raw'], '/camera/image_raw'),
    }
    best = {name: min(_timed(fn) for _ in range(repeats)) for name, fn in paths.items()}
    rows = ['| input path | ms/frame | extra ms/frame vs files |', '|---|---:|---:|']
    ref = best['JPEG files (evaluate)'] / len(frames) * 1e3
    for name, seconds in best.items():
        ms = seconds / len(frames) * 1e3
        rows.append(f'| {name} | {ms:.2f} | {ms - ref:+.2f} |')
    return '\n'.join(rows)


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark and print (and return) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--checkpoint', type=Path, default=None,
                        help='checkpoint (default: lite0 regressor, ImageNet trunk)')
    parser.add_argument('--data', type=Path, default=DATA, help='posed dataset folder')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--threads', type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix='bench_bag_eval_') as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint
        if ckpt is None:
            model = build_model('posenet')
            model.set_pose_stats([0.0, 0.0, 0.0], 1.0)
            ckpt = model.save_checkpoint(tmp / 'posenet.pt')
        frames = split_dataset(read_dataset(args.data, 'posed'), 'test').frames
        n = len(frames)
        with contextlib.redirect_stdout(io.StringIO()):
            bags = {label: bag_from_dataset.main(
                {'format': 'posed', 'split': 'test', 'compressed': compressed},
                {'data': args.data, 'out': tmp / label})
                for label, compressed in (('jpeg', True), ('raw', False))}
        common = {'device': 'cpu', 'batch_size': args.batch_size}
        runs = {
            'evaluate (JPEG files)': lambda: evaluate.main(
                dict(common, format='posed', split='test', baselines=False),   # as bag-eval
                {'checkpoint': ckpt, 'data': args.data, 'out': tmp / 'out_eval'}),
            'bag-eval (JPEG CompressedImage, mcap)': lambda: bag_eval.main(
                dict(common, image_topic='/camera/image_raw/compressed',
                     gt_topic='/ground_truth/pose'),
                {'bag': bags['jpeg'], 'checkpoint': ckpt, 'out': tmp / 'out_jpeg'}),
            'bag-eval (raw rgb8 Image, mcap)': lambda: bag_eval.main(
                dict(common, image_topic='/camera/image_raw', gt_topic='/ground_truth/pose'),
                {'bag': bags['raw'], 'checkpoint': ckpt, 'out': tmp / 'out_raw'}),
        }
        inputs = input_table(frames, bags)
        for run in runs.values():     # warm-up: imports, oneDNN kernels, file cache
            _timed(run)
        best = {name: float('inf') for name in runs}
        for _ in range(args.repeats):   # interleaved, so load changes hit every tool alike
            for name, run in runs.items():
                best[name] = min(best[name], _timed(run))
    ref = n / best['evaluate (JPEG files)']
    rows = ['| tool | frames | seconds (best of %d) | frames/s | vs evaluate |' % args.repeats,
            '|---|---:|---:|---:|---:|']
    for name, seconds in best.items():
        rate = n / seconds
        rows.append(f'| {name} | {n} | {seconds:.2f} | {rate:.1f} | {rate / ref:.2f} |')
    table = '\n'.join(rows)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; end to end '
          f'(model load, read, inference, files, plots) on the {n} held-out frames\n')
    print(table)
    print(f'\ninput path alone, {n} frames, best of 7:\n')
    print(inputs)
    return table + '\n\n' + inputs


if __name__ == '__main__':
    main()
