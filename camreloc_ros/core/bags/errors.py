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

"""What can be wrong with a bag, said so that a user can act on it (ROS-free).

:class:`BagError` names the bag and what was expected; :class:`BagCorruptError` is a bag cut
short (what was read before the cut is kept on it); :class:`BagDamage` lists bit-rot found by
the CRC checks and messages that did not decode, and :class:`BagDamagedError` carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camreloc_ros.core.robot.messages import NS


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
