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

"""Runtimes compared on one model in one run: ms per frame at batch 1 and 16, ratio to eager.

Backends (lite0 + Regressor at 224x224, ImageNet weights, image -> pose, preprocessing not
included): plain eager torch (NCHW, the baseline), the engine's torch runtime (inference mode,
channels-last), ONNX Runtime at 1 and 2 intra-op threads, and for reference the candidates
that were measured but not kept: TorchScript (frozen, optimised for inference), OpenVINO
(float32, only when installed) and, with ``--compile``, torch.compile (about a minute of
compilation). Rounds are interleaved (every backend once per round) so a busy moment of a
shared machine hits all of them alike; every call runs in a worker thread, as in the node.
Also printed: preprocessing of a 640x480 frame, and the live path's per-frame cost
(``engine.predict``) of the Temporal-GRU (window 8) against the Regressor per runtime.

    PYTHONPATH=. .venv/bin/python benchmarks/runtimes.py [--rounds 15] [--compile]
"""

import argparse
import datetime
import os
from pathlib import Path
import platform
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable
import warnings

import numpy as np
import torch

from camreloc_ros.core.data.transforms import Preprocessor, read_rgb
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.core.models.pose_model import build_model
from camreloc_ros.core.inference.runtimes import (export_onnx, live_threads, OnnxRuntime,
                                                  OUTPUT_KEYS, TorchRuntime)
from camreloc_ros.tools.common import shared_data_dir

DATA_DIR = shared_data_dir() / 'hololens-office'


def in_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a worker thread and wait (the node runs its engine in one)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)
    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def machine() -> str:
    """CPU model, cores, load and date: every table says where and when it was measured."""
    name = platform.processor() or 'unknown CPU'
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        name = next(line.split(':', 1)[1].strip() for line in out.splitlines()
                    if line.startswith('Model name'))
    except (OSError, StopIteration):
        pass
    load = ', '.join(f'{v:.2f}' for v in os.getloadavg())
    return (f'{name}, {os.cpu_count()} cores; load average {load}; '
            f'{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; torch {torch.__version__}')


def write_section(path: Path, section: str, start: str, end: str) -> None:
    """Put ``section`` (which begins with ``start`` and ends with ``end``) into the doc.

    It replaces the text between the markers where the doc has them, else it is appended:
    a benchmark regenerates its own section of a doc and leaves the rest as it is.
    """
    from camreloc_ros.core.evaluation.metrics import atomic_write_text
    doc = path.read_text() if path.is_file() else ''
    if start in doc and end in doc:
        doc = doc[:doc.index(start)] + section.rstrip('\n') + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip('\n') + '\n\n' + section
    atomic_write_text(path, doc)


