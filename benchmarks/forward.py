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

``--floor`` prints instead, from ONE run, how near the network is to the hardware (issue 21):

* the floor: the model's FLOPs (torch's FlopCounterMode) over the sgemm FLOPS measured in the
  same run on one thread (1024^3 ``torch.mm``), i.e. the time the model's arithmetic takes at
  the speed of a large matrix product;
* the bare forward (image -> pose, preprocessed input, one thread) of each precision: fp32
  and int8 (ONNX Runtime), bf16 (torch CPU autocast; where the CPU has no native bf16 it runs
  emulated, as a measurement only: the node refuses it there), and torch fp32 as bf16's
  same-runtime baseline; as ms, as a ratio to fp32 ONNX Runtime and to the floor;
* the live node's per-frame work (``LocalizerNode._process``: message view, crop + resize on
  uint8, normalise into the runtime's buffer, forward, gate, publish pose, pose with covariance
  and TF) for fp32 and int8, as a ratio to the same engine's bare forward, with each stage
  timed alone (and a JPEG decode, for ``input: compressed``);
* with ``--accuracy``: median position / rotation error of each precision on the test split of
  the HoloLens walk, same checkpoint, and how far each moves the poses from fp32.

Rounds are interleaved (every measurement once per round, the least of a few calls kept) and
the ratios are medians over rounds of per-round ratios, so a busy moment of a shared machine
hits numerator and denominator alike. ``--model`` defaults to the demo checkpoint
(``runs/demo/train/best.pt``, ``make demo``) and the int8 export is calibrated on its training
frames of ``--data`` (the HoloLens walk).

    PYTHONPATH=. .venv/bin/python benchmarks/forward.py --floor [--accuracy] [--rounds 15]
"""

import argparse
import os
from pathlib import Path
import statistics
import tempfile
import threading
import time
from typing import Callable

import numpy as np
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # no minute of retries per missing hub file

from camreloc_ros.core.models.backbones import BackboneWeightsError, SPECS  # noqa: E402
from camreloc_ros.core.models.pose_model import build_model  # noqa: E402
from camreloc_ros.tools.common import shared_data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = ROOT / 'runs' / 'demo' / 'train' / 'best.pt'
SGEMM_N = 1024         # sgemm size of the floor: 2.1 GFLOP a call, operands in the L3 cache
CALLS = 3              # calls per measurement and round; the least is kept


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
    parser.add_argument('--floor', action='store_true',
                        help='the floor, each precision and the node as ratios (issue 21)')
    parser.add_argument('--model', type=Path, default=DEMO_CHECKPOINT,
                        help='--floor: checkpoint (default: the demo checkpoint)')
    parser.add_argument('--data', type=Path, default=None,
                        help='--floor: its dataset (default: the shared HoloLens walk)')
    parser.add_argument('--rounds', type=int, default=15, help='--floor: interleaved rounds')
    parser.add_argument('--accuracy', action='store_true',
                        help='--floor: also each precision on the test split')
    args = parser.parse_args(argv)
    if args.floor:
        return near_the_floor(args)
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


# ---------------------------------------------------------------------------- --floor

def in_thread(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a worker thread, as the node runs its engine, and return its result."""
    out: dict = {}

    def target() -> None:
        try:
            out['value'] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            out['error'] = exc
    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if 'error' in out:
        raise out['error']
    return out['value']


