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

"""SIFT, pairs, matching and mapping with pycolmap: one model of one camera's images.

The steps are COLMAP's (hloc's order): SIFT into a database (one camera for every image),
pairs (:mod:`.pairs`: the sequence and the global-descriptor look-alikes), matching with
geometric verification, then mapping. Two mappers: ``incremental`` (COLMAP: register one
image at a time, bundle adjustment as it grows) and ``global`` (GLOMAP: rotation averaging and
global positioning of all images at once, then one bundle adjustment). On the HoloLens walk
the global mapper registered as many images, as accurately, in less time, and gave the same
model whatever the seed, where the incremental one sometimes started from a bad pair and bent
the whole walk (docs/mapping.md), so it is the default.

Known intrinsics (CameraInfo, ``K.txt``, ``--intrinsics``) make a ``PINHOLE`` camera held
fixed: a calibrated camera is better than any self-calibration on a walk that never looks at
the same thing from far apart. Without them a ``SIMPLE_RADIAL`` camera (one focal length,
one radial term) is refined by the mapper.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
import logging
from pathlib import Path
import time
from typing import Callable, Iterator, Sequence

import numpy as np

from camreloc_ros.core.config import Spec
from camreloc_ros.core.data.datasets import Intrinsics
from camreloc_ros.core.sfm.pairs import retrieval_pairs, sequential_pairs, write_pairs

logger = logging.getLogger('camreloc_ros')

MAPPERS = ('global', 'incremental')
WEAK_POINTS_PER_IMAGE = 20     # fewer 3D points per registered image: warned as weak
default_conf = {
    'mapper': 'global',        # global (GLOMAP) or incremental (COLMAP): docs/mapping.md
    'max_features': 4096,      # SIFT keypoints per image
    'max_image_size': 1600,    # longer side for SIFT (pixels); larger images are downscaled
    'overlap': 10,             # sequential pairs: each image with the next N
    'retrieval': 5,            # + the N most similar images beyond the overlap (0: none)
    'min_matches': 15,         # verified matches for a pair to count
    'threads': -1,             # -1: all cores
    'seed': 0,                 # mapper random seed (the same run gives the same model)
}
schema = {
    'mapper': Spec('str', choices=MAPPERS),
    'max_features': Spec('int', 64),
    'max_image_size': Spec('int', 64),
    'overlap': Spec('int', 1),
    'retrieval': Spec('int', 0),
    'min_matches': Spec('int', 5),
    'threads': Spec('int', -1),
    'seed': Spec('int', 0),
}


class Stopwatch:
    """Wall and CPU seconds per stage, in order.

    On a machine shared with other work the wall time of a stage depends on the neighbours;
    the process' CPU time (all of pycolmap's threads) does much less, so both are reported.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (added to it if it ran before)."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


@dataclass
class SfmResult:
    """The largest model of a run, what it left out and what each stage cost."""

    reconstruction: object                     # pycolmap.Reconstruction
    names: list[str]                           # every input image, in order
    registered: list[str]                      # those posed by the model, in order
    other_models: list[int]                    # sizes of the smaller models left out
    pairs: dict[str, int]
    clock: Stopwatch = field(default_factory=Stopwatch)
    camera: str = ''

    @property
    def unregistered(self) -> list[str]:
        """Input images the model did not pose (reported, never silently dropped)."""
        done = set(self.registered)
        return [n for n in self.names if n not in done]


def colmap():
    """Import pycolmap, after zlib: the one way this stage imports it.

    pycolmap 4.2.1's wheel carries its own zlib; imported before any other user of zlib, its
    copy serves the later ones too, and the next PNG that OpenCV or Pillow writes (the
    trajectory plot) aborts the process with heap corruption (measured: ``import pycolmap``
    then ``cv2.imwrite('x.png', ...)``). With the system zlib loaded first, both work.
    """
    import zlib  # noqa: F401 - must come first, see above

    import pycolmap
    return pycolmap


def model_stats(rec) -> dict:
    """Count a model's registered images and points; its track length, reprojection error."""
    return {'registered': int(rec.num_reg_images()), 'points': int(rec.num_points3D()),
            'observations': int(rec.compute_num_observations()),
            'mean_track_length': float(rec.compute_mean_track_length()),
            'mean_reprojection_error_px': float(rec.compute_mean_reprojection_error())}


@contextlib.contextmanager
def quiet_colmap(verbose: bool = False) -> Iterator[None]:
    """Keep COLMAP's own log (glog, lines per image) for ``-v``; restore it after."""
    pycolmap = colmap()

    saved = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 0 if verbose else 2
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = saved


