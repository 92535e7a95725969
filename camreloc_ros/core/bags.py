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

"""Rosbag2 files without ROS: images and ground truth in, predictions out (ROS-free).

rosbag2_py is not on PyPI, so bags are read and written with ``rosbags`` (pure Python,
sqlite3 and mcap storage). Messages are (de)serialised with rosbags' typestore of a ROS 2
distribution (kilted, or the newest one this rosbags knows), so type names and type hashes
match a robot's and the files open in ``ros2 bag``, RViz and Foxglove.

Why the care with time: ground truth and images are recorded by different nodes at different
rates, so the pose of an image is interpolated at the image's header stamp (linear position,
slerp rotation) and only when ground truth lies close enough on both sides (or one sample is
within the tolerance). Images without one are counted and reported, never dropped silently.
A recording cut short (power loss, full disk) leaves an mcap without footer or a damaged
sqlite file; such bags are read linearly as far as they go, and the error that follows names
the file and how many messages were read, with what was read kept on the exception.

Bit-rot is not silent: mcap chunk, data-section and summary CRCs are checked (the bags written
here carry them; rosbags' writer leaves them at 0), and messages that do not decode are
counted. A damaged bag is an error unless the caller allows it; then the damaged chunks are
skipped and :class:`BagDamage` says what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import functools
import hashlib
import json
import math
import os
from pathlib import Path
import shutil
import sqlite3
import struct
import tempfile
from typing import Any, Callable, Iterable, Iterator, Sequence
import zlib

import cv2
import numpy as np

from camreloc_ros.core.data.datasets import Frame
from camreloc_ros.core.data.images import COMPRESSED_SIGNATURES as SIGNATURES, \
    compressed_to_rgb, image_to_rgb
from camreloc_ros.core.geometry import (interpolate_pose, matrix_from_pose, pose_compose,
                                        pose_invert, quat_normalize)

STORAGES = ('mcap', 'sqlite3')
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE, COMPRESSED)
POSE_TYPES = ('geometry_msgs/msg/PoseStamped', 'geometry_msgs/msg/PoseWithCovarianceStamped',
              'nav_msgs/msg/Odometry', 'geometry_msgs/msg/TransformStamped')
TF_TYPE = 'tf2_msgs/msg/TFMessage'
TF_TOPICS = ('/tf', '/tf_static')
DEFAULT_TOLERANCE = 0.05
# A ground-truth quaternion further than this from unit length is broken data, not rounding.
QUAT_NORM_TOL = 1e-2
EXTRACT_VERSION = 1
NS = 1_000_000_000
MCAP_MAGIC = b'\x89MCAP0\r\n'
# Files a rosbag2 folder holds; --overwrite replaces only folders with nothing else in them.
BAG_FOLDER_SUFFIXES = ('.mcap', '.db3', '.db3-wal', '.db3-shm', '.db3-journal', '.zstd')


__all__ = [
    'BagError', 'BagCorruptError', 'BagDamagedError', 'BagDamage', 'Bag', 'BagMessage',
    'TopicInfo', 'BagWriter',
    'Trajectory', 'TfTree', 'BagScan', 'typestore', 'scan_bag', 'iter_images',
    'sequential_loaders', 'extract_frames', 'parse_tf_pair', 'header_stamp_ns',
    'decode_image', 'default_extract_dir', 'bag_digest', 'Messages',
    'rosbag_folder_problem',
]


# ----------------------------------------------------------------------------- errors

class BagError(ValueError):
    """A bag that cannot be used as asked; the message names the bag and what was expected."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(f'{path}: {message}' if path is not None else message)
        self.path = None if path is None else Path(path)


class BagCorruptError(BagError):
    """A truncated or damaged bag: ``messages_read`` came out before the damage.

    ``partial`` holds what the caller built from those messages (e.g. a :class:`BagScan`),
    so nothing already read is lost.
    """

    def __init__(self, path: str | Path, messages_read: int, reason: str,
                 partial: Any = None):
        super().__init__(f'bag is truncated or corrupt ({reason}); {messages_read} messages '
                         'were read before the damage. A bag cut short by a crash can often be '
                         'repaired with `ros2 bag reindex`', path)
        self.messages_read = messages_read
        self.reason = reason
        self.partial = partial


def _seconds(ns: int) -> str:
    return f'{int(ns) / NS:.3f}'


@dataclass
class BagDamage:
    """What the checks of a bag found damaged; empty (falsy) for an intact bag.

    ``chunks``: mcap chunks that failed their CRC or do not parse (their messages are
    skipped); ``notes``: CRC mismatches outside the chunks (data section, summary);
    ``undecodable``: messages whose CDR or image data did not decode (skipped).
    """

    path: Path
    chunks: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    undecodable: list[dict] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.chunks or self.notes or self.undecodable)

    def skipped_messages(self) -> dict[str, int]:
        """Messages left out by topic (those of damaged chunks, where their index says)."""
        counts: dict[str, int] = {}
        for c in self.chunks:
            for topic, n in c['messages'].items():
                counts[topic] = counts.get(topic, 0) + n
        for u in self.undecodable:
            counts[u['topic']] = counts.get(u['topic'], 0) + 1
        return counts

    def lines(self, limit: int = 10) -> list[str]:
        """One line per finding (at most ``limit`` of each kind), for reports."""
        out = []
        for c in self.chunks[:limit]:
            msgs = ', '.join(f'{t} {n}' for t, n in sorted(c['messages'].items()))
            span = f'bytes {c["byte_offset"]}-{c["byte_offset"] + c["bytes"]}'
            if c['chunk'] is None:
                out.append(f'{span} of {c["file"]}: {c["reason"]}; messages skipped: unknown')
                continue
            out.append(f'chunk {c["chunk"]} of {c["file"]} ({span}, log time '
                       f'{_seconds(c["log_start_ns"])}-{_seconds(c["log_end_ns"])} s): '
                       f'{c["reason"]}; messages skipped: {msgs or "unknown (no message index)"}')
        if len(self.chunks) > limit:
            out.append(f'... and {len(self.chunks) - limit} more damaged chunks')
        out += self.notes
        for u in self.undecodable[:limit]:
            where = f' image #{u["index"]}' if u.get('index') is not None else ''
            out.append(f'undecodable message on {u["topic"]}{where} at log time '
                       f'{_seconds(u["log_ns"])} s: {u["reason"]}')
        if len(self.undecodable) > limit:
            out.append(f'... and {len(self.undecodable) - limit} more undecodable messages')
        return out

    def describe(self) -> str:
        """Return the findings in one paragraph, for error messages."""
        return '; '.join(self.lines(3))

    def as_dict(self) -> dict:
        """JSON-able findings (for bag_eval.json and summary.json)."""
        return {'bag': str(self.path), 'damaged_chunks': self.chunks, 'crc_mismatches': self.notes,
                'undecodable_messages': self.undecodable,
                'skipped_messages': self.skipped_messages()}


class BagDamagedError(BagError):
    """Bit-rot or undecodable messages in a bag; ``damage`` (:class:`BagDamage`) says where."""

    def __init__(self, path: str | Path, damage: BagDamage):
        super().__init__(f'bag is damaged: {damage.describe()}. bag-eval --allow-damaged '
                         'evaluates the intact part (and reports what it skips)', path)
        self.damage = damage


# ----------------------------------------------------------------------------- typestore

