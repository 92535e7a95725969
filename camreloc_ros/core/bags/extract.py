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

"""Images of a bag as training frames, and the bag's images decoded in order (ROS-free).

:func:`extract_frames` writes the posed images of a bag once into the ``bag_frames`` cache
(keyed by the bag's content and the options) so the Trainer reads a bag like an image
folder; :func:`iter_images` and :func:`decoded_images` stream a bag's images to the
inference engine without holding them all in memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from camreloc_ros.core.bags.errors import BagDamage, BagDamagedError, BagError
from camreloc_ros.core.bags.groundtruth import BagScan, DEFAULT_TOLERANCE, scan_bag
from camreloc_ros.core.bags.reader import Bag, BagMessage, COMPRESSED, IMAGE, IMAGE_TYPES
from camreloc_ros.core.data.datasets import Frame
from camreloc_ros.core.data.images import COMPRESSED_SIGNATURES as SIGNATURES, \
    compressed_to_rgb, image_to_rgb
from camreloc_ros.core.geometry import matrix_from_pose
from camreloc_ros.core.io import (atomic_folder, atomic_write_text, cache_folder,
                                  clean_stale_temps, file_sha256)
from camreloc_ros.core.robot.messages import NS

EXTRACT_VERSION = 1


def decode_image(msgtype: str, msg: Any) -> np.ndarray:
    """Decode an Image (raw encodings, Bayer) or CompressedImage (JPEG, PNG) to RGB uint8.

    The live node's decoder (:mod:`camreloc_ros.core.data.images`), so a bag evaluated
    offline gives the pixels the node sees; OpenCV decodes JPEG exactly as
    :func:`camreloc_ros.core.data.transforms.read_rgb` does for files.
    """
    if msgtype == COMPRESSED:
        return compressed_to_rgb(msg)
    if msgtype != IMAGE:
        raise ValueError(f'{msgtype} is not an image type; expected {" or ".join(IMAGE_TYPES)}')
    return np.ascontiguousarray(image_to_rgb(msg))


def iter_images(bag: Bag, scan: BagScan, indices: Iterable[int] | None = None
                ) -> Iterator[tuple[int, BagMessage]]:
    """Second pass: ``(position in topic, raw message)`` of the wanted images, in bag order.

    Stops after the last wanted image, so a damaged bag is read only as far as the scan was.
    """
    wanted = sorted(set(range(len(scan)) if indices is None else indices))
    if not wanted:
        return
    want = set(wanted)
    last = wanted[-1]
    i = -1
    for msg in bag.messages([scan.image_topic]):
        i += 1
        if i in want:
            yield i, msg
        if i >= last:
            return
    raise BagError(f'{scan.image_topic} ended after {i + 1} images; the scan saw '
                   f'{len(scan)}', bag.path)


def decoded_images(bag: Bag, scan: BagScan, indices: Sequence[int],
                   on_error: Callable[[int, BagMessage, str], np.ndarray] | None = None
                   ) -> Iterator[np.ndarray]:
    """Decode the wanted images (``indices``, in bag order) to RGB, one at a time.

    Streams a bag into :meth:`InferenceEngine.predict_frames` (batch by batch, never all
    images in memory). An image that does not decode raises :class:`BagDamagedError`, or
    yields ``on_error(position, message, reason)`` (a stand-in whose prediction the caller
    drops).
    """
    order = list(indices)
    for k, (i, msg) in enumerate(iter_images(bag, scan, order)):
        if i != order[k]:
            raise ValueError(f'bag image {i} came where {order[k]} was expected; indices must '
                             'be in bag order without repeats')
        try:
            image = decode_image(msg.msgtype, bag.deserialize(msg))
        except ValueError as exc:
            reason = str(exc).split(f'{bag.path}: ', 1)[-1]
            if on_error is None:
                damage = BagDamage(bag.path, undecodable=[{
                    'topic': msg.topic, 'log_ns': int(msg.log_ns), 'index': i,
                    'reason': reason}])
                raise BagDamagedError(bag.path, damage) from None
            image = on_error(i, msg, reason)
        yield image


def default_extract_dir() -> Path:
    """``bag_frames`` below the cache root (:func:`camreloc_ros.core.io.cache_root`)."""
    return cache_folder('bag_frames')


def bag_digest(path: str | Path, memo: str | Path | None = None) -> str:
    """SHA-256 over the bag's files (metadata and storage), so any change re-extracts.

    ``memo`` (a JSON file) remembers digests by path, size and mtime, so an unchanged
    multi-gigabyte bag is not read again at every training start.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    stat = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    key = str(path.resolve())
    memo_path = Path(memo) if memo else None
    known = {}
    if memo_path is not None and memo_path.is_file():
        try:
            known = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            known = {}
        if known.get(key, {}).get('stat') == stat:
            return known[key]['digest']
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b'\0' + str(f.stat().st_size).encode() + b'\0')
        h.update(bytes.fromhex(file_sha256(f)))
    digest = h.hexdigest()
    if memo_path is not None:
        known[key] = {'stat': stat, 'digest': digest}
        atomic_write_text(memo_path, json.dumps(known))
    return digest