def _reader_options(intrinsics: Intrinsics | None):
    pycolmap = colmap()

    options = pycolmap.ImageReaderOptions()
    if intrinsics is None:
        options.camera_model = 'SIMPLE_RADIAL'
    else:
        options.camera_model = 'PINHOLE'
        options.camera_params = ','.join(
            f'{v:.10g}' for v in (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy))
    return options


def _mapper_options(conf: dict, fixed: bool):
    pycolmap = colmap()

    if conf['mapper'] == 'incremental':
        options = pycolmap.IncrementalPipelineOptions()
        options.min_num_matches = int(conf['min_matches'])
        options.num_threads = int(conf['threads'])
        options.random_seed = int(conf['seed'])
        options.mapper.random_seed = int(conf['seed'])
        options.triangulation.random_seed = int(conf['seed'])
        if fixed:
            options.ba_refine_focal_length = False
            options.ba_refine_principal_point = False
            options.ba_refine_extra_params = False
            options.mapper.abs_pose_refine_focal_length = False
            options.mapper.abs_pose_refine_extra_params = False
        return options
    options = pycolmap.GlobalPipelineOptions()
    options.min_num_matches = int(conf['min_matches'])
    options.num_threads = int(conf['threads'])
    options.random_seed = int(conf['seed'])
    options.mapper.random_seed = int(conf['seed'])
    ba = options.mapper.bundle_adjustment
    ba.ceres.use_gpu = False
    options.mapper.global_positioning.use_gpu = False
    if fixed:
        ba.refine_focal_length = False
        ba.refine_principal_point = False
        ba.refine_extra_params = False
    return options


def check_names(names: Sequence[str]) -> None:
    """Refuse image names COLMAP's pair lists cannot carry (whitespace) or that repeat."""
    bad = [n for n in names if not n or any(c.isspace() for c in n)]
    if bad:
        raise ValueError(f'image names with spaces cannot be matched by COLMAP: {bad[:3]}; '
                         'rename the files')
    if len(set(names)) != len(names):
        raise ValueError('image names repeat; expected one file per name')


@dataclass
class Matched:
    """A database of SIFT features and verified matches, ready for either mapper."""

    database: Path
    image_dir: Path
    names: list[str]
    fixed: bool                     # intrinsics given (held fixed) or refined
    pairs: dict[str, int]


def match_images(image_dir: str | Path, names: Sequence[str], work: str | Path, conf: dict,
                 intrinsics: Intrinsics | None = None,
                 describe: Callable[[list[Path]], np.ndarray] | None = None,
                 log: Callable[[str], None] | None = None, verbose: bool = False,
                 clock: Stopwatch | None = None) -> Matched:
    """Extract SIFT of ``names`` (files in ``image_dir``, in recording order), pair, match.

    ``work`` receives the database and the pair list. ``describe`` maps image paths to
    unit-norm global descriptors for retrieval pairs (None: the pose model's ImageNet trunk,
    :func:`trunk_descriptors`). ``clock`` receives the stage times (extract, retrieval,
    match).
    """
    pycolmap = colmap()

    log = log or logger.info
    names = list(names)
    check_names(names)
    if len(names) < 3:
        raise ValueError(f'{len(names)} image(s): structure from motion needs at least 3')
    image_dir, work = Path(image_dir), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    database = work / 'database.db'
    clock = clock if clock is not None else Stopwatch()
    with quiet_colmap(verbose):
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = int(conf['threads'])
        extraction.max_image_size = int(conf['max_image_size'])
        extraction.sift.max_num_features = int(conf['max_features'])
        with clock.stage('extract'):
            pycolmap.extract_features(database, image_dir, image_names=names,
                                      camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=_reader_options(intrinsics),
                                      extraction_options=extraction,
                                      device=pycolmap.Device.cpu)
        log(f'SIFT: {len(names)} images in {clock.wall["extract"]:.1f} s')

        pairs = sequential_pairs(len(names), int(conf['overlap']))
        counts = {'sequential': len(pairs), 'retrieval': 0}
        if conf['retrieval'] > 0 and len(names) > conf['overlap'] + 1:
            with clock.stage('retrieval'):
                describe = describe or trunk_descriptors
                desc = describe([image_dir / n for n in names])
                extra = retrieval_pairs(desc, int(conf['retrieval']), int(conf['overlap']) + 1)
            counts['retrieval'] = len(extra - pairs)
            pairs |= extra
        pair_file = write_pairs(work / 'pairs.txt', names, pairs)

        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = int(conf['threads'])
        verification = pycolmap.TwoViewGeometryOptions()
        verification.min_num_inliers = int(conf['min_matches'])
        verification.ransac.random_seed = int(conf['seed'])
        with clock.stage('match'):
            pycolmap.match_image_pairs(database, matching_options=matching,
                                       pairing_options=pycolmap.ImportedPairingOptions(
                                           match_list_path=str(pair_file)),
                                       verification_options=verification,
                                       device=pycolmap.Device.cpu)
    db = pycolmap.Database.open(database)
    try:
        inliers = db.read_two_view_geometry_num_inliers()[1]
        counts['verified'] = int(sum(n >= conf['min_matches'] for n in inliers))
    finally:
        db.close()
    counts['pairs'] = len(pairs)
    log(f'matching: {len(pairs)} pairs ({counts["sequential"]} sequential, '
        f'{counts["retrieval"]} by retrieval), {counts["verified"]} verified, in '
        f'{clock.wall["match"]:.1f} s')
    return Matched(database, image_dir, names, intrinsics is not None, counts)


