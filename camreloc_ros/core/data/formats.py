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

"""``read_dataset``: a dataset format's name to its reader, checked, in one place.

The types (:mod:`.datasets`) and the readers that build them (:mod:`.readers`) sit below this
module; it imports both, so neither needs the other lazily (they used to import each other).
:data:`FORMATS` is the order of :data:`READERS` and every tool's ``--format`` choices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from camreloc_ros.core.config import check_conf, ConfigError
from camreloc_ros.core.data import readers
from camreloc_ros.core.data.datasets import Dataset, DatasetError, Frame, READER_OPTIONS, SPLITS

READERS: dict[str, Callable[..., Dataset]] = {
    '7scenes': readers.read_7scenes,
    'posed': readers.read_posed,
    'cambridge': readers.read_cambridge,
    'tum': readers.read_tum,
    'csv': readers.read_csv,
}
FORMATS = tuple(READERS)
OFFICIAL_SPLIT_FORMATS = ('7scenes', 'cambridge')

# reader keyword options each format accepts (anything else is a typo, refused)
_OPTIONS = {fmt: {k for k, (_, fmts, _) in READER_OPTIONS.items() if fmt in fmts}
            for fmt in READERS}


def reader_options(fmt: str, inherited: Mapping | None = None,
                   given: Mapping | None = None) -> dict:
    """Keyword options of ``read_dataset`` for ``fmt`` from ``data`` config sections.

    ``inherited`` is what a checkpoint was trained with (``extra['data']``: map and evaluate
    read the data as training did), ``given`` what the user set (``data.<key>=value``; None
    values mean "not set"). The user's keys are checked against the types of
    :data:`~camreloc_ros.core.data.datasets.READER_OPTIONS` and refused for a format that has
    no such option; inherited keys of another format are ignored.
    """
    out = {}
    for key, (default, fmts, spec) in READER_OPTIONS.items():
        for source, conf in (('inherited', inherited), ('given', given)):
            value = (conf or {}).get(key)
            if value is None:
                continue
            if source == 'given':
                check_conf({key: value}, {key: spec}, 'data.')
                if fmt not in fmts and value != default:
                    raise ConfigError(f'data.{key} is an option of format(s) '
                                      f'{", ".join(fmts)}, not of {fmt!r}; leave it out')
            if fmt in fmts:
                out[key] = value
    return out


def read_dataset(root: Any, fmt: str, split: str | None = None, **options: Any) -> Dataset:
    """Read the dataset at ``root`` in format ``fmt`` (one of ``FORMATS``).

    ``split`` is ``'train'``, ``'test'`` or ``None``/``'all'``; only formats with an official
    split (7scenes, cambridge) accept train/test here. Raises :class:`DatasetError` for bad
    data and for unknown formats or options, so a typo never falls back to a default.
    """
    if fmt not in FORMATS:
        raise DatasetError(f'unknown dataset format {fmt!r}; valid formats: '
                           + ', '.join(FORMATS))
    unknown = set(options) - _OPTIONS[fmt]
    if unknown:
        valid = ', '.join(sorted(_OPTIONS[fmt])) or 'none'
        raise DatasetError(f'unknown option(s) {", ".join(sorted(unknown))} for format '
                           f'{fmt!r}; valid options: {valid}')
    if split == 'all':
        split = None
    if split is not None and split not in SPLITS:
        raise DatasetError(f'unknown split {split!r}; expected train, test, all or None')
    if split is not None and fmt not in OFFICIAL_SPLIT_FORMATS:
        raise DatasetError(f'format {fmt!r} has no official {split} split; read it whole '
                           'and use split_dataset() / block_split() (contiguous blocks)')
    root = Path(root)
    if not root.exists():
        raise DatasetError('dataset root does not exist', root)
    ds = READERS[fmt](root, split, **options)
    names: dict[str, Frame] = {}
    for f in ds.frames:
        if f.name in names:
            raise DatasetError(f'frame name {f.name!r} appears twice ({names[f.name].image_path}'
                               f' and {f.image_path}); expected unique images', ds.root)
        names[f.name] = f
    return ds