def _frames_from_index(root: Path, doc: dict) -> list[Frame]:
    return [Frame(name=e['name'], image_path=root / e['file'],
                  pose_c2w=np.asarray(e['pose'], np.float64).reshape(4, 4),
                  sequence=doc['sequence'], index=int(e['index']),
                  timestamp=int(e['stamp_ns']) / NS)
            for e in doc['frames']]


def extract_frames(path: str | Path, image_topic: str, gt_topic: str | None = None,
                   gt_tf: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
                   cache_dir: str | Path | None = None, allow_truncated: bool = False,
                   log: Callable[[str], None] | None = None) -> tuple[list[Frame], dict]:
    """Extract a bag's posed images as :class:`Frame` files, for the Trainer and its cache.

    Images with ground truth within ``tolerance`` are written once into
    ``cache_dir/<key>/`` (lossless PNG for raw images, the original bytes for JPEG/PNG
    CompressedImage), keyed by the bag's content and the options, so a second call reads the
    index and decodes nothing. ``Frame.index`` is the image's position in the topic (a
    dropped image leaves a gap, as for block splits and temporal windows), ``timestamp``
    its stamp, ``sequence`` the bag's name. Returns the frames and an info dict (counts).
    """
    path = Path(path)
    root = Path(cache_dir) if cache_dir else default_extract_dir()
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(root, log)
    spec = {'version': EXTRACT_VERSION, 'bag': bag_digest(path, root / 'digests.json'),
            'image_topic': image_topic,
            'gt_topic': gt_topic, 'gt_tf': gt_tf, 'tolerance': float(tolerance),
            'allow_truncated': bool(allow_truncated)}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    folder = root / key
    index = folder / 'frames.json'
    if index.is_file():
        doc = json.loads(index.read_text())
        return _frames_from_index(folder, doc), doc['info']
    with Bag(path) as bag:
        scan = scan_bag(bag, image_topic, gt_topic, gt_tf, tolerance, allow_truncated)
        keep = np.flatnonzero(scan.gt_ok).tolist()
        try:
            with atomic_folder(folder) as tmp:
                tmp.mkdir()
                entries = []
                names = scan.names(keep)
                for (i, msg), name in zip(iter_images(bag, scan, keep), names):
                    obj = bag.deserialize(msg)
                    file = _write_image(tmp, i, msg.msgtype, obj, bag.path)
                    pose = matrix_from_pose(scan.gt_pos[i], scan.gt_quat[i])
                    entries.append({'name': f'{path.name}/{name}', 'file': file, 'index': i,
                                    'stamp_ns': int(scan.stamps_ns[i]),
                                    'pose': pose.reshape(-1).tolist()})
                    if log and len(entries) % 200 == 0:
                        log(f'  extracting {path.name}: {len(entries)}/{len(keep)} images')
                info = {'bag': str(path), 'images': len(scan), 'frames': len(entries),
                        'outside_tolerance': scan.outside, 'tolerance': float(tolerance),
                        'ground_truth': scan.gt_source, 'messages_read': scan.messages_read,
                        'truncated': str(scan.truncated) if scan.truncated else None}
                doc = {'spec': spec, 'sequence': path.name, 'info': info, 'frames': entries}
                (tmp / 'frames.json').write_text(json.dumps(doc))
        except OSError:
            if not index.is_file():    # not another process that finished first
                raise
    return _frames_from_index(folder, doc), info


def _write_image(folder: Path, i: int, msgtype: str, obj: Any, path: Path) -> str:
    if msgtype == COMPRESSED:
        data = np.asarray(obj.data, np.uint8).tobytes()
        ext = next((e for e, s in (('jpg', SIGNATURES['jpeg']), ('png', SIGNATURES['png']))
                    if data.startswith(s)), None)
        if ext is None:
            raise BagError(f'compressed image #{i} (format {obj.format!r}) is neither JPEG '
                           'nor PNG data', path)
        name = f'{i:06d}.{ext}'
        (folder / name).write_bytes(data)
        return name
    try:
        rgb = decode_image(msgtype, obj)
    except ValueError as exc:
        raise BagError(f'image #{i}: {exc}', path) from None
    name = f'{i:06d}.png'
    if not cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {folder / name}')
    return name
