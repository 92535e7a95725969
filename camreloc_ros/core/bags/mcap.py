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

"""The mcap files of a bag record by record: CRC checks, salvage, CRCs for written files.

rosbags' reader needs an intact file and stops at the first damaged chunk; these functions
read an mcap front to back without its footer or index (a recording cut short), check the
chunk, data-section and summary CRCs (so a bit-flipped chunk is an error, not garbage), skip
damaged chunks when the caller allows it, and fill in the CRCs that rosbags' writer leaves at
0. Chunks are decompressed with rosbags' own decompressors. Record layouts:
https://mcap.dev/spec (opcodes in the comments).
"""

from __future__ import annotations

from pathlib import Path
import struct
from typing import Iterator, Sequence
import zlib

from camreloc_ros.core.bags.errors import BagDamage

MCAP_MAGIC = b'\x89MCAP0\r\n'


class Truncated(Exception):
    """The linear reader hit the end of the readable data early."""


def _mcap_string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from('<I', buf, pos)
    return buf[pos + 4:pos + 4 + n].decode('utf-8'), pos + 4 + n


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

    if compression not in DECOMPRESSORS:
        raise Truncated(f'unsupported mcap chunk compression {compression!r}')
    return DECOMPRESSORS[compression](data, size)


def _records(data: bytes, end: int) -> Iterator[tuple[int, bytes]]:
    """``(opcode, body)`` of the records in ``data[:end]`` (a summary section)."""
    pos = 0
    while pos + 9 <= end:
        (length,) = struct.unpack_from('<Q', data, pos + 1)
        yield data[pos], data[pos + 9:pos + 9 + length]
        pos += 9 + length


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
    except Truncated as exc:
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

    A record whose opcode or length is impossible is a cut (:class:`Truncated`), unless
    ``resync`` (chunk offsets from an intact summary) lists a chunk after it: then
    ``(offset, -1, b'', None)`` marks the unreadable gap and the walk goes on there.
    Ends after DataEnd (or the Footer of a file without one).
    """
    pos = 8
    while True:
        f.seek(pos)
        head = f.read(9)
        if len(head) < 9:
            raise Truncated(f'record header cut at byte {pos}'
                            if head else 'the file ends without its summary and footer')
        op = head[0]
        (length,) = struct.unpack_from('<Q', head, 1)
        if op == 0 or 0x10 <= op < 0x80 or pos + 9 + length > size:
            nxt = next((o for o in sorted(resync) if o > pos), None)
            if nxt is None:
                raise Truncated(f'record of {length} bytes cut at byte {pos}')
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
    topics, chunks = {}, []
    try:
        for op, body in _records(data, foot - start):
            if op == 0x04:
                cid, _ = struct.unpack_from('<HH', body, 0)
                topics[cid], _ = _mcap_string(body, 4)
            elif op == 0x08:
                chunks.append(struct.unpack_from('<Q', body, 16)[0])
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


def verify_mcap(path: Path, damage: BagDamage) -> None:
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
        except Truncated:
            pass       # a cut end: Bag.messages reports it as truncated
    for c in damage.chunks:
        if c['file'] == path.name:
            c['messages'] = {topics.get(k, f'channel {k}') if isinstance(k, int) else k: n
                             for k, n in c['messages'].items()}


def read_mcap(path: Path, skip_damaged: bool = False
              ) -> Iterator[tuple[str, str, int, bytes]]:
    """Messages of an mcap file read front to back (no footer or index needed).

    Streams record by record (a chunk at most in memory), so a large damaged file is fine.
    A damaged chunk (:func:`verify_mcap` finds the same ones) ends the read as a cut, or is
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
            raise Truncated('no mcap magic at the start of the file')
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
                raise Truncated(f'damaged chunk at byte {offset}: {exc}') from None
            for inner_op, inner_body in inner:
                yield from record(inner_op, inner_body)


def _summary_records(f, footer: tuple[int, int, int]) -> list[tuple[int, bytes]]:
    """Return the schema and channel records of the summary section."""
    foot, start, _ = footer
    if not start or start > foot:
        return []
    f.seek(start)
    data = f.read(foot - start)
    return [(op, body) for op, body in _records(data, len(data)) if op in (0x03, 0x04)]


def write_crcs(path: Path) -> None:
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
