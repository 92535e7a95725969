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

"""``--overwrite`` replaces only what the tool itself writes, and no output lands in an input.

Issue #18: ``camreloc map --out ck/best.pt --overwrite`` and ``--out DATA/TrainSplit.txt
--overwrite`` exited 0 and the file was gone. Every probe runs on a copy of the 7-Scenes
mini scene in tmp_path, so a regression damages only the copy. No rclpy here.
"""

import json
from pathlib import Path
import shutil

import numpy as np
import pytest

from camreloc_ros.core.io import file_sha256
from camreloc_ros.core.localization.map_file import load_map
from camreloc_ros.tools import cli
from camreloc_ros.tools.common import shared_data_dir
from test_map import _checkpoint

MINI = shared_data_dir() / '7scenes-stairs-mini'


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """(data copy, checkpoint ck/model.pt, a second checkpoint ck/best.pt) in one tmp folder."""
    d = tmp_path_factory.mktemp('overwrite')
    data = Path(shutil.copytree(MINI, d / 'data'))
    (d / 'ck').mkdir()
    ckpt = _checkpoint(d / 'ck' / 'model.pt', data, '7scenes', seed=0)
    other = _checkpoint(d / 'ck' / 'best.pt', data, '7scenes', seed=1)
    return data, ckpt, other


def _map(ckpt: Path, data: Path, out: Path, *flags: str) -> int:
    return cli.main(['-q', 'map', '--model', str(ckpt), '--data', str(data), '--out', str(out),
                     *flags])


def _digests(*paths: Path) -> list[str]:
    return [file_sha256(p) for p in paths]


def test_map_overwrite_refuses_another_checkpoint(scene, capsys):
    data, ckpt, other = scene
    before = _digests(other)
    assert _map(ckpt, data, other, '--overwrite') == 1
    err = capsys.readouterr().err
    assert f'--out {other} is not a camreloc map' in err and 'left as it is' in err
    assert _digests(other) == before


def test_map_overwrite_refuses_files_inside_the_dataset(scene, capsys):
    data, ckpt, _ = scene
    split = data / 'TrainSplit.txt'
    before = _digests(split)
    assert _map(ckpt, data, split, '--overwrite') == 1
    err = capsys.readouterr().err
    assert f'--out {split} lies inside the dataset {data}' in err
    assert _digests(split) == before
    new = data / 'seq-02' / 'map.npz'          # a new file among the images: refused too
    assert _map(ckpt, data, new) == 1
    assert 'lies inside the dataset' in capsys.readouterr().err
    assert not new.exists()


@pytest.mark.slow   # builds two SIFT maps (~5 s)
def test_map_overwrite_replaces_a_map_and_an_old_version(scene, tmp_path):
    """A map (also one of another version: its header says map) is rebuilt in place."""
    data, ckpt, other = scene
    out = tmp_path / 'map.npz'
    assert _map(other, data, out) == 0
    assert load_map(out).meta['checkpoint']['sha256'] == file_sha256(other)
    assert _map(ckpt, data, out) == 1            # no flag: kept
    assert load_map(out).meta['checkpoint']['sha256'] == file_sha256(other)
    with np.load(out) as z:                      # an older map format version
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays['meta']).decode())
    meta['version'] = 0
    arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(out, **arrays)
    assert _map(ckpt, data, out, '--overwrite') == 0
    assert load_map(out).meta['checkpoint']['sha256'] == file_sha256(ckpt)


def test_map_overwrite_refuses_npz_that_is_not_a_map(scene, tmp_path, capsys):
    data, ckpt, _ = scene
    out = tmp_path / 'features.npz'
    np.savez(out, x=np.arange(3))
    before = _digests(out)
    assert _map(ckpt, data, out, '--overwrite') == 1
    assert 'no camreloc map header' in capsys.readouterr().err
    assert _digests(out) == before


def test_export_replaces_only_an_export(scene, tmp_path, capsys):
    """``camreloc export --out`` used to replace any file but the checkpoint, flag or not."""
    _, ckpt, other = scene
    before = _digests(other)
    assert cli.main(['-q', 'export', str(ckpt), '--out', str(other), '--no-check']) == 1
    assert 'already exists; pass --overwrite' in capsys.readouterr().err
    assert cli.main(['-q', 'export', str(ckpt), '--out', str(other), '--no-check',
                     '--overwrite']) == 1
    assert 'only replaces an ONNX file written by camreloc export' in capsys.readouterr().err
    assert _digests(other) == before
    out = tmp_path / 'model.onnx'
    assert cli.main(['-q', 'export', str(ckpt), '--out', str(out), '--no-check']) == 0
    first = out.stat().st_mtime_ns
    assert cli.main(['-q', 'export', str(other), '--out', str(out), '--no-check',
                     '--overwrite']) == 0
    assert out.stat().st_mtime_ns != first


def test_bag_from_dataset_never_writes_into_the_dataset(scene, capsys):
    data, _, _ = scene
    out = data / 'seq-02' / 'bag'
    assert cli.main(['-q', 'bag-from-dataset', str(data), str(out), '--format', '7scenes']) == 1
    assert f'out {out} lies inside the dataset {data}' in capsys.readouterr().err
    assert not out.exists()
