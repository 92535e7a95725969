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
"""The on-disk layouts: one reader per format, each returning a :class:`Dataset`.

Strict on purpose (see :mod:`camreloc_ros.core.data.datasets`): anything unexpected raises
:class:`DatasetError` naming the file and line. :func:`~camreloc_ros.core.data.formats.
read_dataset` is the entry point; the layouts are described in :mod:`.datasets`.
About 450 lines: five readers that share the strict parsing helpers at the top.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
import re
from typing import Any, Iterator, Sequence

import numpy as np

from camreloc_ros.core.data.datasets import (Dataset, DatasetError, Frame, IMAGE_SUFFIXES,
                                             Intrinsics, READER_OPTIONS, SEVEN_SCENES_K)
from camreloc_ros.core.geometry import check_rigid, quat_to_matrix, unit_quat_problem


# ----------------------------------------------------------------------------- helpers

def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, stripped text) of non-blank, non-comment lines of a text file."""
    if not path.is_file():
        raise DatasetError('file not found', path)
    try:
        text = path.read_text(encoding='utf-8-sig')
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f'cannot read as UTF-8 text ({exc})', path) from None
    for n, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if s and not s.startswith('#'):
            yield n, s


def _floats(tokens: Sequence[str], count: int, what: str, path: Path,
            line: int | None) -> np.ndarray:
    """Parse exactly ``count`` finite floats or raise naming file and line."""
    if len(tokens) != count:
        raise DatasetError(f'expected {count} values ({what}), found {len(tokens)}', path, line)
    try:
        vals = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise DatasetError(f'non-numeric value {bad!r} in {what}', path, line) from None
    if not np.all(np.isfinite(vals)):
        raise DatasetError(f'NaN or infinite value in {what}', path, line)
    return vals


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def _checked_pose(T: np.ndarray, path: Path, line: int | None) -> np.ndarray:
    """Return ``T`` if it is a rigid transform; a non-rigid pose means a broken file."""
    problem = check_rigid(T)
    if problem:
        raise DatasetError(f'pose is not a rigid 4x4 transform: {problem}', path, line)
    return T


def _quat_xyzw_to_matrix(q: np.ndarray, path: Path, line: int | None) -> np.ndarray:
    """3x3 rotation of a unit quaternion in x, y, z, w order (checked, then normalised)."""
    problem = unit_quat_problem(q)
    if problem:
        raise DatasetError(problem, path, line)
    return quat_to_matrix(q)


def _pose_from(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _natural_key(s: str) -> list:
    """Sort key that orders 'frame9' before 'frame10'."""
    return [int(p) if p.isdigit() else p for p in re.split(r'(\d+)', s)]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding the pixels."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib/torchvision
        pass
    except Exception as exc:
        raise DatasetError(f'cannot read image header ({exc})', path) from None
    import cv2  # pragma: no cover
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # pragma: no cover
    if img is None:  # pragma: no cover
        raise DatasetError('cannot decode image', path)
    return int(img.shape[1]), int(img.shape[0])  # pragma: no cover


def _read_k(path: Path, image: Path) -> Intrinsics:
    """Read a 3x3 ``K.txt``; width and height come from ``image``."""
    rows = list(_lines(path))
    if len(rows) != 3:
        raise DatasetError(f'expected 3 rows of a 3x3 camera matrix, found {len(rows)}', path,
                           rows[-1][0] if rows else None)
    K = np.stack([_floats(s.split(), 3, 'camera matrix row', path, n) for n, s in rows])
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or abs(K[1, 0]) > 1e-9:
        raise DatasetError('expected a pinhole camera matrix [[fx 0 cx] [0 fy cy] [0 0 1]]',
                           path, rows[2][0])
    if abs(K[0, 1]) > 1e-6 * abs(K[0, 0]):
        raise DatasetError(f'camera matrix has skew {K[0, 1]}; expected 0', path, rows[0][0])
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DatasetError('focal lengths must be positive', path, rows[0][0])
    w, h = image_size(image)
    return Intrinsics(w, h, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))