class Fused(torch.nn.Module):
    """Image -> pose in one module (what TorchScript and torch.compile get)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple:
        """Return position, quaternion and variances."""
        out = self.model.head_forward(self.model.features(images))
        return out['pos'], out['quat'], out['var']


def torch_threads(threads: int, fn: Callable) -> Callable:
    """Wrap ``fn`` to run with ``threads`` torch (OpenMP) threads."""
    def run(x: np.ndarray) -> None:
        torch.set_num_threads(threads)
        fn(x)
    return run


def backends(model, onnx_bytes: bytes, with_compile: bool) -> dict[str, Callable]:
    """Name -> ``f(images_b3hw numpy)`` for every backend and thread count available here."""
    plain = Fused(build_model('posenet').eval())
    plain.model.load_state_dict(model.state_dict())

    def eager(x: np.ndarray) -> None:
        with torch.inference_mode():
            plain(torch.from_numpy(x))
    torch_rt = TorchRuntime(build_model('posenet'))
    torch_rt.model.load_state_dict(model.state_dict())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        example = torch.zeros(1, 3, 224, 224)
        script = torch.jit.optimize_for_inference(torch.jit.freeze(
            torch.jit.trace(Fused(model).eval(), example)))

    def torchscript(x: np.ndarray) -> None:
        with torch.no_grad():
            script(torch.from_numpy(x))
    found: dict[str, Callable] = {}
    cores = os.cpu_count() or 2
    counts = sorted({1, cores})
    for name, fn in (('eager torch (NCHW), the baseline', eager),
                     ('torch runtime (inference mode, channels-last)', torch_rt.pose)):
        for threads in counts:
            found[f'{name}, {threads} thr'] = torch_threads(threads, fn)
    for threads in counts:
        found[f'onnx runtime, {threads} thr'] = OnnxRuntime(onnx_bytes, threads=threads).pose
    for threads in counts:
        found[f'TorchScript frozen (not kept), {threads} thr'] = \
            torch_threads(threads, torchscript)
    try:
        import openvino as ov
    except ImportError:
        ov = None
    if ov is not None:
        import onnx
        import onnx.utils

        proto = onnx.load_model_from_string(onnx_bytes)
        pose_graph = onnx.utils.Extractor(proto).extract_model(['images'], list(OUTPUT_KEYS))
        for threads in counts:
            with tempfile.TemporaryDirectory() as tmp:   # the same image -> pose graph as ORT
                onnx.save(pose_graph, f'{tmp}/pose.onnx')
                compiled = ov.Core().compile_model(
                    f'{tmp}/pose.onnx', 'CPU', {'INFERENCE_PRECISION_HINT': 'f32',
                                                'PERFORMANCE_HINT': 'LATENCY',
                                                'INFERENCE_NUM_THREADS': threads})
            requests: dict[int, object] = {}

            def openvino(x: np.ndarray, compiled=compiled, requests=requests) -> None:
                req = requests.setdefault(x.shape[0], compiled.create_infer_request())
                req.infer({'images': x})
            found[f'OpenVINO f32 (not kept), {threads} thr'] = openvino
    if with_compile:
        compiled_model = torch.compile(Fused(model).eval().to(
            memory_format=torch.channels_last))

        def compiled_fn(x: np.ndarray) -> None:
            with torch.inference_mode():
                compiled_model(torch.from_numpy(x).contiguous(
                    memory_format=torch.channels_last))
        for threads in counts:
            found[f'torch.compile inductor (not kept), {threads} thr'] = torch_threads(
                threads, compiled_fn)
    return found


def time_backends(fns: dict[str, Callable], batches: list[int], rounds: int,
                  calls: dict[int, int]) -> dict[tuple[str, int], float]:
    """Median ms per frame for every (backend, batch), rounds interleaved.

    The first call of each block is not counted: it pays for the switch from the previous
    backend (another thread pool winding down, caches).
    """
    rng = np.random.default_rng(0)
    inputs = {b: rng.uniform(-1, 1, (b, 3, 224, 224)).astype(np.float32) for b in batches}
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in fns for b in batches}

    def run() -> None:
        for name, fn in fns.items():            # warm-up (and compilation)
            for b in batches:
                fn(inputs[b])
                fn(inputs[b])
        for _ in range(rounds):
            for name, fn in fns.items():
                for b in batches:
                    fn(inputs[b])
                    for _ in range(calls[b]):
                        t0 = time.perf_counter()
                        fn(inputs[b])
                        times[(name, b)].append((time.perf_counter() - t0) * 1e3 / b)
        torch.set_num_threads(os.cpu_count() or 2)
    in_thread(run)
    return {k: float(np.median(v)) for k, v in times.items()}


def camera_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """Load a real hololens-office image at camera size (RGB uint8)."""
    import cv2

    paths = sorted((DATA_DIR / 'images').glob('*.jpg'))
    if not paths:
        raise FileNotFoundError(f'no images in {DATA_DIR / "images"}')
    return cv2.resize(read_rgb(paths[0]), (width, height), interpolation=cv2.INTER_LINEAR)


def preprocessing_us(frame: np.ndarray, repeats: int = 500) -> float:
    """Median microseconds of the Preprocessor on one frame, into a reused buffer."""
    pre = Preprocessor(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    out = np.empty((3, 224, 224), np.float32)
    times: list[float] = []

    def run() -> None:
        for _ in range(20):
            pre(frame, out)
        for _ in range(repeats):
            t0 = time.perf_counter()
            pre(frame, out)
            times.append(time.perf_counter() - t0)
    in_thread(run)
    return float(np.median(times) * 1e6)


def live_path_ms(engines: dict[str, InferenceEngine], frames: list[np.ndarray],
                 rounds: int) -> dict[str, float]:
    """Median ``engine.predict`` ms per frame (preprocessing and ring buffer included)."""
    times: dict[str, list[float]] = {k: [] for k in engines}

    def run() -> None:
        for engine in engines.values():
            for i in range(10):
                engine.predict(frames[i % len(frames)], stamp=0.033 * i)
        for r in range(rounds):
            for name, engine in engines.items():
                for i in range(10):
                    stamp = 100.0 + r + 0.033 * i
                    t0 = time.perf_counter()
                    engine.predict(frames[i % len(frames)], stamp=stamp)
                    times[name].append(time.perf_counter() - t0)
    in_thread(run)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Measure and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=15, help='interleaved rounds')
    parser.add_argument('--compile', action='store_true', help='also time torch.compile')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    reg = build_model('posenet')
    reg.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    gru = build_model('gru', head={'window': 8})
    gru.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    reg_onnx, gru_onnx = export_onnx(reg), export_onnx(gru)
    print(f'Machine: {machine()}\n')

    fns = backends(reg, reg_onnx, args.compile)
    batches = [1, 16]
    ms = time_backends(fns, batches, args.rounds, {1: 10, 16: 1})
    baseline = f'eager torch (NCHW), the baseline, {os.cpu_count() or 2} thr'
    base = {b: ms[(baseline, b)] for b in batches}
    best_eager = {b: min(v for (n, bb), v in ms.items() if n.startswith('eager') and bb == b)
                  for b in batches}
    lines = ['| runtime (lite0 + Regressor, 224x224), threads | batch 1 ms/frame '
             '| batch 16 ms/frame | speed-up vs eager torch at its default threads '
             '(batch 1 / 16) |', '|---|---|---|---|']
    for name in fns:
        lines.append(f'| {name} | {ms[(name, 1)]:.2f} | {ms[(name, 16)]:.2f} | '
                     f'{base[1] / ms[(name, 1)]:.2f}x / {base[16] / ms[(name, 16)]:.2f}x |')
    print('\n'.join(lines))
    for b in batches:
        fastest = min((n for n in fns if 'not kept' not in n), key=lambda n: ms[(n, b)])
        print(f'\nFastest kept runtime at batch {b}: {fastest}, {ms[(fastest, b)]:.2f} ms/frame: '
              f'{base[b] / ms[(fastest, b)]:.2f}x eager torch at its default threads, '
              f'{best_eager[b] / ms[(fastest, b)]:.2f}x eager torch at its best thread count.')

    frame = camera_frame()
    print(f'\nPreprocessing one 640x480 rgb8 frame (crop, area resize to 224, normalise): '
          f'{preprocessing_us(frame):.0f} us\n')

    frames = [frame, np.ascontiguousarray(frame[:, ::-1]), np.ascontiguousarray(frame[::-1])]
    threads = live_threads()   # what the node uses by default
    engines = {('torch', 'reg'): InferenceEngine(reg, runtime='torch', threads=threads),
               ('torch', 'gru'): InferenceEngine(gru, runtime='torch', threads=threads),
               ('onnx', 'reg'): InferenceEngine(OnnxRuntime(reg_onnx, threads=threads)),
               ('onnx', 'gru'): InferenceEngine(OnnxRuntime(gru_onnx, threads=threads))}
    live = live_path_ms(engines, frames, max(args.rounds // 2, 5))
    lines = ['| runtime | Regressor ms/frame | Temporal-GRU (window 8) ms/frame '
             '| GRU / Regressor |', '|---|---|---|---|']
    for runtime in ('torch', 'onnx'):
        r, g = live[(runtime, 'reg')], live[(runtime, 'gru')]
        lines.append(f'| {runtime} | {r:.2f} | {g:.2f} | {g / r:.2f} |')
    print(f"Live path per frame at the node's default {threads} thread(s) (`engine.predict` "
          'on a 640x480 frame: preprocessing, CNN, head; the GRU runs its head over the ring '
          'buffer of the last 8 frames):\n')
    print('\n'.join(lines))
    print(f'\nLoad average after the run: {", ".join(f"{v:.2f}" for v in os.getloadavg())}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
