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

"""Forward time of every backbone (+ Regressor head) at batch 1 and 16 on this machine.

Prints a markdown table: ms per frame (median of repeats), total and trainable parameters
under the thesis' freezing. Random weights are used for backbones whose pretrained files are
not on this machine; timing does not depend on the weights' values.
"""

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # no minute of retries per missing hub file

from camreloc_ros.core.models.backbones import BackboneWeightsError, SPECS  # noqa: E402
from camreloc_ros.core.models.pose_model import build_model  # noqa: E402


def _model(name: str):
    """Build with ImageNet weights where this machine has them, else random (timing only)."""
    if name == 'efficientnet_lite0':
        return build_model('posenet'), 'ImageNet'
    try:
        return build_model('posenet', backbone={'name': name}), 'ImageNet'
    except BackboneWeightsError:
        return build_model('posenet', backbone={'name': name, 'pretrained': False}), 'random'


def time_forward(model, batch: int, size: int, repeats: int) -> float:
    """Median ms per frame of ``model(x)`` in inference mode, after a warm-up."""
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    model = model.eval().to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000.0 / batch)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark and print (and return) the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--backbones', nargs='*', default=list(SPECS))
    parser.add_argument('--batches', nargs='*', type=int, default=[1, 16])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    head = '| backbone | weights | input | ' + ' | '.join(
        f'batch {b} ms/frame' for b in args.batches) + ' | params (M) | trainable (M) | stages |'
    rows = [head, '|' + '---|' * (head.count('|') - 1)]
    for name in args.backbones:
        model, weights = _model(name)
        size = SPECS[name].input_size
        ms = [time_forward(model, b, size, args.repeats) for b in args.batches]
        total = sum(p.numel() for p in model.backbone.parameters()) / 1e6
        train = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad) / 1e6
        rows.append(f'| {name} | {weights} | {size} | ' + ' | '.join(f'{m:.1f}' for m in ms)
                    + f' | {total:.2f} | {train:.2f} | last {model.backbone.num_trainable_stages}'
                    f' of {len(model.backbone.stage_names)} |')
        print(rows[-1], flush=True)
    table = '\n'.join(rows)
    print(f'\ntorch {torch.__version__}, {torch.get_num_threads()} threads, CPU\n')
    print(table)
    return table


if __name__ == '__main__':
    main()
