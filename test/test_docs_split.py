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

"""The block-split numbers the docs state are ``SPLIT_DEFAULTS``'s, so the docs cannot drift.

``core/data/split.py`` ``SPLIT_DEFAULTS`` is the one home of the split (25-frame blocks, every
4th test; validation 25 / every 8th). Each sentence below is where a doc states those numbers;
a sentence that no longer matches fails too (reword the pattern with the doc), so a changed
default cannot leave an old number in the docs unnoticed.
"""

from pathlib import Path
import re

import pytest

from camreloc_ros.core.data.split import SPLIT_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
# doc -> patterns; each named group is a SPLIT_DEFAULTS key whose value the doc states
STATED = {
    'docs/training.md': [
        r'default every (?P<every>\d+)(?:st|nd|rd|th) block of (?P<block>\d+) frames',
        r'default (?P<val_block>\d+) / (?P<val_every>\d+), `SPLIT_DEFAULTS`',
    ],
    'docs/bags.md': [
        r'`data\.val_block` / `data\.val_every`, (?P<val_block>\d+) / (?P<val_every>\d+) by'
        r'\s+default: `SPLIT_DEFAULTS`',
    ],
    'docs/accuracy.md': [
        r'Blocks of (?P<block>\d+) consecutive frames: every (?P<every>\d+)(?:st|nd|rd|th)'
        r' block is\s+\*\*test\*\*',
        r'of the remaining blocks every (?P<val_every>\d+)(?:st|nd|rd|th) is\s+'
        r'\*\*validation\*\*',
    ],
    'docs/results.md': [
        r'blocks of (?P<block>\d+) consecutive frames, every (?P<every>\d+)(?:st|nd|rd|th)'
        r' block is\s+\*\*test\*\*',
        r'every (?P<val_every>\d+)(?:st|nd|rd|th) block is\s+\*\*validation\*\*',
    ],
    'README.md': [r'held-out (?P<block>\d+)-frame blocks'],
}


def stated_numbers(text: str, patterns: list[str]) -> list[tuple[str, int]]:
    """``(SPLIT_DEFAULTS key, number)`` for every pattern; a pattern that finds nothing raises."""
    found = []
    for pattern in patterns:
        matches = list(re.finditer(pattern, text))
        if not matches:
            raise AssertionError(f'no longer stated as expected: {pattern!r}')
        found += [(key, int(value)) for m in matches for key, value in m.groupdict().items()]
    return found


@pytest.mark.parametrize('doc', sorted(STATED))
def test_docs_state_the_split_defaults(doc):
    stated = stated_numbers((ROOT / doc).read_text(), STATED[doc])
    assert stated
    wrong = [(key, value, SPLIT_DEFAULTS[key]) for key, value in stated
             if value != SPLIT_DEFAULTS[key]]
    assert not wrong, f'{doc} states (key, value, SPLIT_DEFAULTS value): {wrong}'


def test_docs_name_split_defaults_as_the_source():
    for doc in ('docs/training.md', 'docs/bags.md'):
        assert '`SPLIT_DEFAULTS`' in (ROOT / doc).read_text(), doc


def test_a_drifted_number_is_found():
    text = 'Blocks of 30 consecutive frames: every 4th block is\n**test**'
    found = stated_numbers(text, STATED['docs/accuracy.md'][:1])
    assert found == [('block', 30), ('every', 4)]
    with pytest.raises(AssertionError, match='no longer stated'):
        stated_numbers('blocks of thirty frames', STATED['docs/accuracy.md'][:1])
