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

"""Reader options are config keys the command line reaches (issue #18, defect 5).

The TUM reader's advice for an image without ground truth used to be "pass
drop_unmatched=True", a key ``train``, ``map`` and ``evaluate`` refused. No rclpy here.
"""

import shutil

import pytest

from camreloc_ros.core.config import ConfigError
from camreloc_ros.core.data.formats import reader_options
from camreloc_ros.core.localization.map_file import load_map
from camreloc_ros.tools import cli
from camreloc_ros.tools import map as map_tool
from camreloc_ros.tools import train
from camreloc_ros.tools.common import load_frames, reader_overrides, shared_data_dir
from test_bags import _posed_folder
from test_datasets import make_tum
from test_map import _checkpoint

HOLO = shared_data_dir() / 'hololens-office'


@pytest.fixture(scope='module')
def tum(tmp_path_factory):
    """A 30-frame TUM folder (the walk, with K.txt) whose frame 3 has no ground truth."""
    d = tmp_path_factory.mktemp('tum')
    root = make_tum(d, n=30, missing_gt=(3,))[0]
    shutil.copy(HOLO / 'K.txt', root / 'K.txt')
    return root


def test_unmatched_frame_advice_names_the_cli_key(tum, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / 'model.pt', _posed_folder(tmp_path / 'p', 30), 'posed')
    code = cli.main(['map', '--model', str(ckpt), '--data', str(tum), '--format', 'tum',
                     '--out', str(tmp_path / 'map.npz')])
    assert code == 1
    err = capsys.readouterr().err
    assert '1 of 30 images have no groundtruth.txt pose' in err
    assert 'add data.drop_unmatched=true to the command' in err
    assert not (tmp_path / 'map.npz').exists()


def test_train_reads_it_with_the_override(tum):
    args = cli.subcommand_parser('train').parse_args(
        ['--data', str(tum), '--format', 'tum', 'data.drop_unmatched=true', 'data.block=5',
         'data.val_every=0'])
    split = load_frames(tum, train.conf_from_args(args), log=lambda s: None)
    names = [f.name for f in split[0]] + [f.name for f in split[1]]
    assert len(names) + split.info['test'] == 29 and len(split[0]) > 0
    assert all(not n.endswith(f'{1305031102.175304 + 3 / 30:.6f}') for n in names)


@pytest.mark.slow   # builds a SIFT map (~6 s)
def test_map_reads_it_with_the_override(tum, tmp_path):
    ckpt = _checkpoint(tmp_path / 'model.pt', _posed_folder(tmp_path / 'p', 30), 'posed')
    args = cli.subcommand_parser('map').parse_args(
        ['--model', str(ckpt), '--data', str(tum), '--format', 'tum', '--out',
         str(tmp_path / 'map.npz'), 'data.drop_unmatched=true'])
    conf = {'format': 'tum', 'data': reader_overrides(args.overrides),
            'build': {'min_points_per_image': 0}}
    out = map_tool.main(conf, {'model': ckpt, 'data': tum, 'out': args.out},
                        log=lambda s: None)
    names = load_map(out).names
    assert len(names) > 0 and f'rgb/{1305031102.175304 + 3 / 30:.6f}' not in names


def test_reader_options_are_typed_and_format_checked():
    assert reader_options('tum', None, {'drop_unmatched': True}) == {'drop_unmatched': True}
    assert reader_options('tum', {'max_dt': 0.05}, None) == {'max_dt': 0.05}    # checkpoint's
    assert reader_options('posed', {'max_dt': 0.05}, None) == {}   # another format's: ignored
    with pytest.raises(ConfigError, match="'data.drop_unmatched' must be true or false"):
        reader_options('tum', None, {'drop_unmatched': 'yes'})
    with pytest.raises(ConfigError, match='data.drop_unmatched is an option of format'):
        reader_options('posed', None, {'drop_unmatched': True})
    with pytest.raises(ConfigError, match="unknown config key 'data.drop'"):
        reader_overrides(['data.drop=true'])
