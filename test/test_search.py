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

"""Random hyper-parameter search: sampling and a tiny real search."""

import json

import numpy as np
import pytest

from camreloc_ros.core.data.datasets import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.tools import search
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'


def test_sample_respects_ranges_and_is_seeded():
    space = search.default_conf['space']
    a = [search.sample(space, np.random.default_rng(1)) for _ in range(2)]
    assert a[0] == a[1]
    draws = [search.sample(space, np.random.default_rng(s)) for s in range(50)]
    assert all(5e-5 <= d['train.lr'] <= 1e-3 for d in draws)
    assert {d['loss.name'] for d in draws} == {'nh', 'qeh'}
    assert all(-4 <= d['loss.s_rot_init'] <= 0 for d in draws)
    with pytest.raises(ValueError, match='unknown distribution'):
        search.sample({'train.lr': {'normal': [0, 1]}}, np.random.default_rng(0))


def test_tiny_search_ranks_trials(tmp_path):
    dataset = read_dataset(DATA, 'posed')
    train = split_dataset(dataset, 'train').frames[:24]
    val = split_dataset(dataset, 'test').frames[:8]
    conf = {'trials': 2, 'epochs': 1,
            'space': {'train.lr': {'log_uniform': [1e-4, 1e-3]},
                      'loss.name': {'choice': ['nh', 'qeh']}},
            'base': {'model': {'backbone': {'trainable_stages': 0}, 'head': {'width': 64}},
                     'train': {'batch_size': 8, 'cache_dir': str(tmp_path / 'cache')}}}
    result = search.main(conf, {'out': tmp_path / 's', 'frames': (train, val)},
                         log=lambda s: None)
    rows = json.loads((tmp_path / 's' / 'results.json').read_text())
    assert len(rows) == 2
    table = result.read_text().splitlines()
    best = min(rows, key=lambda r: r['score'])
    assert f'| 1 | {best["trial"]} |' in table[2]
