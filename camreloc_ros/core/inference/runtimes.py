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

"""What runs the network: eager PyTorch (CPU or CUDA) or ONNX Runtime, behind one interface.

The engine (preprocessing, temporal window, decoding into a ``Prediction``) is the same for
every backend, so the live node, evaluation and bag tools switch backends with one word and
give the same poses. A backend works on numpy arrays and has three calls:

* ``pose(images)``: ``(B, 3, S, S)`` float32 -> ``{'pos', 'quat', 'var'}`` in one call
  (single-frame heads: one fused graph, image to pose),
* ``features(images)`` -> ``(B, C)`` pooled features (what a temporal model buffers),
* ``head(feat)``: ``(B, C)`` or ``(B, T, C)`` -> ``{'pos', 'quat', 'var'}``.

The ONNX file format, export and export cache are
:mod:`camreloc_ros.core.inference.onnx_format`.
Measured on a 2-core Xeon (docs/performance.md), ONNX Runtime runs lite0 3.7x faster than
eager torch at its best thread count; TorchScript, torch.compile and OpenVINO did not pay
for their cost here.

torch is imported only by the torch backend (and :func:`resolve_device`): a robot running an
exported ``.onnx`` with ONNX Runtime never loads it (faster start, less memory). About 500
lines: the two backends share the buffer and thread handling of the base class; the ONNX file
format and export are in :mod:`camreloc_ros.core.inference.onnx_format`, which precision runs
where in :mod:`~camreloc_ros.core.inference.precision`, int8 quantization in
:mod:`~camreloc_ros.core.inference.quantize`.
"""

from __future__ import annotations

from contextlib import contextmanager
import os
from pathlib import Path
from typing import NamedTuple, TYPE_CHECKING

import numpy as np

from camreloc_ros.core.config import PRECISIONS, RUNTIMES  # noqa: F401 - re-exported
from camreloc_ros.core.io import file_sha256  # noqa: F401 - re-exported
from camreloc_ros.core.inference.onnx_format import (  # noqa: F401 - re-exported
    cached_onnx, check_self_contained, export_onnx, FEAT, FEATURES, HEAD_OUTPUTS, IMAGES,
    inference_session, is_onnx_file, load_onnx, METADATA_KEY, model_metadata, ONNX_FORMAT,
    ONNX_FORMAT_VERSION, ONNX_OPSET, OnnxModelError, OUTPUT_KEYS, read_metadata)
from camreloc_ros.core.inference.precision import check_precision, check_precision_name

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import torch

    from camreloc_ros.core.models.pose_model import PoseModel

# The heads (a few small GEMMs, a GRU over <= 8 steps) always run on one thread: their
# parallel regions are shorter than waking a second thread, and on a busy CPU each one can
# wait milliseconds for it (measured: GRU window 8 at 2 threads 18-110 ms, at 1 thread 1-2 ms).
HEAD_THREADS = 1


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    import torch

    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'device {device!r} requested but CUDA is not available here')
    if device != 'cpu' and not device.startswith('cuda'):
        raise ValueError(f'device must be auto, cpu or cuda[:N], got {device!r}')
    return torch.device(device)


