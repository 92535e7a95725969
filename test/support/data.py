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

"""Test data: hololens-office frames from the shared data, and real checkpoints."""

from pathlib import Path

import numpy as np

from camreloc_ros.tools.common import shared_data_dir

DATA_DIR = shared_data_dir() / 'hololens-office'


def image_paths(count: int, start: int = 0, stride: int = 1) -> list[Path]:
    """``count`` hololens-office image files in sequence order."""
    paths = sorted((DATA_DIR / 'images').glob('*.jpg'))
    chosen = paths[start:start + count * stride:stride]
    if len(chosen) < count:
        raise FileNotFoundError(f'need {count} images in {DATA_DIR / "images"}, '
                                f'found {len(chosen)}')
    return chosen


def load_frames(count: int, start: int = 0, stride: int = 1,
                size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """RGB uint8 frames from the hololens-office sequence, optionally resized to (w, h)."""
    import cv2

    from camreloc_ros.core.data.transforms import read_rgb

    frames = [read_rgb(p) for p in image_paths(count, start, stride)]
    if size is not None:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return frames


def make_checkpoints(directory: Path, window: int = 4) -> dict[str, Path]:
    """Write a regressor (posenet) and a temporal GRU checkpoint with lite0 ImageNet weights.

    Non-trivial pose statistics make poses differ visibly between images (for the gate test).
    """
    from camreloc_ros.core.models.pose_model import build_model

    directory.mkdir(parents=True, exist_ok=True)
    reg = build_model('posenet')
    reg.set_pose_stats([1.0, -2.0, 0.5], 5.0)
    gru = build_model('gru', head={'window': window})
    gru.set_pose_stats([0.5, 0.2, -1.0], 3.0)
    return {'reg': reg.save_checkpoint(directory / 'reg.pt'),
            'gru': gru.save_checkpoint(directory / 'gru.pt')}


class FlatDescriptor:
    """A constant global descriptor: maps built without a network (tracking, the localizer).

    Retrieval then ranks every map image alike, so the refiner picks images by the prior
    alone; what is tested needs no trained network.
    """

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Return the same unit vector for every image."""
        v = np.zeros(8, np.float32)
        v[0] = 1.0
        return v

    def conf(self) -> dict:
        """Return the descriptor settings a map records."""
        return {'input_shorter_side': 64, 'mean': [0.0] * 3, 'std': [1.0] * 3, 'dim': 8}