def map_images(matched: Matched, models_dir: str | Path, conf: dict,
               log: Callable[[str], None] | None = None, verbose: bool = False,
               clock: Stopwatch | None = None) -> SfmResult:
    """Run the mapper of ``conf['mapper']`` on a matched database; keep the largest model.

    Raises ValueError when no model of at least 3 images forms, saying how many pairs
    verified; warns when the model is weak (few points per image).
    """
    pycolmap = colmap()

    log = log or logger.info
    clock = clock if clock is not None else Stopwatch()
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    names, counts = matched.names, matched.pairs
    options = _mapper_options(conf, matched.fixed)
    with quiet_colmap(verbose):
        pycolmap.set_random_seed(int(conf['seed']))
        with clock.stage('map'):
            if conf['mapper'] == 'incremental':
                models = pycolmap.incremental_mapping(matched.database, matched.image_dir,
                                                      models_dir, options)
            else:
                models = pycolmap.global_mapping(matched.database, matched.image_dir,
                                                 models_dir, options)
    models = sorted(models.values(), key=lambda r: -r.num_reg_images())
    if not models or models[0].num_reg_images() < 3:
        raise ValueError(f'no model formed from {len(names)} images ({counts["verified"]} of '
                         f'{counts["pairs"]} pairs verified with >= {conf["min_matches"]} '
                         'matches): too little overlap or texture. Keep more images (a '
                         'smaller --every) or record slower')
    rec = models[0]
    registered = sorted((rec.image(i).name for i in rec.reg_image_ids()), key=names.index)
    others = [int(m.num_reg_images()) for m in models[1:]]
    log(f'{conf["mapper"]} mapping: {len(registered)} of {len(names)} images registered in '
        f'{clock.wall["map"]:.1f} s'
        + (f'; {len(others)} smaller model(s) of {others} images left out' if others else ''))
    per_image = rec.num_points3D() / max(len(registered), 1)
    if per_image < WEAK_POINTS_PER_IMAGE:
        logger.warning(f'weak model: {rec.num_points3D()} points for {len(registered)} images '
                       f'({per_image:.0f} per image, mean track length '
                       f'{rec.compute_mean_track_length():.1f}): little texture or parallax; '
                       'its poses may be wrong')
    camera = ('PINHOLE, fixed (given intrinsics)' if matched.fixed
              else 'SIMPLE_RADIAL, refined by the mapper')
    return SfmResult(rec, names, registered, others, counts, clock, camera)


def run_sfm(image_dir: str | Path, names: Sequence[str], work: str | Path, conf: dict,
            intrinsics: Intrinsics | None = None,
            describe: Callable[[list[Path]], np.ndarray] | None = None,
            log: Callable[[str], None] | None = None, verbose: bool = False,
            clock: Stopwatch | None = None) -> SfmResult:
    """Reconstruct ``names`` in ``work``: :func:`match_images`, then :func:`map_images`."""
    clock = clock if clock is not None else Stopwatch()
    matched = match_images(image_dir, names, work, conf, intrinsics, describe, log, verbose,
                           clock)
    return map_images(matched, Path(work) / 'models', conf, log, verbose, clock)


def trunk_descriptors(paths: Sequence[str | Path]) -> np.ndarray:
    """Describe images by the default pose model's ImageNet trunk (GeM, unit norm).

    The same descriptor the maps and retrieval baselines use
    (:class:`camreloc_ros.core.localization.retrieval.GlobalDescriptor`); before any
    training its trunk is the backbone's ImageNet weights, installed with the package.
    """
    from camreloc_ros.core.localization.retrieval import describe_files, GlobalDescriptor
    from camreloc_ros.core.models.pose_model import build_model

    return describe_files(GlobalDescriptor(build_model('posenet')), list(paths))