def model_gflop(model) -> float:
    """GFLOP of one image -> pose (convolutions and matrix products, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = model.spec.input_size
    x = torch.zeros(1, 3, size, size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.head_forward(model.features(x))
    return counter.get_total_flops() / 1e9


def least_ms(fn: Callable[[], object], calls: int = CALLS) -> float:
    """Time ``calls`` calls; the least in ms (a preempted call is not the kernel's time)."""
    best = float('inf')
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def sgemm() -> Callable[[], object]:
    """One ``SGEMM_N``^3 float32 matrix product on one torch thread."""
    a = torch.randn(SGEMM_N, SGEMM_N)
    b = torch.randn(SGEMM_N, SGEMM_N)
    out = torch.empty(SGEMM_N, SGEMM_N)

    def run() -> None:
        torch.mm(a, b, out=out)
    return run


class Node:
    """A live localizer in this process on one model, fed real 640x480 frames directly.

    ``process`` is the worker's whole per-frame work; the stage calls time its parts alone.
    """

    def __init__(self, model: Path, precision: str, frames: list[np.ndarray]):
        from rclpy.parameter import Parameter

        from camreloc_ros.ros.conversions import rgb_to_compressed, rgb_to_image
        from camreloc_ros.ros.localizer_node import LocalizerNode

        self.node = LocalizerNode(f'camreloc_{precision}', parameter_overrides=[
            Parameter('model', value=str(model)), Parameter('runtime', value='onnx'),
            Parameter('precision', value=precision), Parameter('threads', value=1),
            Parameter('path_length', value=0), Parameter('base_frame', value='camera')])
        if not self.node.is_active:
            raise RuntimeError(f'the localizer did not start with {model} ({precision})')
        self.engine = self.node.engine
        self.msgs = []
        for rgb in frames:
            msg = rgb_to_image(rgb)
            msg.header.frame_id = 'camera'
            self.msgs.append(msg)
        self.jpegs = [rgb_to_compressed(rgb) for rgb in frames]
        self.first = frames[0]
        self.i = 0
        self.stamp = 1000

    def stages(self) -> dict[str, Callable[[], object]]:
        """Name -> a call of one stage of the node's per-frame work, on the next frame."""
        from std_msgs.msg import Header

        from camreloc_ros.ros.conversions import compressed_pixels, image_pixels

        node, engine, pre = self.node, self.engine, self.engine.pre
        resized = pre._buffers()[0]
        pixels = {}

        def nxt() -> object:
            self.i = (self.i + 1) % len(self.msgs)
            return self.msgs[self.i]

        def view() -> None:
            pixels['p'] = image_pixels(nxt(), checked=True)

        def resize() -> None:
            pre.resized(pixels['p'][0], out=resized)

        def convert() -> None:
            pre.normalize(resized, out=engine._input[0], order=pixels['p'][1])

        pred = engine.predict(self.first)
        header = Header(frame_id='map')

        def publish() -> None:
            node._publish(header, pred, pred)

        def process() -> None:
            msg = nxt()
            self.stamp += 1   # a new stamp each frame (no time gap: a second apart)
            msg.header.stamp.sec = self.stamp
            node._process(msg, time.monotonic())

        return {
            'callback check (header, size)': lambda: node._check(nxt()),
            'decode: view of the rgb8 message': view,
            'decode: JPEG (input compressed)': lambda: compressed_pixels(
                self.jpegs[self.i % len(self.jpegs)]),
            'resize: crop + area resize, uint8': resize,
            'convert: normalise into the input buffer': convert,
            'forward: image -> pose (bare)': lambda: engine.runtime.pose(engine._input),
            'publish: pose, pose with covariance, TF': publish,
            'node per frame (worker: all of it)': process,
        }

    def close(self) -> None:
        """Stop the node."""
        self.node.destroy_node()


def ros_environment(tmp: Path) -> None:
    """Set a private domain, localhost discovery, logs in ``tmp`` (node in this process)."""
    from camreloc_ros.ros.domain import allocate_domain

    os.environ['ROS_DOMAIN_ID'] = str(allocate_domain())
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_LOG_DIR'] = str(tmp / 'ros_log')


def camera_frames(data: Path, count: int = 8) -> list[np.ndarray]:
    """Real walk images resized to a 640x480 camera (RGB uint8)."""
    import cv2

    from camreloc_ros.core.data.transforms import read_rgb

    paths = sorted((data / 'images').glob('*.jpg'))[::40][:count]
    return [cv2.resize(read_rgb(p), (640, 480), interpolation=cv2.INTER_LINEAR) for p in paths]


def interleaved(fns: dict[object, Callable[[], object]], rounds: int,
                calls: dict[object, int] | None = None) -> dict[object, np.ndarray]:
    """Per round, the least of a few calls of every function: ``{name: (rounds,) ms}``."""
    calls = calls or {}
    for fn in fns.values():   # warm-up
        fn()
    times = {name: [] for name in fns}
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for name in order:
            times[name].append(least_ms(fns[name], calls.get(name, CALLS)))
    return {k: np.asarray(v) for k, v in times.items()}


def accuracy(model: Path, data: Path, runtimes: dict) -> list[str]:
    """Median errors of each precision on the checkpoint's test split, and moves from fp32."""
    from camreloc_ros.core.data.formats import read_dataset, reader_options
    from camreloc_ros.core.data.split import split_dataset, split_params
    from camreloc_ros.core.data.transforms import read_rgb
    from camreloc_ros.core.evaluation.metrics import pose_errors
    from camreloc_ros.core.geometry import orientation_error_rad, pose_from_matrix
    from camreloc_ros.core.inference.engine import InferenceEngine

    extra = next(iter(runtimes.values())).extra
    fmt = (extra.get('data') or {}).get('format') or 'posed'
    block, every = split_params({}, extra)
    dataset = read_dataset(data, fmt, **reader_options(fmt, extra.get('data')))
    frames = split_dataset(dataset, 'test', block=block, every=every).frames
    images = [read_rgb(f.image_path) for f in frames]
    gt_pos, gt_quat = pose_from_matrix(np.stack([f.pose_c2w for f in frames]))
    # the model's own sensitivity: fp32 on the same frames with +-1 grey level of noise
    rng = np.random.default_rng(0)
    noisy = [np.clip(img.astype(np.int16) + rng.integers(-1, 2, img.shape), 0, 255)
             .astype(np.uint8) for img in images]
    first = next(iter(runtimes))
    runs = [(name, runtime, images) for name, runtime in runtimes.items()]
    runs.insert(1, (f'{first}, input +-1 grey level (reference)', runtimes[first], noisy))
    rows, ref = [], None
    for name, runtime, frames_in in runs:
        engine = InferenceEngine(runtime)
        preds = in_thread(lambda: engine.predict_frames(frames_in, batch_size=16))
        pos = np.stack([p.position for p in preds])
        quat = np.stack([p.quaternion for p in preds])
        pe, re = pose_errors(pos, quat, gt_pos, gt_quat)
        med = (float(np.median(pe)), float(np.median(re)))
        if ref is None:
            ref = (med, pos, quat)
        moved = np.linalg.norm(pos - ref[1], axis=1)
        turned = np.degrees(orientation_error_rad(quat, ref[2]))
        rows.append(f'| {name} | {med[0]:.3f} m / {med[1]:.2f} deg | '
                    f'{100 * (med[0] / ref[0][0] - 1):+.1f} % / '
                    f'{100 * (med[1] / ref[0][1] - 1):+.1f} % | '
                    f'{np.median(moved):.3f} m / {np.median(turned):.2f} deg |')
    head = [f'Accuracy on the {len(frames)} test frames of {data.name} (block {block}, every '
            f'{every}), {model.name}:', '',
            '| precision | median error (position / rotation) | vs fp32 | median move from '
            'fp32 (position / rotation) |', '|---|---|---|---|']
    return head + rows


def near_the_floor(args: argparse.Namespace) -> str:
    """Print the floor, each precision's bare forward and the node per frame, as ratios."""
    import rclpy

    from camreloc_ros.core.inference.onnx_format import cached_onnx
    from camreloc_ros.core.inference.precision import cpu_description, cpu_has_bf16
    from camreloc_ros.core.inference.quantize import cached_int8
    from camreloc_ros.core.inference.runtimes import OnnxRuntime, TorchRuntime
    from camreloc_ros.core.models.pose_model import PoseModel

    data = args.data or shared_data_dir() / 'hololens-office'
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix='camreloc_floor_'))
    cache = tmp / 'cache'
    ros_environment(tmp)
    note = ''
    if not args.model.is_file():   # no demo run here: timing needs no trained head
        note = (f'{args.model} does not exist (make demo trains it): an untrained lite0 '
                'regressor is timed instead, and accuracy is not measured')
        model = build_model('posenet')
        model.set_pose_stats([0.0, 0.0, 0.0], 1.0)
        args.model = model.save_checkpoint(tmp / 'untrained.pt')
        args.accuracy = False
    model = PoseModel.from_checkpoint(args.model)
    gflop = model_gflop(model)
    fp32_file = cached_onnx(args.model, cache)
    fmt = None if (model.checkpoint_extra.get('data') or {}).get('format') else 'posed'
    int8_file = cached_int8(args.model, data, cache, fmt=fmt)
    native = cpu_has_bf16()
    bf16 = 'bf16 (torch)' if native else 'bf16 (torch, emulated: the node refuses it here)'
    runtimes = {
        'fp32 (onnx)': OnnxRuntime(fp32_file, threads=1, precision='fp32'),
        'int8 (onnx)': OnnxRuntime(int8_file, threads=1, precision='int8'),
        'fp32 (torch)': TorchRuntime(PoseModel.from_checkpoint(args.model), threads=1),
        bf16: TorchRuntime(PoseModel.from_checkpoint(args.model), precision='bf16', threads=1,
                           emulated_bf16=not native),
    }
    size = model.spec.input_size
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    fns = {'sgemm': sgemm(), **{k: (lambda rt=rt: rt.pose(x)) for k, rt in runtimes.items()}}
    slow = {} if native else {bf16: 1}   # emulated: 20x the others, one call a round
    ms = in_thread(lambda: interleaved(fns, args.rounds, slow))
    gflops = 2 * SGEMM_N ** 3 / 1e9 / (ms['sgemm'] / 1e3)
    floor = gflop / gflops * 1e3      # ms, per round
    fp32 = ms['fp32 (onnx)']
    load = ', '.join(f'{v:.2f}' for v in os.getloadavg())
    lines = [f'CPU: {cpu_description()}, {os.cpu_count()} cores, load average {load}; '
             f'torch {torch.__version__}; everything on 1 thread; {args.rounds} rounds; '
             f'{args.model}' + (f'. {note}' if note else ''), '',
             f'Floor: {model.conf["backbone"]["name"]} + {model.conf["head"]["name"]}, '
             f'{gflop:.3f} GFLOP / sgemm {np.median(gflops):.1f} GFLOPS (1 thread, '
             f'{SGEMM_N}^3) = **{np.median(floor):.2f} ms**', '',
             '| precision (runtime) | bare forward ms | / fp32 (onnx) | / floor |',
             '|---|---|---|---|']
    for name in runtimes:
        lines.append(f'| {name} | {np.median(ms[name]):.2f} | '
                     f'{np.median(ms[name] / fp32):.2f} | {np.median(ms[name] / floor):.2f} |')
    frames = camera_frames(data)
    rclpy.init()
    try:
        nodes = {'fp32': Node(fp32_file, 'fp32', frames), 'int8': Node(int8_file, 'int8', frames)}
        calls = {(p, k): f for p, node in nodes.items() for k, f in node.stages().items()}
        both = in_thread(lambda: interleaved(calls, args.rounds))   # one run: same moments
        stage = {p: {k: t for (q, k), t in both.items() if q == p} for p in nodes}
        for node in nodes.values():
            node.close()
    finally:
        rclpy.try_shutdown()
    names = list(next(iter(stage.values())))
    lines += ['', 'The node per frame, stage by stage (640x480 rgb8, median ms of per-round '
              'least; ratio: per-round over the bare forward of the same engine):', '',
              '| stage | ' + ' | '.join(f'{k} ms | {k} / forward' for k in stage) + ' |',
              '|---|' + '---|---|' * len(stage)]
    for name in names:
        cells = []
        for t in stage.values():
            ratio = np.median(t[name] / t['forward: image -> pose (bare)'])
            cells.append(f'{np.median(t[name]):.3f} | {ratio:.3f}')
        bold = '**' if name.startswith('node') else ''
        lines.append(f'| {bold}{name}{bold} | ' + ' | '.join(cells) + ' |')
    if args.accuracy:
        lines += [''] + accuracy(args.model, data, {k: v for k, v in runtimes.items()
                                                    if k != 'fp32 (torch)'})
    table = '\n'.join(lines)
    print(table)
    return table


if __name__ == '__main__':
    main()