class OnnxDevice(NamedTuple):
    """Where ONNX Runtime runs, with ``torch.device``'s ``type`` and ``index`` (no torch)."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f'{self.type}:{self.index}'


def is_model_path(model: object) -> bool:
    """Whether ``model`` is a file path (not a :class:`PoseModel` object)."""
    return isinstance(model, (str, os.PathLike))


def cpu_cores() -> int:
    """Count the CPUs this process may run on (its affinity, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def live_threads() -> int:
    """Intra-op threads for a live node: half the cores, at least one.

    The other half serves the camera driver, DDS and the ROS executor. On a busy 2-core
    machine a second OpenMP thread made torch up to 60x slower (its parallel regions wait for
    a core that another process holds) and ONNX Runtime's throughput dropped (79 -> 69 Hz);
    docs/performance.md has the measurements.
    """
    return max(1, cpu_cores() // 2)


def check_runtime(runtime: str) -> str:
    """Return ``runtime`` if it is a known backend name, else raise ValueError."""
    if runtime not in RUNTIMES:
        raise ValueError(f'runtime must be one of {", ".join(RUNTIMES)}, got {runtime!r}')
    return runtime


# ---------------------------------------------------------------------------- base class

class Runtime:
    """The interface the engine uses; subclasses run the network."""

    name = 'none'
    #: set by subclasses: model config, temporal head, window length, checkpoint extras
    conf: dict
    temporal: bool
    window: int
    extra: dict
    device: torch.device

    def __init__(self) -> None:
        self._inputs: dict[int, np.ndarray] = {}

    @property
    def input_size(self) -> int:
        """Side of the square network input."""
        return int(self.preprocessing['size'])

    @property
    def preprocessing(self) -> dict:
        """Input size and normalisation the network was trained with."""
        from camreloc_ros.core.models.backbones import spec_for

        backbone = self.conf['backbone']
        spec = spec_for(backbone['name'], backbone.get('input_size'))
        return {'size': spec.input_size, 'mean': list(spec.mean), 'std': list(spec.std)}

    def input_buffer(self, batch: int) -> np.ndarray:
        """Return a reusable ``(batch, 3, S, S)`` float32 array to preprocess into.

        Backends give memory they can read without a copy (pinned host memory for CUDA,
        channels-last for torch on the CPU); preprocessing writes straight into it.
        """
        buf = self._inputs.get(batch)
        if buf is None:
            buf = self._inputs[batch] = self._new_input(batch)
        return buf

    def _new_input(self, batch: int) -> np.ndarray:
        size = self.input_size
        return np.empty((batch, 3, size, size), np.float32)

    def pose(self, images_b3hw: np.ndarray) -> dict:
        """Images -> decoded ``pos``, ``quat``, ``var`` (single-frame heads)."""
        return self.head(self.features(images_b3hw))

    def features(self, images_b3hw: np.ndarray) -> np.ndarray:
        """Images -> pooled per-frame features ``(B, C)`` float32."""
        raise NotImplementedError

    def head(self, feat: np.ndarray) -> dict:
        """Features ``(B, C)`` or ``(B, T, C)`` -> decoded ``pos``, ``quat``, ``var``."""
        raise NotImplementedError

    def describe(self) -> str:
        """Backend, precision and threads, for logs and diagnostics."""
        return self.name


# ---------------------------------------------------------------------------- eager torch

class TorchRuntime(Runtime):
    """Eager PyTorch: inference mode, channels-last; on CUDA fp16/bf16 and pinned buffers.

    CUDA path (not measured here, see docs/performance.md): the image is preprocessed on the
    CPU straight into a pinned host buffer, copied to the GPU once (asynchronously) into a
    preallocated device tensor, the CNN runs under fp16/bf16 autocast, the head in float32,
    and the three outputs come back in one device-to-host copy. On the CPU, ``bf16`` runs the
    CNN under CPU autocast (oneDNN) where the CPU has native bf16
    (:mod:`camreloc_ros.core.inference.precision`); ``emulated_bf16`` runs it without, only to
    measure bf16's accuracy on such a CPU.
    """

    name = 'torch'

    def __init__(self, model: PoseModel, device: str = 'cpu', precision: str = 'fp32',
                 threads: int | None = None, emulated_bf16: bool = False):
        import torch

        super().__init__()
        # set around each call, not once: torch's thread count is process-wide, and other
        # engines (tests, benchmarks, tools) in the same process keep theirs
        self.threads = int(threads) if threads else None
        self.device = resolve_device(device)
        self.cuda = self.device.type == 'cuda'
        self.precision = check_precision('torch', self.device.type, precision, emulated_bf16)
        self.model = model.eval().to(self.device).to(memory_format=torch.channels_last)
        self.dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(precision)
        if self.cuda:
            if self.dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                raise RuntimeError(f'precision bf16 is not supported by {self.device} '
                                   '(needs compute capability 8.0+): use fp16')
            torch.backends.cudnn.benchmark = True   # fixed input size: pick the fastest conv
        self.conf = model.conf
        self.temporal = model.temporal
        self.window = model.window
        self.extra = model.checkpoint_extra
        self._host: dict[int, torch.Tensor] = {}     # input buffers by batch size
        self._dev: dict[int, torch.Tensor] = {}      # their device copies (CUDA)

    def _new_input(self, batch: int) -> np.ndarray:
        import torch

        size = self.input_size
        host = torch.empty((batch, 3, size, size), dtype=torch.float32,
                           memory_format=torch.channels_last, pin_memory=self.cuda)
        self._host[batch] = host
        if self.cuda:
            self._dev[batch] = torch.empty_like(host, device=self.device)
        return host.numpy()   # (B, 3, S, S) view with channels-last strides

    def _upload(self, images_b3hw: np.ndarray) -> torch.Tensor:
        import torch

        batch = images_b3hw.shape[0]
        host = self._host.get(batch)
        if host is not None and images_b3hw.ctypes.data == host.data_ptr():
            if not self.cuda:
                return host                      # the buffer itself, already channels-last
            return self._dev[batch].copy_(host, non_blocking=True)
        images_b3hw = np.asarray(images_b3hw, np.float32)
        if any(stride < 0 for stride in images_b3hw.strides):
            images_b3hw = np.ascontiguousarray(images_b3hw)
        x = torch.from_numpy(images_b3hw)   # strided views too: a batch slice is no copy
        return x.to(self.device, non_blocking=self.cuda).contiguous(
            memory_format=torch.channels_last)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if self.dtype is None:
            return self.model.features(x)
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.model.features(x).float()

    def _to_numpy(self, out: dict) -> dict:
        if not self.cuda:
            return {k: out[k].numpy() for k in OUTPUT_KEYS}
        import torch

        sizes = [out[k].shape[-1] for k in OUTPUT_KEYS]
        flat = torch.cat([out[k].float() for k in OUTPUT_KEYS], dim=-1).cpu().numpy()
        parts = np.split(flat, np.cumsum(sizes)[:-1], axis=-1)   # one device-to-host copy
        return dict(zip(OUTPUT_KEYS, parts))

    @contextmanager
    def _threads(self, threads: int | None):
        """Run the block with ``threads`` torch threads (CPU; None keeps the current count)."""
        import torch

        current = torch.get_num_threads()
        if self.cuda or threads is None or threads == current:
            yield
            return
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(current)

    def pose(self, images_b3hw: np.ndarray) -> dict:
        """Images -> pose in one pass (CNN, head, decode) with one upload and one download."""
        import torch

        with torch.inference_mode():
            with self._threads(self.threads):
                feat = self._features(self._upload(images_b3hw))
            with self._threads(HEAD_THREADS):
                return self._to_numpy(self.model.head_forward(feat))

    def coordinates(self, images_b3hw: np.ndarray) -> np.ndarray:
        """Images -> ``(B, 3, h, w)`` scene coordinates in metres (scr head only)."""
        import torch

        with torch.inference_mode():
            with self._threads(self.threads):
                x = self._upload(images_b3hw)
                with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                                    enabled=self.dtype is not None):
                    fmap = self.model.scr_trunk()(x).float()
            with self._threads(HEAD_THREADS):
                return self.model.coordinates_from_features(fmap).cpu().numpy()

    def features(self, images_b3hw: np.ndarray) -> np.ndarray:
        """Images -> pooled features ``(B, C)`` on the host."""
        import torch

        with torch.inference_mode(), self._threads(self.threads):
            return self._features(self._upload(images_b3hw)).cpu().numpy()

    def head(self, feat: np.ndarray) -> dict:
        """Features ``(B, C)`` or ``(B, T, C)`` -> decoded outputs (float32 head)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(feat, np.float32)).to(self.device)
            with self._threads(HEAD_THREADS):
                return self._to_numpy(self.model.head_forward(x))

    def describe(self) -> str:
        """E.g. ``torch eager, 2 threads``, ``torch eager bf16, 1 threads``, ``... fp16``."""
        if self.cuda:
            return f'torch eager {self.precision}'
        import torch

        precision = '' if self.precision == 'fp32' else f' {self.precision}'
        return f'torch eager{precision}, {self.threads or torch.get_num_threads()} threads'


# ---------------------------------------------------------------------------- ONNX Runtime

class OnnxRuntime(Runtime):
    """ONNX Runtime (CPU provider; CUDA provider where onnxruntime-gpu is installed).

    Graph optimisation "all", sequential execution, ``threads`` intra-op threads that sleep
    instead of spinning between frames (spinning threads steal the cores the camera driver
    and the ROS executor need). Single-frame heads run image -> pose as one session call.
    """

    name = 'onnx'

    def __init__(self, model: str | Path | bytes, device: str = 'cpu',
                 threads: int | None = None, spinning: bool = False,
                 precision: str | None = None):
        super().__init__()
        if isinstance(model, (bytes, bytearray)):
            self.source = '<in-memory export>'
            self._proto = check_self_contained(bytes(model), f'ONNX model {self.source}')
            self.meta = read_metadata(self._proto, self.source)
        else:
            self.source = str(model)
            self._proto, self.meta = load_onnx(model)
        self.precision = self._check_precision(precision, device)
        self.conf = self.meta['model_conf']
        self.temporal = bool(self.meta['temporal'])
        self.window = int(self.meta['window']) if self.temporal else 1
        self.extra = self.meta.get('extra') or {}
        self.threads = int(threads) if threads else cpu_cores()
        self.spinning = bool(spinning)
        self.providers, self.device = self._providers(device)
        self._sessions: dict[str, object] = {}
        # the per-frame sessions now (the first frame is not slow); the others on first use
        self._session('features' if self.temporal else 'pose')
        if self.temporal:
            self._session('head')

    @property
    def preprocessing(self) -> dict:
        """The exported model's own input size and normalisation."""
        return self.meta['preprocessing']

    def _check_precision(self, precision: str | None, device: str) -> str:
        """Return the file's precision; raise when it is not ``precision`` (None: any)."""
        have = self.meta['precision']
        if precision is not None and check_precision_name(precision) != have:
            check_precision('onnx', self._providers(device)[1].type, precision)
            if precision == 'int8':
                raise ValueError(
                    f"precision 'int8' needs an int8 export, and {self.source} is {have}: "
                    'quantize the checkpoint with `camreloc export CKPT --precision int8 '
                    '--data DATASET` (calibrated on its training images) and use that file')
            raise ValueError(f'{self.source} is an {have} export: set precision {have} to run '
                             f'it, or export the checkpoint again for precision {precision}')
        return check_precision('onnx', self._providers(device)[1].type, have)

    @staticmethod
    def _providers(device: str) -> tuple[list[str], OnnxDevice]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        cuda_ep = 'CUDAExecutionProvider' in available
        if device == 'auto':
            device = 'cuda' if cuda_ep else 'cpu'
        if device.startswith('cuda'):
            if not cuda_ep:
                raise RuntimeError(
                    f'device {device!r} with runtime onnx needs onnxruntime-gpu '
                    f'(CUDAExecutionProvider); this onnxruntime has {", ".join(available)}')
            index = int(device.split(':')[1]) if ':' in device else 0
            return ([('CUDAExecutionProvider', {'device_id': index}), 'CPUExecutionProvider'],
                    OnnxDevice('cuda', index))
        if device != 'cpu':
            raise ValueError(f'device must be auto, cpu or cuda[:N], got {device!r}')
        return ['CPUExecutionProvider'], OnnxDevice('cpu')

    def _session(self, part: str):
        session = self._sessions.get(part)
        if session is not None:
            return session
        import onnx.utils
        import onnxruntime as ort

        inputs, outputs = {
            'pose': ([IMAGES], list(OUTPUT_KEYS)),
            'features': ([IMAGES], [FEAT]),
            'head': ([FEATURES], list(HEAD_OUTPUTS)),
        }[part]
        sub = onnx.utils.Extractor(self._proto).extract_model(inputs, outputs)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = HEAD_THREADS if part == 'head' else self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry('session.intra_op.allow_spinning',
                                      '1' if self.spinning else '0')
        opts.log_severity_level = 3
        session = inference_session(sub, f'ONNX model {self.source}', opts, self.providers)
        self._sessions[part] = (session, outputs)
        return self._sessions[part]

    def _run(self, part: str, name: str, array: np.ndarray) -> list:
        session, outputs = self._session(part)
        return session.run(outputs, {name: np.ascontiguousarray(array, np.float32)})

    def pose(self, images_b3hw: np.ndarray) -> dict:
        """Images -> pose in one session call (single-frame heads)."""
        if self.temporal:
            return super().pose(images_b3hw)
        return dict(zip(OUTPUT_KEYS, self._run('pose', IMAGES, images_b3hw)))

    def features(self, images_b3hw: np.ndarray) -> np.ndarray:
        """Images -> pooled features ``(B, C)``."""
        return self._run('features', IMAGES, images_b3hw)[0]

    def head(self, feat: np.ndarray) -> dict:
        """Features ``(B, C)`` or ``(B, T, C)`` -> decoded outputs."""
        return dict(zip(OUTPUT_KEYS, self._run('head', FEATURES, feat)))

    def describe(self) -> str:
        """E.g. ``onnxruntime 1.32.0 CPU, 2 threads`` or ``onnxruntime 1.32.0 CPU int8, ...``."""
        import onnxruntime as ort

        provider = 'CUDA' if self.device.type == 'cuda' else 'CPU'
        precision = '' if self.precision == 'fp32' else f' {self.precision}'
        return f'onnxruntime {ort.__version__} {provider}{precision}, {self.threads} threads'


def auto_runtime(model: PoseModel | str | Path, device: str, precision: str = 'fp32') -> str:
    """Pick the fastest backend: ONNX Runtime on a CPU (or for an .onnx file), torch on CUDA.

    ONNX Runtime is about 3x faster than eager torch on a small CPU
    (docs/performance.md); on a GPU the torch path has fp16 and pinned buffers. The
    precision picks where only one runtime has it: int8 is ONNX Runtime's, bf16 on a CPU
    torch's.
    """
    if (is_model_path(model) and is_onnx_file(model)) or precision == 'int8':
        return 'onnx'
    cpu = resolve_device(device).type == 'cpu'
    return 'onnx' if cpu and precision != 'bf16' else 'torch'


def make_runtime(model: PoseModel | str | Path, runtime: str = 'torch', device: str = 'cpu',
                 precision: str = 'fp32', threads: int | None = None,
                 cache_dir: str | Path | None = None,
                 calibration: str | Path | None = None) -> Runtime:
    """Create a backend for a model object, a checkpoint (``.pt``) or an exported ``.onnx``.

    ``runtime='onnx'`` with a checkpoint exports it once into the cache (keyed by the
    checkpoint's hash); with a model object it exports in memory. ``'auto'``: see
    :func:`auto_runtime`. ``precision='int8'`` runs an int8 export: an ``.onnx`` written by
    ``camreloc export --precision int8``, or a checkpoint quantized once into the cache on
    the training frames of ``calibration`` (its dataset root). A precision the runtime and
    device do not run is an error before anything is loaded.
    """
    check_precision_name(precision)
    if precision == 'int8' and device == 'auto':
        device = 'cpu'   # int8 runs on ONNX Runtime's CPU provider only
    if check_runtime(runtime) == 'auto':
        runtime = auto_runtime(model, device, precision)
    if runtime == 'torch':
        check_precision('torch', resolve_device(device).type, precision)
        if is_model_path(model):
            if is_onnx_file(model):
                raise ValueError(f'{model} is an ONNX model: load it with runtime onnx')
            from camreloc_ros.core.models.pose_model import PoseModel

            model = PoseModel.from_checkpoint(model)
        return TorchRuntime(model, device, precision, threads)
    check_precision('onnx', OnnxRuntime._providers(device)[1].type, precision)
    path = Path(model) if is_model_path(model) else None
    if path is not None and is_onnx_file(path):
        return OnnxRuntime(path, device, threads, precision=precision)
    if precision == 'int8' and calibration is None:
        raise ValueError(
            f"precision 'int8' with {path or 'a model object'} needs training images to "
            'calibrate on: quantize it once with `camreloc export CKPT --precision int8 --data '
            'DATASET` and run the .onnx it writes (a live node has no dataset to calibrate on)')
    if path is None:
        data = export_onnx(model)
        if precision == 'int8':
            from camreloc_ros.core.inference.quantize import export_int8

            data = export_int8(data, calibration)
        return OnnxRuntime(data, device, threads, precision=precision)
    if precision == 'int8':
        from camreloc_ros.core.inference.quantize import cached_int8

        return OnnxRuntime(cached_int8(path, calibration, cache_dir), device, threads,
                           precision='int8')
    return OnnxRuntime(cached_onnx(path, cache_dir), device, threads, precision=precision)
