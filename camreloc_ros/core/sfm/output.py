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

"""A reconstruction written as a ``posed`` dataset, its report and its trajectory plot.

``train`` and ``map`` read ``images/`` + ``poses.txt`` + ``K.txt`` (the ``posed`` layout of
:func:`camreloc_ros.core.data.readers.read_posed`): the registered images only, one
camera-to-map pose per image, a pinhole ``K`` that is true of the images as written. A
``SIMPLE_RADIAL`` camera refined by the mapper has a radial term, which no ``K.txt`` can
carry, so its images are undistorted first (pycolmap's undistorter: the same model, pinhole,
images resampled) and the model written beside them is the undistorted one. The
``reconstruction/`` folder is the COLMAP model of exactly those images (binary, as
``colmap gui`` imports it with ``images/`` as the image folder).
"""

from __future__ import annotations

import logging
from pathlib import Path
import shutil
from typing import Mapping, Sequence

import numpy as np

from camreloc_ros.core.data.datasets import Intrinsics
from camreloc_ros.core.evaluation.metrics import markdown_table
from camreloc_ros.core.io import atomic_output
from camreloc_ros.core.sfm.pipeline import colmap, quiet_colmap

logger = logging.getLogger('camreloc_ros')

PINHOLE_MODELS = ('PINHOLE', 'SIMPLE_PINHOLE')


def pinhole_intrinsics(camera) -> Intrinsics | None:
    """Return the pinhole intrinsics of a pycolmap camera, or None when it has distortion."""
    name = camera.model.name if hasattr(camera.model, 'name') else str(camera.model)
    p = [float(v) for v in camera.params]
    if name == 'PINHOLE':
        return Intrinsics(camera.width, camera.height, p[0], p[1], p[2], p[3])
    if name == 'SIMPLE_PINHOLE':
        return Intrinsics(camera.width, camera.height, p[0], p[0], p[1], p[2])
    if name == 'SIMPLE_RADIAL' and abs(p[3]) < 1e-9:
        return Intrinsics(camera.width, camera.height, p[0], p[0], p[1], p[2])
    return None


def c2w(image) -> np.ndarray:
    """Return the 4x4 camera-to-world pose of a registered pycolmap image."""
    pose = image.cam_from_world()
    rot = np.asarray(pose.rotation.matrix(), np.float64)
    t = np.asarray(pose.translation, np.float64).reshape(3)
    out = np.eye(4)
    out[:3, :3] = rot.T
    out[:3, 3] = -rot.T @ t
    return out


def write_posed(rec, image_dir: str | Path, out: str | Path, work: str | Path,
                names: Sequence[str]) -> Intrinsics:
    """Write ``images/``, ``poses.txt``, ``K.txt`` and ``reconstruction/`` into ``out``.

    ``names`` are the registered images in recording order (the output keeps them in that
    order: their file names must sort the same, as ``read_posed`` requires). Distorted
    cameras are undistorted in ``work`` first. Returns the written intrinsics.
    """
    pycolmap = colmap()

    image_dir, out, work = Path(image_dir), Path(out), Path(work)
    (out / 'images').mkdir(parents=True, exist_ok=True)
    cameras = list(rec.cameras.values())
    if len(cameras) != 1:
        raise ValueError(f'expected one camera in the model, found {len(cameras)}')
    intr = pinhole_intrinsics(cameras[0])
    source = image_dir
    if intr is None:
        model_in, undist = work / 'distorted', work / 'undistorted'
        for folder in (model_in, undist):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        rec.write(model_in)
        with quiet_colmap(logger.isEnabledFor(logging.DEBUG)):
            pycolmap.undistort_images(undist, model_in, image_dir, image_names=list(names),
                                      output_type='COLMAP',
                                      undistort_options=pycolmap.UndistortCameraOptions(),
                                      jpeg_quality=95)
        rec = pycolmap.Reconstruction(undist / 'sparse')
        source = undist / 'images'
        intr = pinhole_intrinsics(list(rec.cameras.values())[0])
    by_name = {im.name: im for im in rec.images.values()}
    rows = []
    for name in names:
        shutil.copy2(source / name, out / 'images' / Path(name).name)
        rows.append(' '.join(f'{v:.17g}' for v in c2w(by_name[name]).reshape(-1)))
    (out / 'poses.txt').write_text('\n'.join(rows) + '\n')
    K = intr.matrix()
    (out / 'K.txt').write_text('\n'.join(' '.join(f'{v:.17g}' for v in r) for r in K) + '\n')
    (out / 'reconstruction').mkdir(exist_ok=True)
    rec.write(out / 'reconstruction')
    return intr


def report_markdown(title: str, stats: Mapping, wall: Mapping[str, float],
                    cpu: Mapping[str, float], images: int, scale_line: str, frame: str,
                    extra: Sequence[str] = ()) -> str:
    """Write the report: what registered, how well, what each stage cost, scale and frame.

    ``wall`` and ``cpu`` are seconds per stage (:class:`~.pipeline.Stopwatch`).
    """
    summary = markdown_table(
        ['images', 'registered', 'points', 'mean track length', 'mean reprojection error (px)'],
        [[str(images), f'{stats["registered"]} ({100 * stats["registered"] / images:.0f} %)',
          str(stats['points']), f'{stats["mean_track_length"]:.2f}',
          f'{stats["mean_reprojection_error_px"]:.2f}']])
    n = max(images, 1)
    rows = [[k, f'{v:.1f}', f'{cpu.get(k, 0.0):.1f}', f'{v / n:.3f}'] for k, v in wall.items()]
    total, total_cpu = sum(wall.values()), sum(cpu.values())
    rows.append(['total', f'{total:.1f}', f'{total_cpu:.1f}', f'{total / n:.3f}'])
    stages = markdown_table(['stage', 'seconds', 'CPU seconds', 'per image (s)'], rows)
    lines = [f'# {title}', '', summary, stages, f'Scale: {scale_line}.', '',
             f'Map frame: {frame}.', '']
    lines += [f'{e}' for e in extra]
    return '\n'.join(lines).rstrip() + '\n'


def plot_topdown(path: str | Path, positions: np.ndarray,
                 odometry: np.ndarray | None = None, title: str = '', unit: str = 'm') -> Path:
    """Top-down view of the keyframe camera centres, next to the odometry's (if any).

    Drawn on the two axes along which the trajectory spreads most, as the evaluation plots
    are, so y-up and z-up frames both show the floor plan.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    ref = pos if odometry is None else np.asarray(odometry, np.float64).reshape(-1, 3)
    spread = np.ptp(np.vstack([pos, ref]), axis=0)
    a, b = sorted(int(i) for i in np.argsort(-spread, kind='stable')[:2])
    fig = Figure(figsize=(7.0, 6.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if odometry is not None:
        ax.plot(ref[:, a], ref[:, b], '-', color='black', linewidth=1.0, label='odometry')
    ax.plot(pos[:, a], pos[:, b], '.-', color='tab:blue', markersize=3, linewidth=0.6,
            label='reconstruction')
    ax.plot(pos[:1, a], pos[:1, b], 'o', color='tab:green', label='start')
    axis = 'xyz'
    ax.set_xlabel(f'{axis[a]} ({unit})')
    ax.set_ylabel(f'{axis[b]} ({unit})')
    ax.set_aspect('equal', adjustable='datalim')
    ax.grid(True, linewidth=0.3)
    ax.legend(loc='best', fontsize=8)
    ax.set_title(f'{title + ": " if title else ""}top-down view ({axis[a]}-{axis[b]})')
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format='png')
    return path