def read_camera_matrix(path: str | Path, image: str | Path) -> Intrinsics:
    """Read a ``K.txt`` for the images like ``image`` (also beside a folder without poses).

    ``camreloc reconstruct`` takes a folder of images with its ``K.txt`` before any pose
    exists; the same checks as for a posed dataset apply.
    """
    return _read_k(Path(path), Path(image))


def _optional_k(root: Path, frames: list[Frame]) -> Intrinsics | None:
    k_path = root / 'K.txt'
    if not k_path.exists() or not frames:
        return None
    return _read_k(k_path, frames[0].image_path)


def _require_image(image: Path, listed_in: Path, line: int | None) -> Path:
    if not image.is_file():
        raise DatasetError(f'image file {image} does not exist', listed_in, line)
    return image


def _require_frames(frames: list[Frame], where: Path) -> None:
    if not frames:
        raise DatasetError('no frames found; expected at least one posed image', where)


def _no_suffix(rel: str) -> str:
    p = Path(rel)
    return p.with_suffix('').as_posix()


# ----------------------------------------------------------------------------- 7-Scenes

def _read_split_file(path: Path) -> list[tuple[int, str]]:
    """(line, sequence folder name such as ``seq-01``) listed in a 7-Scenes split file."""
    if not path.is_file():
        raise DatasetError('split file not found; expected lines like "sequence1"', path)
    seqs = []
    for n, s in _lines(path):
        m = re.fullmatch(r'sequence\s*(\d+)', s, flags=re.IGNORECASE)
        if not m:
            raise DatasetError(f'expected a line like "sequence1", found {s!r}', path, n)
        seqs.append((n, f'seq-{int(m.group(1)):02d}'))
    return seqs


def _read_7scenes_pose(path: Path) -> np.ndarray:
    rows = list(_lines(path))
    if len(rows) != 4:
        raise DatasetError(f'expected 4 rows of a 4x4 pose matrix, found {len(rows)}', path,
                           rows[-1][0] if rows else None)
    T = np.stack([_floats(s.split(), 4, 'pose matrix row', path, n) for n, s in rows])
    return _checked_pose(T, path, rows[0][0])


def read_7scenes(root: Path, split: str | None) -> Dataset:
    """Read ``seq-XX/frame-*.color.*`` + ``.pose.txt`` and the official split files."""
    split_files = {'train': root / 'TrainSplit.txt', 'test': root / 'TestSplit.txt'}
    seq_split: dict[str, str] = {}
    for sp, path in split_files.items():
        if split == sp or (split is None and path.exists()):
            for n, s in _read_split_file(path):
                if not (root / s).is_dir():
                    raise DatasetError(f'sequence folder {s} listed here does not exist',
                                       path, n)
                if s in seq_split:
                    raise DatasetError(f'{s} is listed in both split files; expected each '
                                       'sequence in one', path, n)
                seq_split[s] = sp
    if split is None:
        seq_dirs = sorted((p for p in root.glob('seq-*') if p.is_dir()),
                          key=lambda p: _natural_key(p.name))
    else:
        seq_dirs = [root / s for s in sorted(seq_split, key=_natural_key)]
    frames: list[Frame] = []
    official: dict[str, str] = {}
    for d in seq_dirs:
        poses = {p.name[:-len('.pose.txt')]: p for p in d.glob('frame-*.pose.txt')}
        images: dict[str, Path] = {}
        for p in sorted(d.glob('frame-*.color.*')):  # .jpg before .png if both exist
            if p.suffix.lower() in IMAGE_SUFFIXES:
                images[p.name[:p.name.index('.color.')]] = p
        orphans = sorted(set(images) - set(poses), key=_natural_key)
        if orphans:
            raise DatasetError(f'fewer poses than images: {len(orphans)} image(s) without a '
                               f'pose file; expected {orphans[0]}.pose.txt next to '
                               f'{images[orphans[0]].name}', d)
        for i, stem in enumerate(sorted(poses, key=_natural_key)):
            if stem not in images:
                raise DatasetError(f'image file {d / stem}.color.png|jpg does not exist',
                                   poses[stem])
            name = f'{d.name}/{stem}'
            frames.append(Frame(name=name, image_path=images[stem],
                                pose_c2w=_read_7scenes_pose(poses[stem]), sequence=d.name,
                                index=i, timestamp=None))
            if d.name in seq_split:
                official[name] = seq_split[d.name]
    _require_frames(frames, root)
    w, h = image_size(frames[0].image_path)
    k = Intrinsics(**SEVEN_SCENES_K).scaled(w, h)
    return Dataset(root=root, format='7scenes', frames=frames, intrinsics=k,
                   official_split=official)


