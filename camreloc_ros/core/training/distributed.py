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

"""Where a training process stands in a torchrun job (rank, world size, device).

Scale-out uses PyTorch's own engine: ``torchrun`` starts the processes and sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init` joins the process group with ``gloo`` on a CPU
and ``nccl`` on CUDA (one GPU per local rank). A plain ``python`` run is a world of one and
touches no process group.
"""

from __future__ import annotations

from dataclasses import dataclass
import datetime
import os

import torch

# Rank 0 may build the feature cache while the others wait at a barrier: allow hours.
BARRIER_TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class Dist:
    """This process' place in the job: ``rank`` of ``world``, and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, the cache and the logs."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op for a single process)."""
        if self.world > 1:
            torch.distributed.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum numbers over the ranks (identity for a single process)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)   # nccl: on GPU
        torch.distributed.all_reduce(t)
        return t.tolist()


def resolve_train_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this local rank's GPU) when present, else the CPU."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        device = f'cuda:{local_rank}'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'train.device {device!r} requested but CUDA is not available here')
    if device != 'cpu' and not device.startswith('cuda'):
        raise ValueError(f'train.device must be auto, cpu or cuda[:N], got {device!r}')
    return torch.device(device)


def init(device: str = 'auto') -> Dist:
    """Join the torchrun process group when there is one; else a world of one."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    dev = resolve_train_device(device, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        if dev.type == 'cuda':
            torch.cuda.set_device(dev)
        backend = 'nccl' if dev.type == 'cuda' else 'gloo'
        torch.distributed.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    return Dist(rank, world, local_rank, dev)


def shutdown(dist: Dist) -> None:
    """Leave the process group (after the last barrier)."""
    if dist.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