@functools.lru_cache(maxsize=1)
def typestore():
    """Return the ROS 2 typestore: kilted if rosbags knows it, else its newest ROS 2 one."""
    from rosbags.typesys import get_typestore, Stores
    names = [s for s in Stores.__members__ if s.startswith('ROS2_')]
    name = 'ROS2_KILTED' if 'ROS2_KILTED' in names else names[-1]
    return get_typestore(Stores[name])


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: name, ROS 2 type (``pkg/msg/Name``), message count, QoS."""

    name: str
    msgtype: str
    count: int
    qos: tuple = ()


@dataclass(frozen=True)
class BagMessage:
    """One serialised message: topic, type, receive (log) time in ns, raw CDR bytes."""

    topic: str
    msgtype: str
    log_ns: int
    data: bytes


def _storage_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in ('.mcap', '.db3'))


class Bag:
    """A rosbag2 (folder, or a single ``.mcap`` / ``.db3`` file) opened for reading.

    Opens with rosbags' reader; a file that reader refuses (no mcap footer, a damaged sqlite
    file) is read linearly instead, and iterating it ends with :class:`BagCorruptError`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f'bag {self.path} does not exist')
        self._reader = None
        self._salvage: str | None = None   # why rosbags' reader could not open the bag
        self._topics: dict[str, TopicInfo] | None = None
        self._damage: BagDamage | None = None    # set by verify()
        self._linear = False    # read front to back, skipping damaged chunks (after verify)
        from rosbags.rosbag2 import Reader
        target = self.path
        if self.path.is_dir() and not (self.path / 'metadata.yaml').exists():
            files = _storage_files(self.path)
            if len(files) != 1:
                raise BagError('not a rosbag2: no metadata.yaml and '
                               f'{len(files)} .mcap/.db3 files (expected one)', self.path)
            target = files[0]
        elif self.path.is_file() and self.path.suffix not in ('.mcap', '.db3'):
            raise BagError('not a rosbag2: expected a folder with metadata.yaml, '
                           'an .mcap or a .db3 file', self.path)
        self._files = _storage_files(target if target.is_file() else self.path)
        try:
            reader = Reader(target)
            reader.open()
            self._reader = reader
        except (FileNotFoundError, PermissionError):
            raise
        except Exception as exc:  # noqa: BLE001 - every storage error means "damaged"
            self._salvage = str(exc) or type(exc).__name__
            if not self._files:
                raise BagError(f'cannot open ({self._salvage}) and no .mcap/.db3 file '
                               'to read', self.path) from None

    def close(self) -> None:
        """Release the storage files."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> 'Bag':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def damaged(self) -> str | None:
        """Why the regular reader refused this bag (None for an intact bag)."""
        return self._salvage

    def verify(self) -> BagDamage:
        """Check the mcap CRCs (chunks, data section, summary) and chunk structure.

        Reads every mcap file once. After a finding, :meth:`messages` reads the files front
        to back and skips the damaged chunks (rosbags' reader would stop at the first). A cut
        end is not damage here: reading reports it (:class:`BagCorruptError`). Sqlite3 has
        no checksums: only undecodable messages, found while reading, show its damage.
        """
        if self._damage is None:
            damage = BagDamage(self.path)
            for path in self._files:
                if path.suffix == '.mcap':
                    _mcap_verify(path, damage)
            self._damage = damage
            self._linear = bool(damage.chunks or damage.notes)
        return self._damage

    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Topics by name (for a damaged bag: the readable part, counted by a scan)."""
        if self._topics is None:
            if self._reader is not None:
                self._topics = {}
                for conn in self._reader.connections:
                    old = self._topics.get(conn.topic)
                    qos = tuple(getattr(conn.ext, 'offered_qos_profiles', ()) or ())
                    count = conn.msgcount + (old.count if old else 0)
                    self._topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count, qos)
            else:
                counts: dict[tuple[str, str], int] = {}
                try:
                    for topic, msgtype, _, _ in self._salvaged(None):
                        counts[(topic, msgtype)] = counts.get((topic, msgtype), 0) + 1
                except _Truncated:
                    pass
                self._topics = {t: TopicInfo(t, m, n) for (t, m), n in counts.items()}
        return self._topics

    def describe_topics(self) -> str:
        """One line per topic, for error messages: ``/name (type, N msgs)``."""
        if not self.topics:
            return '(no topics)'
        return ', '.join(f'{t.name} ({t.msgtype}, {t.count} msgs)'
                         for t in sorted(self.topics.values(), key=lambda t: t.name))

    def require(self, topic: str, types: Sequence[str], option: str) -> TopicInfo:
        """Return the topic's info, or raise listing the bag's topics / the accepted types."""
        info = self.topics.get(topic)
        if info is None:
            raise BagError(f'{option} {topic!r} is not in the bag; its topics are: '
                           f'{self.describe_topics()}', self.path)
        if info.msgtype not in types:
            raise BagError(f'{option} {topic!r} has type {info.msgtype}; expected '
                           f'{" or ".join(types)}', self.path)
        return info

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) in storage order.

        Raises :class:`BagCorruptError` after the last readable message of a damaged bag.
        """
        wanted = None if topics is None else set(topics)
        count = 0
        if self._reader is None or self._linear:
            try:
                for topic, msgtype, log_ns, data in self._salvaged(wanted):
                    count += 1
                    yield BagMessage(topic, msgtype, log_ns, data)
            except _Truncated as exc:
                reason = f'{self._salvage}; {exc}' if self._salvage else str(exc)
                raise BagCorruptError(self.path, count, reason) from None
            if self._reader is None:
                raise BagCorruptError(self.path, count, self._salvage)
            return
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        try:
            for conn, log_ns, data in self._reader.messages(connections=conns):
                count += 1
                yield BagMessage(conn.topic, conn.msgtype, int(log_ns), bytes(data))
        except (FileNotFoundError, PermissionError):
            raise
        except Exception as exc:  # noqa: BLE001 - any storage error means "damaged here"
            raise BagCorruptError(self.path, count, str(exc) or type(exc).__name__) from None

    def deserialize(self, msg: BagMessage) -> Any:
        """Return the message as a rosbags object (fields as in ROS: ``header.stamp.sec``)."""
        try:
            return typestore().deserialize_cdr(msg.data, msg.msgtype)
        except Exception as exc:  # noqa: BLE001 - bad bytes or an unknown type
            raise BagError(f'cannot deserialise a {msg.msgtype} message on {msg.topic} at '
                           f'{msg.log_ns} ns ({exc})', self.path) from None

    def _salvaged(self, wanted: set | None) -> Iterator[tuple[str, str, int, bytes]]:
        expected = None
        meta = self.path / 'metadata.yaml'
        if len(self._files) == 1 and meta.is_file():
            try:
                import yaml
                expected = int(yaml.safe_load(meta.read_text())
                               ['rosbag2_bagfile_information']['message_count'])
            except Exception:  # noqa: BLE001 - a damaged metadata file: probe instead
                expected = None
        for path in self._files:
            if path.suffix == '.mcap':
                rows = _mcap_records(path, skip_damaged=self._linear)
            else:
                rows = _sqlite_rows(path, expected)
            for topic, msgtype, log_ns, data in rows:
                if wanted is None or topic in wanted:
                    yield topic, msgtype, log_ns, data


class _Truncated(Exception):
    """The linear reader hit the end of the readable data early."""


def _mcap_string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from('<I', buf, pos)
    return buf[pos + 4:pos + 4 + n].decode('utf-8'), pos + 4 + n


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == '':
        return data
    if compression == 'lz4':
        import lz4.frame
        return lz4.frame.decompress(data)
    if compression == 'zstd':
        try:
            from compression import zstd
        except ImportError:
            from backports import zstd
        return zstd.decompress(data)
    raise _Truncated(f'unsupported mcap chunk compression {compression!r}')


class _BadChunk(Exception):
    """A chunk whose CRC, size or records are wrong."""


def _chunk_data(body: bytes) -> tuple[int, int, int, bytes]:
    """``(start ns, end ns, stored CRC, uncompressed records)`` of a chunk record body."""
    try:
        start, end, size, crc = struct.unpack_from('<QQQI', body, 0)
        compression, p = _mcap_string(body, 28)
        (clen,) = struct.unpack_from('<Q', body, p)
    except (struct.error, UnicodeDecodeError):
        raise _BadChunk('chunk header does not parse') from None
    if p + 8 + clen > len(body):
        raise _BadChunk('compressed data runs past the chunk record')
    try:
        data = _decompress(body[p + 8:p + 8 + clen], compression, size)
    except _Truncated as exc:
        raise _BadChunk(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - lz4/zstd raise their own errors
        raise _BadChunk(f'{compression} data does not decompress ({exc})') from None
    if len(data) != size:
        raise _BadChunk(f'{len(data)} bytes uncompressed, the header says {size}')
    return start, end, crc, data


def _chunk_records(body: bytes) -> Iterator[tuple[int, bytes]]:
    """Return the records of a chunk, its CRC checked (when stored) and lengths in bounds."""
    _, _, crc, data = _chunk_data(body)
    if crc and zlib.crc32(data) != crc:
        raise _BadChunk(f'CRC mismatch (stored {crc:08x}, computed {zlib.crc32(data):08x})')
    records, pos = [], 0
    while pos < len(data):
        if pos + 9 > len(data):
            raise _BadChunk(f'record header cut at byte {pos} of the chunk')
        (inner_len,) = struct.unpack_from('<Q', data, pos + 1)
        if pos + 9 + inner_len > len(data):
            raise _BadChunk(f'record at byte {pos} of the chunk runs past its end')
        records.append((data[pos], data[pos + 9:pos + 9 + inner_len]))
        pos += 9 + inner_len
    return iter(records)


def _mcap_walk(f, size: int, resync: Sequence[int] = ()
               ) -> Iterator[tuple[int, int, bytes, bytes | None]]:
    """``(offset, opcode, header, body)`` of the records of the data section, in file order.

    A record whose opcode or length is impossible is a cut (:class:`_Truncated`), unless
    ``resync`` (chunk offsets from an intact summary) lists a chunk after it: then
    ``(offset, -1, b'', None)`` marks the unreadable gap and the walk goes on there.
    Ends after DataEnd (or the Footer of a file without one).
    """
    pos = 8
    while True:
        f.seek(pos)
        head = f.read(9)
        if len(head) < 9:
            raise _Truncated(f'record header cut at byte {pos}'
                             if head else 'the file ends without its summary and footer')
        op = head[0]
        (length,) = struct.unpack_from('<Q', head, 1)
        if op == 0 or 0x10 <= op < 0x80 or pos + 9 + length > size:
            nxt = next((o for o in sorted(resync) if o > pos), None)
            if nxt is None:
                raise _Truncated(f'record of {length} bytes cut at byte {pos}')
            yield pos, -1, b'', None
            pos = nxt
            continue
        body = f.read(length)
        yield pos, op, head, body
        if op in (0x0F, 0x02):    # data end, footer: the data section is complete
            return
        pos += 9 + length


def _mcap_footer(f, size: int) -> tuple[int, int, int] | None:
    """``(footer offset, summary start, summary CRC)`` of a complete mcap, else None."""
    if size < 8 + 9 + 20 + 8:
        return None
    f.seek(size - 37)
    tail = f.read(37)
    if tail[-8:] != MCAP_MAGIC or tail[0] != 0x02 or struct.unpack_from('<Q', tail, 1)[0] != 20:
        return None
    start, _, crc = struct.unpack_from('<QQI', tail, 9)
    return size - 37, start, crc


def _mcap_summary(f, footer: tuple[int, int, int], damage: BagDamage | None, path: Path
                  ) -> tuple[dict[int, str], list[int]]:
    """Channel topics and chunk offsets from the summary (none if its CRC fails)."""
    foot, start, crc = footer
    if not start or start > foot:
        return {}, []
    f.seek(start)
    data = f.read(foot + 25 - start)     # the summary CRC covers the footer up to itself
    if crc and zlib.crc32(data) != crc:
        if damage is not None:
            damage.notes.append(f'{path.name}: summary section CRC mismatch (stored {crc:08x}, '
                                f'computed {zlib.crc32(data):08x}); its index is not used')
        return {}, []
    topics, chunks, pos = {}, [], 0
    try:
        while pos + 9 <= foot - start:
            op = data[pos]
            (length,) = struct.unpack_from('<Q', data, pos + 1)
            body = data[pos + 9:pos + 9 + length]
            if op == 0x04:
                cid, _ = struct.unpack_from('<HH', body, 0)
                topics[cid], _ = _mcap_string(body, 4)
            elif op == 0x08:
                chunks.append(struct.unpack_from('<Q', body, 16)[0])
            pos += 9 + length
    except (struct.error, UnicodeDecodeError):
        pass
    return topics, chunks


def _mcap_resync(f, size: int, damage: BagDamage | None, path: Path
                 ) -> tuple[dict[int, str], list[int]]:
    """Channel topics and the offsets where a walk may resume after unreadable bytes.

    The chunks listed by an intact summary, and the DataEnd record of a complete file.
    """
    footer = _mcap_footer(f, size)
    if footer is None:
        return {}, []
    topics, offsets = _mcap_summary(f, footer, damage, path)
    end = (footer[1] or footer[0]) - 13
    f.seek(end)
    if end > 8 and f.read(9) == b'\x0f' + struct.pack('<Q', 4):
        offsets.append(end)
    return topics, offsets


def _mcap_verify(path: Path, damage: BagDamage) -> None:
    """Add the damaged chunks and CRC mismatches of one mcap file to ``damage``."""
    size = path.stat().st_size
    with open(path, 'rb') as f:
        magic = f.read(8)
        if magic != MCAP_MAGIC:
            return     # reading reports a file that is no mcap
        topics, resync = _mcap_resync(f, size, damage, path)
        crc, gap, index, last_bad = zlib.crc32(magic), False, -1, None
        try:
            for offset, op, head, body in _mcap_walk(f, size, resync):
                if op == -1:
                    gap = True
                    damage.chunks.append({
                        'file': path.name, 'chunk': None, 'byte_offset': offset,
                        'bytes': next(o for o in sorted(resync) if o > offset) - offset,
                        'log_start_ns': 0, 'log_end_ns': 0, 'messages': {},
                        'reason': 'unreadable record structure (skipped to the next '
                                  'readable record)'})
                    continue
                if op == 0x0F:
                    (stored,) = struct.unpack_from('<I', body, 0) if len(body) >= 4 else (0,)
                    if stored and not gap and stored != crc:
                        damage.notes.append(f'{path.name}: data section CRC mismatch (stored '
                                            f'{stored:08x}, computed {crc:08x})')
                    break
                crc = zlib.crc32(body, zlib.crc32(head, crc))
                if op == 0x04:
                    cid, _ = struct.unpack_from('<HH', body, 0)
                    topics.setdefault(cid, _mcap_string(body, 4)[0])
                elif op == 0x06:
                    index += 1
                    last_bad = None
                    try:
                        for inner_op, inner in _chunk_records(body):
                            if inner_op == 0x04:
                                cid, _ = struct.unpack_from('<HH', inner, 0)
                                topics.setdefault(cid, _mcap_string(inner, 4)[0])
                    except _BadChunk as exc:
                        start, end = struct.unpack_from('<QQ', body, 0) if len(body) >= 16 \
                            else (0, 0)
                        last_bad = {'file': path.name, 'chunk': index, 'byte_offset': offset,
                                    'bytes': 9 + len(body), 'log_start_ns': int(start),
                                    'log_end_ns': int(end), 'messages': {},
                                    'reason': str(exc)}
                        damage.chunks.append(last_bad)
                elif op == 0x07 and last_bad is not None and len(body) >= 6:
                    # the message index after a chunk: how many messages it held, by channel
                    cid, nbytes = struct.unpack_from('<HI', body, 0)
                    last_bad['messages'][cid] = nbytes // 16
        except _Truncated:
            pass       # a cut end: Bag.messages reports it as truncated
    for c in damage.chunks:
        if c['file'] == path.name:
            c['messages'] = {topics.get(k, f'channel {k}') if isinstance(k, int) else k: n
                             for k, n in c['messages'].items()}


def _mcap_records(path: Path, skip_damaged: bool = False
                  ) -> Iterator[tuple[str, str, int, bytes]]:
    """Messages of an mcap file read front to back (no footer or index needed).

    Streams record by record (a chunk at most in memory), so a large damaged file is fine.
    A damaged chunk (:func:`_mcap_verify` finds the same ones) ends the read as a cut, or is
    skipped with ``skip_damaged``.
    """
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}

    def record(op: int, body: bytes) -> Iterator[tuple[str, str, int, bytes]]:
        if op == 0x03:      # schema: id, name, encoding, data
            (sid,) = struct.unpack_from('<H', body, 0)
            schemas[sid], _ = _mcap_string(body, 2)
        elif op == 0x04:    # channel: id, schema id, topic, encoding, metadata
            cid, sid = struct.unpack_from('<HH', body, 0)
            topic, _ = _mcap_string(body, 4)
            channels[cid] = (topic, schemas.get(sid, ''))
        elif op == 0x05:    # message: channel, sequence, log time, publish time, data
            cid, _, log_ns, _ = struct.unpack_from('<HIQQ', body, 0)
            if cid in channels:
                topic, msgtype = channels[cid]
                yield topic, msgtype, int(log_ns), bytes(body[22:])

    size = path.stat().st_size
    with open(path, 'rb') as f:
        if f.read(8) != MCAP_MAGIC:
            raise _Truncated('no mcap magic at the start of the file')
        resync: list[int] = []
        if skip_damaged:
            _, resync = _mcap_resync(f, size, None, path)
            footer = _mcap_footer(f, size)
            if footer:
                # the summary repeats schemas and channels: known even if their chunk is lost
                for op, body in _summary_records(f, footer):
                    yield from record(op, body)
        for offset, op, _, body in _mcap_walk(f, size, resync):
            if op in (-1, 0x0F, 0x02):
                continue
            if op != 0x06:
                yield from record(op, body)
                continue
            try:
                inner = list(_chunk_records(body))
            except _BadChunk as exc:
                if skip_damaged:
                    continue
                raise _Truncated(f'damaged chunk at byte {offset}: {exc}') from None
            for inner_op, inner_body in inner:
                yield from record(inner_op, inner_body)


def _summary_records(f, footer: tuple[int, int, int]) -> list[tuple[int, bytes]]:
    """Return the schema and channel records of the summary section."""
    foot, start, _ = footer
    if not start or start > foot:
        return []
    f.seek(start)
    data = f.read(foot - start)
    out, pos = [], 0
    while pos + 9 <= len(data):
        op = data[pos]
        (length,) = struct.unpack_from('<Q', data, pos + 1)
        if op in (0x03, 0x04):
            out.append((op, data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return out


def _mcap_write_crcs(path: Path) -> None:
    """Fill in the chunk, data-section and summary CRCs that rosbags' writer leaves at 0.

    So bit-rot in a bag written here is found when it is read (by this module, rosbags,
    the mcap tools and ``ros2 bag``). CRCs already stored are kept.
    """
    size = path.stat().st_size
    with open(path, 'r+b') as f:
        crc = zlib.crc32(f.read(8))
        for offset, op, head, body in _mcap_walk(f, size):
            if op == 0x0F:
                if struct.unpack_from('<I', body, 0)[0] == 0:
                    f.seek(offset + 9)
                    f.write(struct.pack('<I', crc))
                break
            if op == 0x06 and struct.unpack_from('<I', body, 24)[0] == 0:
                _, _, _, data = _chunk_data(body)
                patch = struct.pack('<I', zlib.crc32(data))
                body = body[:24] + patch + body[28:]
                f.seek(offset + 9 + 24)
                f.write(patch)
            crc = zlib.crc32(body, zlib.crc32(head, crc))
        footer = _mcap_footer(f, size)
        if footer and footer[1] and footer[2] == 0:
            foot, start, _ = footer
            f.seek(start)
            summary = f.read(foot + 25 - start)
            f.seek(foot + 25)
            f.write(struct.pack('<I', zlib.crc32(summary)))


def _sqlite_rows(path: Path, expected: int | None = None
                 ) -> Iterator[tuple[str, str, int, bytes]]:
    """Messages of a rosbag2 sqlite3 file in insertion order, as far as they are readable.

    A truncated file's header claims more pages than there are; ``writable_schema`` makes
    SQLite use the pages present. B-tree pages move when they split, so a missing page can
    hide rows anywhere: after the first error every row id is tried on its own, up to
    ``expected`` (metadata.yaml's count) or 256 misses in a row.
    """
    try:
        con = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
        con.execute('PRAGMA writable_schema=ON')
        topics = {tid: (name, typ) for tid, name, typ in
                  con.execute('SELECT id, name, type FROM topics')}
    except sqlite3.Error as exc:
        raise _Truncated(f'sqlite: {exc}') from None
    query = 'SELECT id, topic_id, timestamp, data FROM messages '
    last, failed, error = 0, 0, None
    try:
        try:
            while True:   # fast path: batches in id order
                rows = con.execute(query + 'WHERE id > ? ORDER BY id LIMIT 64',
                                   (last,)).fetchall()
                if not rows:
                    return
                for mid, tid, stamp, data in rows:
                    last = mid
                    if tid in topics:
                        yield topics[tid][0], topics[tid][1], int(stamp), bytes(data)
        except sqlite3.Error as exc:
            error = exc
        mid, misses = last, 0
        while (mid < expected) if expected else (misses < 256):
            mid += 1
            try:
                row = con.execute(query + 'WHERE id = ?', (mid,)).fetchone()
            except sqlite3.Error:
                row = None
            if row is None:
                misses += 1
                failed += 1
                continue
            misses = 0
            if row[1] in topics:
                yield topics[row[1]][0], topics[row[1]][1], int(row[2]), bytes(row[3])
        if expected is None:
            failed -= misses
        raise _Truncated(f'sqlite: {error}; {failed} rows unreadable')
    finally:
        con.close()


# ----------------------------------------------------------------------------- messages

def header_stamp_ns(data: bytes) -> int:
    """Header stamp (ns) of a serialised message whose first field is a std_msgs/Header.

    Read from the CDR bytes directly, so an image's stamp costs nothing to get.
    """
    if len(data) < 12:
        raise ValueError(f'message of {len(data)} bytes is too short for a header')
    order = '<' if data[1] & 1 else '>'
    sec, nsec = struct.unpack_from(order + 'iI', data, 4)
    return sec * NS + nsec


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


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


def _pose_of(msgtype: str, msg: Any) -> tuple[np.ndarray, np.ndarray]:
    if msgtype == 'geometry_msgs/msg/PoseStamped':
        p, q = msg.pose.position, msg.pose.orientation
    elif msgtype == 'geometry_msgs/msg/TransformStamped':
        p, q = msg.transform.translation, msg.transform.rotation
    else:   # PoseWithCovarianceStamped, Odometry
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return (np.array([p.x, p.y, p.z], np.float64), np.array([q.x, q.y, q.z, q.w], np.float64))


def _checked_quat(q: np.ndarray, where: str, path: Path) -> np.ndarray:
    norm = float(np.linalg.norm(q))
    if not (math.isfinite(norm) and abs(norm - 1.0) <= QUAT_NORM_TOL):
        raise BagError(f'{where}: quaternion {q.tolist()} has norm {norm:.6g}; expected a '
                       'unit quaternion', path)
    return q / norm


# ----------------------------------------------------------------------------- ground truth

class Trajectory:
    """Time-sorted poses of one frame pair; :meth:`at` interpolates within a tolerance."""

    def __init__(self, stamps_ns: Sequence[int], positions: np.ndarray,
                 quaternions: np.ndarray):
        stamps = np.asarray(stamps_ns, np.int64)
        pos = np.asarray(positions, np.float64).reshape(-1, 3)
        quat = np.asarray(quaternions, np.float64).reshape(-1, 4)
        if not len(stamps) == len(pos) == len(quat):
            raise ValueError(f'{len(stamps)} stamps, {len(pos)} positions and {len(quat)} '
                             'quaternions; expected one of each per sample')
        order = np.argsort(stamps, kind='stable')
        stamps, pos, quat = stamps[order], pos[order], quat[order]
        keep = np.r_[stamps[1:] != stamps[:-1], True][:len(stamps)]   # repeated: the last wins
        self.stamps_ns, self.positions, self.quaternions = stamps[keep], pos[keep], quat[keep]

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def at(self, times_ns: Sequence[int], tolerance_s: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pose at each time: ``(positions (M, 3), quaternions (M, 4), ok (M,))``.

        A time between two samples each no further than ``tolerance_s`` is interpolated
        (linear + slerp); otherwise a sample within ``tolerance_s`` is used as it is; else
        ``ok`` is False and the pose is NaN.
        """
        t = np.asarray(times_ns, np.int64).reshape(-1)
        m = len(t)
        pos = np.full((m, 3), np.nan)
        quat = np.full((m, 4), np.nan)
        ok = np.zeros(m, bool)
        n = len(self.stamps_ns)
        if n == 0 or m == 0:
            return pos, quat, ok
        tol = int(round(float(tolerance_s) * NS))
        hi = np.searchsorted(self.stamps_ns, t, side='left')     # first sample >= t
        lo = hi - 1                                             # last sample < t
        has_lo, has_hi = lo >= 0, hi < n
        d_lo = np.where(has_lo, t - self.stamps_ns[np.clip(lo, 0, n - 1)], np.iinfo(np.int64).max)
        d_hi = np.where(has_hi, self.stamps_ns[np.clip(hi, 0, n - 1)] - t, np.iinfo(np.int64).max)
        lo_ok, hi_ok = d_lo <= tol, d_hi <= tol
        exact = has_hi & (d_hi == 0)
        both = lo_ok & hi_ok & ~exact
        only_hi = hi_ok & ~both
        only_lo = lo_ok & ~hi_ok
        for sel, idx in ((only_hi, hi), (only_lo, lo)):
            pos[sel] = self.positions[idx[sel]]
            quat[sel] = quat_normalize(self.quaternions[idx[sel]]) if sel.any() else quat[sel]
        if both.any():
            i0, i1 = lo[both], hi[both]
            alpha = d_lo[both] / (d_lo[both] + d_hi[both]).astype(np.float64)
            pos[both], quat[both] = interpolate_pose(
                self.positions[i0], self.quaternions[i0], self.positions[i1],
                self.quaternions[i1], alpha)
        ok = both | only_hi | only_lo
        return pos, quat, ok


def parse_tf_pair(text: str) -> tuple[str, str]:
    """``'map:camera'`` -> ``('map', 'camera')`` (leading slashes dropped, as tf2 does)."""
    parts = str(text).split(':')
    if len(parts) != 2 or not all(p.strip().strip('/') for p in parts):
        raise ValueError(f'--gt-tf expects PARENT:CHILD (e.g. map:camera), got {text!r}')
    return parts[0].strip().strip('/'), parts[1].strip().strip('/')


@dataclass
class _Edge:
    parent: str
    static: bool = False
    stamps: list = field(default_factory=list)
    positions: list = field(default_factory=list)
    quaternions: list = field(default_factory=list)
    _traj: Trajectory | None = None

    def trajectory(self) -> Trajectory:
        if self._traj is None:
            self._traj = Trajectory(self.stamps, np.array(self.positions),
                                    np.array(self.quaternions))
        return self._traj


class TfTree:
    """Transforms of /tf and /tf_static; looks up any frame pair through the tree."""

    def __init__(self) -> None:
        self._edges: dict[str, _Edge] = {}

    def add(self, parent: str, child: str, stamp_ns: int, position: np.ndarray,
            quaternion: np.ndarray, static: bool) -> None:
        """Add one transform ``parent -> child`` (the child's pose in the parent)."""
        parent, child = parent.strip('/'), child.strip('/')
        edge = self._edges.get(child)
        if edge is None:
            edge = self._edges[child] = _Edge(parent)
        elif edge.parent != parent:
            raise ValueError(f'frame {child!r} has two parents in the bag, {edge.parent!r} '
                             f'and {parent!r}; a TF tree allows one')
        if static and not edge.static:
            edge.static = True
            edge.stamps, edge.positions, edge.quaternions = [], [], []
        elif edge.static and not static:
            return
        edge._traj = None
        edge.stamps.append(0 if static else int(stamp_ns))
        edge.positions.append(position)
        edge.quaternions.append(quaternion)

    @property
    def frames(self) -> set[str]:
        """Every frame named in the tree."""
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def describe(self) -> str:
        """``parent -> child`` for every edge, for error messages."""
        return ', '.join(f'{e.parent} -> {c}{" (static)" if e.static else ""}'
                         for c, e in sorted(self._edges.items())) or '(no transforms)'

    def _up(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > len(self._edges) + 1:
                raise ValueError(f'the TF tree has a loop through {frame!r}')
        return chain

    def chain(self, parent: str, child: str) -> tuple[list[str], list[str]]:
        """Frames from ``child`` and from ``parent`` up to their common ancestor (inclusive)."""
        for frame in (parent, child):
            if frame not in self.frames:
                raise ValueError(f'frame {frame!r} is not in the TF tree of the bag; it has '
                                 f'{self.describe()}')
        up_child, up_parent = self._up(child), self._up(parent)
        common = next((f for f in up_child if f in up_parent), None)
        if common is None:
            raise ValueError(f'frames {parent!r} and {child!r} are not connected in the TF '
                             f'tree ({self.describe()})')
        return (up_child[:up_child.index(common) + 1], up_parent[:up_parent.index(common) + 1])

    def _from_root(self, up: list[str], times: np.ndarray, tol: float):
        m = len(times)
        pos = np.zeros((m, 3))
        quat = np.tile([0.0, 0.0, 0.0, 1.0], (m, 1))
        ok = np.ones(m, bool)
        for frame in up[:-1]:
            edge = self._edges[frame]
            traj = edge.trajectory()
            if edge.static:
                e_pos = np.tile(traj.positions[-1], (m, 1))
                e_quat = np.tile(quat_normalize(traj.quaternions[-1]), (m, 1))
                e_ok = np.ones(m, bool)
            else:
                e_pos, e_quat, e_ok = traj.at(times, tol)
            e_pos, e_quat = np.where(e_ok[:, None], e_pos, 0.0), np.where(
                e_ok[:, None], e_quat, [0.0, 0.0, 0.0, 1.0])
            pos, quat = pose_compose(e_pos, e_quat, pos, quat)
            ok &= e_ok
        return pos, quat, ok

    def lookup(self, parent: str, child: str, times_ns: Sequence[int], tolerance_s: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pose of ``child`` in ``parent`` at each time, chaining intermediate frames.

        Every dynamic transform on the way is interpolated within ``tolerance_s``; a time
        where any of them has no sample close enough is not ``ok`` (NaN pose).
        """
        up_child, up_parent = self.chain(parent, child)
        times = np.asarray(times_ns, np.int64).reshape(-1)
        c_pos, c_quat, c_ok = self._from_root(up_child, times, tolerance_s)
        p_pos, p_quat, p_ok = self._from_root(up_parent, times, tolerance_s)
        inv_pos, inv_quat = pose_invert(p_pos, p_quat)
        pos, quat = pose_compose(inv_pos, inv_quat, c_pos, c_quat)
        ok = c_ok & p_ok
        pos[~ok] = np.nan
        quat[~ok] = np.nan
        return pos, quat, ok


# ----------------------------------------------------------------------------- scanning

@dataclass
class BagScan:
    """Images of one topic (in bag order) with their ground truth, from a first pass."""

    path: Path
    image_topic: str
    image_type: str
    stamps_ns: np.ndarray        # (N,) header stamps (log time where a stamp is 0)
    log_ns: np.ndarray           # (N,) receive times
    gt_pos: np.ndarray           # (N, 3), NaN where not ok
    gt_quat: np.ndarray          # (N, 4)
    gt_ok: np.ndarray            # (N,) ground truth within the tolerance
    gt_source: str
    gt_samples: int
    tolerance: float
    messages_read: int = 0
    truncated: BagCorruptError | None = None

    def __len__(self) -> int:
        return len(self.stamps_ns)

    @property
    def outside(self) -> int:
        """Images without ground truth within the tolerance (not scored)."""
        return int((~self.gt_ok).sum())

    def stamps_s(self) -> list[float]:
        """Image stamps in seconds (for the engine's time-gap rule and TUM files)."""
        return [int(s) / NS for s in self.stamps_ns]

    def names(self, indices: Iterable[int] | None = None) -> list[str]:
        """Frame names ``NNNNNN_SEC.NSEC``: image position in the topic and its stamp."""
        idx = range(len(self)) if indices is None else indices
        return [f'{i:06d}_{int(self.stamps_ns[i]) // NS}.{int(self.stamps_ns[i]) % NS:09d}'
                for i in idx]

    def coverage(self) -> str:
        """Why images may lack ground truth: the time ranges of both, for messages."""
        def span(a) -> str:
            return f'[{a[0] / NS:.3f}, {a[-1] / NS:.3f}] s' if len(a) else '(empty)'
        return (f'images {span(np.sort(self.stamps_ns))}, ground truth '
                f'{self.gt_source} {span(self._gt_stamps)} ({self.gt_samples} samples)')

    _gt_stamps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    damage: BagDamage | None = None    # what was skipped (only with allow_damaged)

    def undecodable(self) -> set[int]:
        """Return the positions of the images that did not decode; no model sees them."""
        if self.damage is None:
            return set()
        return {u['index'] for u in self.damage.undecodable
                if u.get('index') is not None and u['topic'] == self.image_topic}


def scan_bag(bag: Bag, image_topic: str, gt_topic: str | None = None,
             gt_tf: str | tuple[str, str] | None = None,
             tolerance: float = DEFAULT_TOLERANCE, allow_truncated: bool = False,
             require_gt: bool = True, allow_damaged: bool = False) -> BagScan:
    """First pass: image stamps and their ground truth (``gt_topic`` or ``gt_tf``).

    Raises :class:`BagError` for unknown topics or wrong types (listing the bag's topics),
    when no image has ground truth within ``tolerance`` (and ``require_gt``),
    :class:`BagCorruptError` for a truncated bag unless ``allow_truncated`` (its ``partial``
    is the scan of the messages read), and :class:`BagDamagedError` for CRC mismatches or
    undecodable messages unless ``allow_damaged``: then they are skipped and listed in
    ``scan.damage`` (:meth:`BagScan.undecodable` gives the images among them).
    """
    if (gt_topic is None) == (gt_tf is None):
        raise ValueError('give the ground truth as exactly one of --gt-topic TOPIC and '
                         '--gt-tf PARENT:CHILD')
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f'--gt-tolerance must be a non-negative number of seconds, '
                         f'got {tolerance}')
    damage = bag.verify()
    if damage and not allow_damaged:
        raise BagDamagedError(bag.path, damage)
    info = bag.require(image_topic, IMAGE_TYPES, '--image-topic')
    topics = [image_topic]
    tf_pair = None
    if gt_topic is not None:
        gt_info = bag.require(gt_topic, POSE_TYPES, '--gt-topic')
        topics.append(gt_topic)
        source = f'{gt_topic} ({gt_info.msgtype.rsplit("/", 1)[-1]})'
    else:
        tf_pair = parse_tf_pair(gt_tf) if isinstance(gt_tf, str) else tuple(gt_tf)
        present = [t for t in TF_TOPICS if t in bag.topics]
        if not present:
            raise BagError(f'--gt-tf {tf_pair[0]}:{tf_pair[1]} needs /tf or /tf_static, but '
                           f'the bag has: {bag.describe_topics()}', bag.path)
        for t in present:
            bag.require(t, (TF_TYPE,), 'TF topic')
        topics += present
        source = f'TF {tf_pair[0]} -> {tf_pair[1]}'

    stamps, logs = [], []
    gt_stamps, gt_pos, gt_quat = [], [], []
    tree = TfTree()
    truncated = None
    read = 0

    def undecodable(msg: BagMessage, reason: str, index: int | None = None) -> None:
        damage.undecodable.append({'topic': msg.topic, 'log_ns': int(msg.log_ns),
                                   'index': index, 'reason': reason})
        if not allow_damaged:
            raise BagDamagedError(bag.path, damage)

    try:
        for msg in bag.messages(topics):
            read += 1
            if msg.topic == image_topic:
                try:
                    stamp = header_stamp_ns(msg.data)
                except ValueError as exc:
                    undecodable(msg, str(exc), len(stamps))
                    stamp = 0
                stamps.append(stamp if stamp > 0 else msg.log_ns)
                logs.append(msg.log_ns)
                continue
            try:
                obj = bag.deserialize(msg)
            except BagError as exc:
                undecodable(msg, str(exc).split(': ', 1)[-1])
                continue
            if tf_pair is None:
                stamp = _stamp_ns(obj.header.stamp) or msg.log_ns
                p, q = _pose_of(msg.msgtype, obj)
                gt_stamps.append(stamp)
                gt_pos.append(p)
                gt_quat.append(_checked_quat(q, f'{msg.topic} at {stamp} ns', bag.path))
            else:
                for tr in obj.transforms:
                    p, q = _pose_of('geometry_msgs/msg/TransformStamped', tr)
                    stamp = _stamp_ns(tr.header.stamp) or msg.log_ns
                    q = _checked_quat(q, f'{msg.topic} {tr.header.frame_id} -> '
                                      f'{tr.child_frame_id} at {stamp} ns', bag.path)
                    tree.add(tr.header.frame_id, tr.child_frame_id, stamp, p, q,
                             msg.topic == '/tf_static')
    except BagCorruptError as exc:
        truncated = exc
    stamps_ns = np.asarray(stamps, np.int64)
    n = len(stamps_ns)
    if tf_pair is None:
        traj = Trajectory(gt_stamps, np.array(gt_pos).reshape(-1, 3),
                          np.array(gt_quat).reshape(-1, 4))
        pos, quat, ok = traj.at(stamps_ns, tolerance)
        samples, all_gt = len(traj), traj.stamps_ns
    else:
        try:
            pos, quat, ok = tree.lookup(tf_pair[0], tf_pair[1], stamps_ns, tolerance)
        except ValueError as exc:
            if truncated is not None and not allow_truncated:
                raise truncated
            raise BagError(str(exc), bag.path) from None
        up_child, up_parent = tree.chain(*tf_pair)
        via = [f for f in up_child[1:-1] + up_parent[1:-1]]
        if via:
            source += f' (via {", ".join(via)})'
        dyn = [tree._edges[f] for f in up_child[:-1] + up_parent[:-1]
               if not tree._edges[f].static]
        all_gt = np.sort(np.concatenate([e.trajectory().stamps_ns for e in dyn])) if dyn \
            else np.zeros(0, np.int64)
        samples = len(all_gt)
    scan = BagScan(bag.path, image_topic, info.msgtype, stamps_ns, np.asarray(logs, np.int64),
                   pos.reshape(n, 3), quat.reshape(n, 4), ok.reshape(n), source, samples,
                   float(tolerance), read, truncated, all_gt,
                   damage if allow_damaged else None)
    if truncated is not None and not allow_truncated:
        truncated.partial = scan
        raise truncated
    if n == 0:
        raise BagError(f'no messages on {image_topic}' + (
            f' outside the damaged part ({damage.describe()})' if damage else ''), bag.path)
    if require_gt and not scan.gt_ok.any():
        raise BagError(f'none of the {n} images has ground truth within '
                       f'{tolerance:g} s: {scan.coverage()}. Are both stamped in the same '
                       'clock? Raise --gt-tolerance if the ground truth is sparse', bag.path)
    return scan


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


def sequential_loaders(bag: Bag, scan: BagScan, indices: Sequence[int],
                       on_error: Callable[[int, BagMessage, str], np.ndarray] | None = None
                       ) -> list[Callable[[], np.ndarray]]:
    """One callable per wanted image that decodes it; they must be called in order.

    Lets :meth:`InferenceEngine.predict_frames` stream a bag (batch by batch, never all
    images in memory) through its ``images`` argument. An image that does not decode raises
    :class:`BagDamagedError`, or returns ``on_error(position, message, reason)`` (a stand-in
    whose prediction the caller drops).
    """
    source = iter_images(bag, scan, indices)
    state = {'next': 0}
    order = list(indices)

    def load(k: int) -> np.ndarray:
        if state['next'] != k:
            raise RuntimeError(f'bag images must be loaded in order: asked for #{k}, '
                               f'next is #{state["next"]}')
        state['next'] += 1
        i, msg = next(source)
        if i != order[k]:
            raise RuntimeError(f'bag image {i} came where {order[k]} was expected')
        try:
            return decode_image(msg.msgtype, bag.deserialize(msg))
        except ValueError as exc:
            reason = str(exc).split(f'{bag.path}: ', 1)[-1]
            if on_error is not None:
                return on_error(i, msg, reason)
            damage = BagDamage(bag.path, undecodable=[{
                'topic': msg.topic, 'log_ns': int(msg.log_ns), 'index': i, 'reason': reason}])
            raise BagDamagedError(bag.path, damage) from None

    return [functools.partial(load, k) for k in range(len(order))]


# ----------------------------------------------------------------------------- extraction

def default_extract_dir() -> Path:
    """``$CAMRELOC_BAG_CACHE`` or ``~/.cache/camreloc_ros/bag_frames``."""
    env = os.environ.get('CAMRELOC_BAG_CACHE')
    return Path(env) if env else Path.home() / '.cache' / 'camreloc_ros' / 'bag_frames'


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
        with open(f, 'rb') as fh:
            h.update(hashlib.file_digest(fh, 'sha256').digest())
    digest = h.hexdigest()
    if memo_path is not None:
        known[key] = {'stat': stat, 'digest': digest}
        fd, tmp = tempfile.mkstemp(prefix='.digests.', dir=memo_path.parent)
        with os.fdopen(fd, 'w') as fh:
            json.dump(known, fh)
        os.replace(tmp, memo_path)
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
        tmp = Path(tempfile.mkdtemp(prefix=f'.{key}.', dir=root))
        try:
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
            try:
                os.replace(tmp, folder)
            except OSError:
                if not index.is_file():    # not another process that finished first
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
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


# ----------------------------------------------------------------------------- writing

class Messages:
    """Builders of the messages the tools write, as rosbags objects of the ROS 2 typestore."""

    def __init__(self) -> None:
        self.types = typestore().types

    def time(self, ns: int) -> Any:
        """``builtin_interfaces/Time`` of integer nanoseconds."""
        return self.types['builtin_interfaces/msg/Time'](sec=int(ns) // NS,
                                                         nanosec=int(ns) % NS)

    def header(self, ns: int, frame_id: str) -> Any:
        """``std_msgs/Header``."""
        return self.types['std_msgs/msg/Header'](stamp=self.time(ns), frame_id=frame_id)

    def pose(self, position: Sequence[float], quaternion: Sequence[float]) -> Any:
        """``geometry_msgs/Pose`` of a position and an x, y, z, w quaternion."""
        T = self.types
        p = [float(v) for v in position]
        q = [float(v) for v in quaternion]
        return T['geometry_msgs/msg/Pose'](
            position=T['geometry_msgs/msg/Point'](x=p[0], y=p[1], z=p[2]),
            orientation=T['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]))

    def pose_stamped(self, ns: int, frame_id: str, position, quaternion) -> Any:
        """``geometry_msgs/PoseStamped``."""
        return self.types['geometry_msgs/msg/PoseStamped'](
            header=self.header(ns, frame_id), pose=self.pose(position, quaternion))

    def pose_with_covariance_stamped(self, ns: int, frame_id: str, position, quaternion,
                                     covariance: np.ndarray) -> Any:
        """``geometry_msgs/PoseWithCovarianceStamped``; covariance symmetrised, row-major."""
        cov = np.asarray(covariance, np.float64).reshape(6, 6)
        T = self.types
        inner = T['geometry_msgs/msg/PoseWithCovariance'](
            pose=self.pose(position, quaternion), covariance=(0.5 * (cov + cov.T)).reshape(36))
        return T['geometry_msgs/msg/PoseWithCovarianceStamped'](
            header=self.header(ns, frame_id), pose=inner)

    def transform_stamped(self, ns: int, parent: str, child: str, position,
                          quaternion) -> Any:
        """``geometry_msgs/TransformStamped`` parent -> child."""
        T = self.types
        p = [float(v) for v in position]
        q = [float(v) for v in quaternion]
        return T['geometry_msgs/msg/TransformStamped'](
            header=self.header(ns, parent), child_frame_id=child,
            transform=T['geometry_msgs/msg/Transform'](
                translation=T['geometry_msgs/msg/Vector3'](x=p[0], y=p[1], z=p[2]),
                rotation=T['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3])))

    def tf(self, transforms: list) -> Any:
        """``tf2_msgs/TFMessage``."""
        return self.types[TF_TYPE](transforms=list(transforms))

    def path(self, ns: int, frame_id: str, poses: list) -> Any:
        """``nav_msgs/Path`` of PoseStamped objects."""
        return self.types['nav_msgs/msg/Path'](header=self.header(ns, frame_id),
                                               poses=list(poses))

    def image(self, ns: int, frame_id: str, rgb: np.ndarray) -> Any:
        """``sensor_msgs/Image`` rgb8."""
        rgb = np.ascontiguousarray(rgb, np.uint8)
        return self.types[IMAGE](header=self.header(ns, frame_id), height=rgb.shape[0],
                                 width=rgb.shape[1], encoding='rgb8', is_bigendian=0,
                                 step=rgb.shape[1] * 3, data=rgb.reshape(-1))

    def compressed(self, ns: int, frame_id: str, data: bytes, codec: str = 'jpeg') -> Any:
        """``sensor_msgs/CompressedImage`` with image_transport's format string."""
        return self.types[COMPRESSED](header=self.header(ns, frame_id),
                                      format=f'rgb8; {codec} compressed bgr8',
                                      data=np.frombuffer(data, np.uint8))

    def camera_info(self, ns: int, frame_id: str, width: int, height: int, fx: float,
                    fy: float, cx: float, cy: float) -> Any:
        """``sensor_msgs/CameraInfo`` of an undistorted pinhole camera."""
        T = self.types
        k = np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])
        p = np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
        roi = T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
        return T['sensor_msgs/msg/CameraInfo'](
            header=self.header(ns, frame_id), height=int(height), width=int(width),
            distortion_model='plumb_bob', d=np.zeros(5), k=k, r=np.eye(3).reshape(-1), p=p,
            binning_x=0, binning_y=0, roi=roi)


def _qos(durability: str = 'volatile', depth: int = 10, reliable: bool = True) -> Any:
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability[durability.upper()], zero, zero, QosLiveliness.AUTOMATIC, zero,
               False)


def rosbag_folder_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a rosbag2 folder that may be replaced (None when it is one).

    A rosbag2 folder holds ``metadata.yaml`` and its storage files, nothing else: anything
    more (a subfolder, a results file) would be lost with it.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return 'is not a folder' if path.exists() or path.is_symlink() else 'does not exist'
    if not (path / 'metadata.yaml').is_file():
        return 'is not a rosbag2 folder (no metadata.yaml)'
    other = sorted(p.name for p in path.iterdir()
                   if p.name != 'metadata.yaml'
                   and not (p.is_file() and not p.is_symlink()
                            and p.name.endswith(BAG_FOLDER_SUFFIXES)))
    if other:
        return (f'holds more than a rosbag2 ({", ".join(other[:5])}'
                f'{" ..." if len(other) > 5 else ""})')
    return None


class BagWriter:
    """Writes a rosbag2 atomically: into a temporary folder renamed into place on success.

    A crash or an exception leaves no half-written bag (and keeps an older one). An existing
    path is replaced only with ``overwrite`` and only when it is a rosbag2 folder, so a
    mistyped output never deletes other files. Topics are added on first use;
    ``/tf_static`` is offered transient-local as tf2 expects. Mcap files get their CRCs.
    """

    def __init__(self, path: str | Path, storage: str = 'mcap', overwrite: bool = False):
        if storage not in STORAGES:
            raise ValueError(f'storage must be one of {", ".join(STORAGES)}, got {storage!r}')
        self.path = Path(path)
        self.storage = storage
        self.overwrite = overwrite
        self._check_target()
        self._tmp: Path | None = None
        self._writer = None
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.msgs = Messages()

    def _check_target(self) -> None:
        if not (self.path.exists() or self.path.is_symlink()):
            return
        if not self.overwrite:
            raise BagError('exists already; choose another output (--overwrite replaces an '
                           'older rosbag2 folder)', self.path)
        problem = rosbag_folder_problem(self.path)
        if problem:
            raise BagError(f'{problem}; only a rosbag2 folder is replaced, so it is left '
                           'as it is', self.path)

    def __enter__(self) -> 'BagWriter':
        from rosbags.rosbag2 import StoragePlugin, Writer
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.', dir=self.path.parent))
        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self._tmp / self.path.name, version=9, storage_plugin=plugin)
            self._writer.open()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        return self

    def add_topic(self, topic: str, msgtype: str, qos: Any = None) -> None:
        """Register a topic (done by :meth:`write` on first use with default QoS)."""
        if topic in self._conns:
            return
        if qos is None:
            qos = _qos('transient_local', 1) if topic == '/tf_static' else \
                _qos('volatile', 100 if topic == '/tf' else 10)
        self._conns[topic] = self._writer.add_connection(
            topic, msgtype, typestore=typestore(), offered_qos_profiles=[qos])
        self.counts[topic] = 0

    def write(self, topic: str, msgtype: str, log_ns: int, msg: Any) -> None:
        """Write a rosbags message object, or raw CDR ``bytes`` of ``msgtype``."""
        self.add_topic(topic, msgtype)
        data = msg if isinstance(msg, (bytes, bytearray, memoryview)) else \
            typestore().serialize_cdr(msg, msgtype)
        self._writer.write(self._conns[topic], int(log_ns), bytes(data))
        self.counts[topic] += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        writer, self._writer = self._writer, None
        tmp, self._tmp = self._tmp, None
        try:
            if exc_type is not None:
                writer.abort()
                return
            writer.close()
            if self.storage == 'mcap':
                for f in (tmp / self.path.name).glob('*.mcap'):
                    _mcap_write_crcs(f)
            self._check_target()    # nothing else appeared at the path meanwhile
            old = None
            if self.path.exists():
                old = self.path.with_name(f'.{self.path.name}.old-{os.getpid()}')
                os.replace(self.path, old)
            os.replace(tmp / self.path.name, self.path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