# ----------------------------------------------------------------------------- posed

def read_posed(root: Path, split: str | None) -> Dataset:
    """Read ``images/`` + ``poses.txt`` (+ optional ``K.txt``): one sequence."""
    img_dir = root / 'images'
    if not img_dir.is_dir():
        raise DatasetError('images/ folder not found; expected images/ + poses.txt', root)
    images = sorted(p for p in img_dir.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    natural = sorted(images, key=lambda p: _natural_key(p.name))
    if natural != images:
        raise DatasetError('image names sort differently as text and as numbers (e.g. 9.jpg '
                           'vs 10.jpg), so the pose order is ambiguous; expected zero-padded '
                           'names', img_dir)
    pose_path = root / 'poses.txt'
    rows = list(_lines(pose_path))
    if len(rows) > len(images):
        raise DatasetError(f'{len(rows)} poses but {len(images)} images in images/; expected '
                           'one pose line per image', pose_path, rows[len(images)][0])
    if len(rows) < len(images):
        last = rows[-1][0] if rows else 0
        raise DatasetError(f'file ends after line {last} with {len(rows)} poses but images/ '
                           f'has {len(images)} images; first image without a pose: '
                           f'{images[len(rows)].name}', pose_path, last)
    frames = []
    for i, (img, (n, s)) in enumerate(zip(images, rows)):
        T = _floats(s.split(), 16, 'row-major 4x4 pose', pose_path, n).reshape(4, 4)
        frames.append(Frame(name=img.stem, image_path=img,
                            pose_c2w=_checked_pose(T, pose_path, n),
                            sequence=root.resolve().name, index=i, timestamp=None))
    _require_frames(frames, img_dir)
    return Dataset(root=root, format='posed', frames=frames,
                   intrinsics=_optional_k(root, frames))


# ----------------------------------------------------------------------------- Cambridge

def read_cambridge(root: Path, split: str | None) -> Dataset:
    """Read ``dataset_train.txt`` / ``dataset_test.txt`` (centre + world-to-camera quat)."""
    files = {'train': root / 'dataset_train.txt', 'test': root / 'dataset_test.txt'}
    if split is not None:
        files = {split: files[split]}
    elif not any(p.exists() for p in files.values()):
        raise DatasetError('neither dataset_train.txt nor dataset_test.txt found', root)
    else:
        files = {k: p for k, p in files.items() if p.exists()}
    per_seq: dict[str, list[tuple[str, Path, np.ndarray]]] = {}
    official: dict[str, str] = {}
    for sp, path in files.items():
        if not path.is_file():
            raise DatasetError('split file not found', path)
        text = path.read_text(encoding='utf-8-sig').splitlines()
        if len(text) < 3:
            raise DatasetError('expected 3 header lines before the pose lines', path,
                               len(text) or None)
        for n, raw in enumerate(text[3:], start=4):
            tok = raw.split()
            if not tok:
                continue
            rel = tok[0]
            vals = _floats(tok[1:], 7, 'X Y Z W P Q R', path, n)
            # Stored: camera centre and the world-to-camera rotation (w, x, y, z).
            R_w2c = _quat_xyzw_to_matrix(vals[[4, 5, 6, 3]], path, n)
            T = _checked_pose(_pose_from(R_w2c.T, vals[:3]), path, n)
            img = _require_image(root / rel, path, n)
            seq = Path(rel).parent.as_posix()
            if seq in ('', '.'):
                raise DatasetError(f'image {rel!r} has no sequence folder; expected '
                                   'seqN/frameXXXXX.png', path, n)
            name = _no_suffix(rel)
            if name in official:
                raise DatasetError(f'image {rel} listed twice (also in the {official[name]} '
                                   'list); expected each image once', path, n)
            official[name] = sp
            per_seq.setdefault(seq, []).append((name, img, T))
    frames = []
    for seq in sorted(per_seq, key=_natural_key):
        for i, (name, img, T) in enumerate(sorted(per_seq[seq],
                                                  key=lambda e: _natural_key(e[0]))):
            frames.append(Frame(name=name, image_path=img, pose_c2w=T, sequence=seq,
                                index=i, timestamp=None))
    _require_frames(frames, next(iter(files.values())))
    return Dataset(root=root, format='cambridge', frames=frames, intrinsics=None,
                   official_split=official)


# ----------------------------------------------------------------------------- TUM RGB-D

def read_tum(root: Path, split: str | None, max_dt: float = READER_OPTIONS['max_dt'][0],
             drop_unmatched: bool = READER_OPTIONS['drop_unmatched'][0]) -> Dataset:
    """Read ``rgb.txt`` + ``groundtruth.txt``: the nearest ground truth within ``max_dt``.

    Advice in the errors names the config keys (``data.max_dt``, ``data.drop_unmatched``):
    the command-line tools take them as ``key=value`` arguments.
    """
    max_dt = float(max_dt)
    if not (math.isfinite(max_dt) and max_dt > 0):
        raise DatasetError(f'data.max_dt must be a positive number of seconds, got {max_dt}')
    rgb_path, gt_path = root / 'rgb.txt', root / 'groundtruth.txt'
    rgb = []
    for n, s in _lines(rgb_path):
        tok = s.split()
        if len(tok) != 2:
            raise DatasetError(f'expected "timestamp filename", found {len(tok)} fields',
                               rgb_path, n)
        ts = float(_floats(tok[:1], 1, 'timestamp', rgb_path, n)[0])
        rgb.append((ts, n, tok[1]))
    gt_t, gt_T = [], []
    for n, s in _lines(gt_path):
        vals = _floats(s.split(), 8, 'timestamp tx ty tz qx qy qz qw', gt_path, n)
        R = _quat_xyzw_to_matrix(vals[4:8], gt_path, n)
        gt_t.append(vals[0])
        gt_T.append(_checked_pose(_pose_from(R, vals[1:4]), gt_path, n))
    if not rgb:
        _require_frames([], rgb_path)
    if not gt_t:
        raise DatasetError('no ground-truth poses; expected "timestamp tx ty tz qx qy qz qw" '
                           'lines', gt_path)
    order = np.argsort(np.asarray(gt_t), kind='stable')
    times = np.asarray(gt_t)[order]
    rgb.sort(key=lambda e: e[0])
    frames, unmatched = [], []
    for i, (ts, n, rel) in enumerate(rgb):
        j = int(np.searchsorted(times, ts))
        cands = [k for k in (j - 1, j) if 0 <= k < len(times)]
        k = min(cands, key=lambda k: abs(times[k] - ts))
        if abs(times[k] - ts) > max_dt:
            unmatched.append((ts, n))
            continue
        img = _require_image(root / rel, rgb_path, n)
        frames.append(Frame(name=_no_suffix(rel), image_path=img,
                            pose_c2w=gt_T[int(order[k])].copy(),
                            sequence=root.resolve().name, index=i, timestamp=ts))
    if unmatched and not drop_unmatched:
        ts, n = unmatched[0]
        raise DatasetError(f'{len(unmatched)} of {len(rgb)} images have no groundtruth.txt '
                           f'pose within max_dt={max_dt} s, the first at timestamp {ts:.6f}; '
                           'add data.drop_unmatched=true to the command (drop_unmatched=True '
                           'in read_dataset) to drop them, or raise data.max_dt', rgb_path, n)
    _require_frames(frames, rgb_path)
    return Dataset(root=root, format='tum', frames=frames,
                   intrinsics=_optional_k(root, frames), dropped=len(unmatched))


# ----------------------------------------------------------------------------- csv

_CSV_REQUIRED = ('image', 'x', 'y', 'z', 'qx', 'qy', 'qz', 'qw')
_CSV_OPTIONAL = ('sequence', 'timestamp')


def _find_csv(root: Path, file: Any | None) -> tuple[Path, Path]:
    """Return (csv path, dataset root) for ``root`` being the file or its folder."""
    if root.is_file():
        if file is not None:
            raise DatasetError('data.file given but the dataset root is already a csv file; '
                               'give its folder, or leave data.file out', root)
        return root, root.parent
    if file is not None:
        path = root / file
        if not path.is_file():
            raise DatasetError('csv file not found', path)
        return path, root
    if (root / 'poses.csv').is_file():
        return root / 'poses.csv', root
    found = sorted(root.glob('*.csv'))
    if len(found) != 1:
        raise DatasetError(f'found {len(found)} *.csv files; expected poses.csv or exactly '
                           'one csv (or name it: data.file=NAME.csv)', root)
    return found[0], root


def read_csv(root: Path, split: str | None, file: Any | None = None) -> Dataset:
    """Read one csv file: ``image,x,y,z,qx,qy,qz,qw`` (+ ``sequence``, ``timestamp``)."""
    path, root = _find_csv(root, file)
    with path.open(newline='', encoding='utf-8-sig') as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        rows = []
        for tok in reader:
            n = reader.line_num
            if not tok or all(not t.strip() for t in tok) or tok[0].lstrip().startswith('#'):
                continue
            tok = [t.strip() for t in tok]
            if header is None:
                header, header_line = tok, n
                continue
            if len(tok) != len(header):
                raise DatasetError(f'expected {len(header)} fields as in the header, found '
                                   f'{len(tok)}', path, n)
            rows.append((n, dict(zip(header, tok))))
    if header is None:
        raise DatasetError('empty file; expected header ' + ','.join(_CSV_REQUIRED), path)
    missing = [c for c in _CSV_REQUIRED if c not in header]
    unknown = [c for c in header if c not in _CSV_REQUIRED + _CSV_OPTIONAL]
    if missing or unknown or len(set(header)) != len(header):
        raise DatasetError(f'bad header {",".join(header)}; expected columns '
                           f'{",".join(_CSV_REQUIRED)} plus optional sequence, timestamp, '
                           'each once', path, header_line)
    has_ts = 'timestamp' in header
    per_seq: dict[str, list[tuple[float, int, Frame]]] = {}
    for n, row in rows:
        vals = _floats([row[c] for c in _CSV_REQUIRED[1:]], 7, 'x,y,z,qx,qy,qz,qw', path, n)
        R = _quat_xyzw_to_matrix(vals[3:7], path, n)
        T = _checked_pose(_pose_from(R, vals[:3]), path, n)
        if not row['image']:
            raise DatasetError('empty image field', path, n)
        img = _require_image(root / row['image'], path, n)
        seq = row.get('sequence', root.resolve().name)
        if not seq:
            raise DatasetError('empty sequence field', path, n)
        ts = float(_floats([row['timestamp']], 1, 'timestamp', path, n)[0]) if has_ts else None
        frame = Frame(name=_no_suffix(row['image']), image_path=img, pose_c2w=T,
                      sequence=seq, index=-1, timestamp=ts)
        per_seq.setdefault(seq, []).append((ts if has_ts else 0.0, n, frame))
    frames = []
    for seq, entries in per_seq.items():
        # File order is time order unless timestamps say otherwise.
        entries.sort(key=lambda e: (e[0], e[1]))
        for i, (_, _, f) in enumerate(entries):
            frames.append(Frame(name=f.name, image_path=f.image_path, pose_c2w=f.pose_c2w,
                                sequence=f.sequence, index=i, timestamp=f.timestamp))
    _require_frames(frames, path)
    return Dataset(root=root, format='csv', frames=frames,
                   intrinsics=_optional_k(root, frames))
