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

"""Reading a rosbag2 without ROS: topics, raw messages, CRC checks, salvage of cut files.

rosbag2_py is not on PyPI, so bags are read with ``rosbags`` (pure Python, sqlite3 and mcap
storage). Messages are deserialised with rosbags' typestore of a ROS 2 distribution (kilted,
or the newest one this rosbags knows), so type names and type hashes match a robot's.

A recording cut short (power loss, full disk) leaves an mcap without footer or a damaged
sqlite file; such bags are read linearly as far as they go, and the error that follows names
the file and how many messages were read. Bit-rot is not silent: mcap chunk, data-section and
summary CRCs are checked (:mod:`camreloc_ros.core.bags.mcap`). A damaged bag is an error
unless the caller allows it; then the damaged chunks are skipped and :class:`BagDamage` says
what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools
from pathlib import Path
import sqlite3
from typing import Any, Iterable, Iterator, Sequence

from camreloc_ros.core.bags.errors import BagCorruptError, BagDamage, BagError
from camreloc_ros.core.bags.mcap import read_mcap, Truncated, verify_mcap

STORAGES = ('mcap', 'sqlite3')
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE, COMPRESSED)


@functools.lru_cache(maxsize=1)
def typestore():
    """Return the ROS 2 typestore: kilted if rosbags knows it, else its newest ROS 2 one."""
    from rosbags.typesys import get_typestore, Stores
    names = [s for s in Stores.__members__ if s.startswith('ROS2_')]
    name = 'ROS2_KILTED' if 'ROS2_KILTED' in names else names[-1]
    return get_typestore(Stores[name])


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
                    verify_mcap(path, damage)
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
                except Truncated:
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
            except Truncated as exc:
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
                rows = read_mcap(path, skip_damaged=self._linear)
            else:
                rows = _read_sqlite(path, expected)
            for topic, msgtype, log_ns, data in rows:
                if wanted is None or topic in wanted:
                    yield topic, msgtype, log_ns, data


def _read_sqlite(path: Path, expected: int | None = None
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
        raise Truncated(f'sqlite: {exc}') from None
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
        raise Truncated(f'sqlite: {error}; {failed} rows unreadable')
    finally:
        con.close()
