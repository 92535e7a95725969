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

"""Which runtime runs which CNN precision on which device, and what the CPU can do.

One table (:data:`SUPPORTED`) for the runtimes, the tools and the node, so that a precision
is either run as asked or refused with the value, the valid choices and the way to get it;
never silently run in float32 as ``precision`` once was on the CPU. The head always runs in
float32 (positions keep float32 precision whatever the CNN runs in).

* ``fp32``: everywhere.
* ``fp16``: CUDA autocast (torch). A CPU has no fast fp16 convolutions in either runtime.
* ``bf16``: CUDA autocast (torch, compute capability 8.0+) and CPU autocast (torch, oneDNN)
  on a CPU with native bf16 (AVX-512 BF16 or AMX on x86, BF16 on Arm). ONNX Runtime's CPU
  provider has no bf16 convolutions on x86 (its bf16 GEMM fast math is for Arm only), so bf16
  on the CPU is the torch runtime's. Without native bf16 oneDNN emulates it: measured 19x
  slower than fp32 on an AVX2 CPU (docs/performance.md), so it is refused there.
* ``int8``: ONNX Runtime on the CPU, with an int8 export (static quantization calibrated on
  training images, :mod:`camreloc_ros.core.inference.quantize`).
"""

from __future__ import annotations

import functools
import platform

from camreloc_ros.core.config import PRECISIONS

# (runtime, device type) -> the precisions it runs
SUPPORTED = {
    ('torch', 'cuda'): ('fp32', 'fp16', 'bf16'),
    ('torch', 'cpu'): ('fp32', 'bf16'),
    ('onnx', 'cpu'): ('fp32', 'int8'),
    ('onnx', 'cuda'): ('fp32',),
}
# the CPU flags (/proc/cpuinfo) that mean native bf16 arithmetic
BF16_FLAGS = ('avx512_bf16', 'amx_bf16', 'bf16')


def check_precision_name(precision: str) -> str:
    """Return ``precision`` if it is a known name, else raise ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    return precision


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Read the CPU's feature flags (x86 ``flags``, Arm ``Features``); empty if unreadable."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() in ('flags', 'Features'):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (so bf16 autocast can beat float32)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def cpu_description() -> str:
    """Name the CPU's relevant flags, for error messages and benchmark tables."""
    flags = cpu_flags()
    have = [f for f in ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_bf16',
                        'amx_int8', 'bf16', 'asimddp', 'i8mm') if f in flags]
    return f'{platform.machine()} ({", ".join(have) or "none of avx2/avx512/vnni/bf16"})'


def check_precision(runtime: str, device_type: str, precision: str,
                    emulated_bf16: bool = False) -> str:
    """Return ``precision`` if ``runtime`` runs it on ``device_type``, else raise ValueError.

    The message names the value, what this runtime and device accept, and where the precision
    is available instead. ``emulated_bf16`` accepts bf16 on a CPU without native bf16: only
    for measuring bf16's accuracy on such a machine (benchmarks), never for a live node.
    """
    check_precision_name(precision)
    valid = SUPPORTED.get((runtime, device_type))
    if valid is None:
        raise ValueError(f'no precision table for runtime {runtime!r} on {device_type!r}')
    if precision not in valid:
        elsewhere = [f'runtime {r} on {d}' for (r, d), ok in SUPPORTED.items() if precision in ok]
        raise ValueError(
            f'precision {precision!r} is not supported by runtime {runtime} on {device_type}: '
            f'valid there: {", ".join(valid)}; {precision} runs with '
            f'{" or ".join(elsewhere)}')
    if precision == 'bf16' and device_type == 'cpu' and not emulated_bf16 \
            and not cpu_has_bf16():
        raise ValueError(
            f"precision 'bf16' on the CPU needs native bf16 (AVX-512 BF16 or AMX on x86, BF16 "
            f'on Arm); this CPU, {cpu_description()}, has none and would emulate it, about 19x '
            'slower than fp32 (docs/performance.md): use fp32, or int8 with runtime onnx')
    return precision
