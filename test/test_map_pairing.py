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

"""Maps outlive a retraining: they pair with networks by scene frame (issue 22, part 4).

Real training runs (1 epoch on 8 frames) on two slices of the HoloLens walk written as
posed datasets: a retrain on the same slice (another seed, other validation knobs) pairs
with the map built for the first run, a network of the other slice is refused naming both,
and files without a frame id keep the old rule (only the map's own checkpoint).
"""

import logging
from pathlib import Path
import shutil

import numpy as np
import pytest

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.evaluation.map_eval import open_map
from camreloc_ros.core.localization.map_file import load_map, MapError, save_map
from camreloc_ros.core.localization.refiner import model_identity, Refiner
from camreloc_ros.tools import export, train
from camreloc_ros.tools import map as map_tool
from camreloc_ros.tools.common import shared_data_dir

HOLO = shared_data_dir() / 'hololens-office'
QUIET = {'log': lambda s: None, 'progress_bars': False}
pytestmark = pytest.mark.slow   # trains three tiny runs and builds a map


def posed_slice(dst: Path, start: int, count: int) -> Path:
    """Write frames ``start .. start + count - 1`` of the walk as a posed dataset."""
    src = read_dataset(HOLO, 'posed').frames[start:start + count]
    (dst / 'images').mkdir(parents=True)
    for f in src:
        shutil.copy2(f.image_path, dst / 'images' / Path(f.image_path).name)
    rows = [' '.join(f'{v:.17g}' for v in f.pose_c2w.reshape(-1)) for f in src]
    (dst / 'poses.txt').write_text('\n'.join(rows) + '\n')
    shutil.copy2(HOLO / 'K.txt', dst / 'K.txt')
    return dst


def tiny_run(data: Path, out: Path, seed: int, val_every: int = 8) -> Path:
    """Train 1 epoch on 8 frames; return ``last.pt``."""
    conf = {'model': {'backbone': {'trainable_stages': 1}, 'head': {'width': 64}},
            'data': {'format': 'posed', 'block': 5, 'every': 4, 'val_block': 5,
                     'val_every': val_every},
            'train': {'epochs': 1, 'batch_size': 4, 'limit': 8, 'seed': seed,
                      'cache_dir': str(out.parent / 'cache')}}
    train.main(conf, {'data': data, 'out': out}, **QUIET)
    return out / 'last.pt'


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Two runs on slice A (seeds 0 and 1), one on slice B, and the map of A for run 0."""
    d = tmp_path_factory.mktemp('pairing')
    a = posed_slice(d / 'walk_a', 0, 30)
    b = posed_slice(d / 'walk_b', 200, 30)
    first = tiny_run(a, d / 'run_a0', seed=0)
    again = tiny_run(a, d / 'run_a1', seed=1, val_every=4)
    other = tiny_run(b, d / 'run_b', seed=0)
    path = map_tool.main({'build': {'sift': {'max_keypoints': 1024}},
                          'calibration': {'enabled': False}},
                         {'model': first, 'data': a, 'out': d / 'map_a.npz'}, log=lambda s: None)
    return {'a': a, 'b': b, 'first': first, 'again': again, 'other': other, 'map': path,
            'dir': d}


def test_checkpoint_and_map_carry_the_scene_frame_of_all_frames(runs):
    digest_first, frame_first = model_identity(runs['first'])
    digest_again, frame_again = model_identity(runs['again'])
    _, frame_other = model_identity(runs['other'])
    assert digest_first != digest_again                   # really another network
    # the split knobs differ (val_every 8 vs 4), the frame does not: it hashes all 30 frames
    assert frame_first == frame_again and frame_first['frames'] == 30
    assert frame_first['source'] == str(runs['a'].resolve())
    assert frame_other['id'] != frame_first['id']
    lmap = load_map(runs['map'])
    assert lmap.meta['scene_frame'] == frame_first
    assert len(lmap) < 30                                   # the map holds the training side


def test_network_retrained_in_the_same_frame_pairs_with_the_map(runs, caplog):
    with caplog.at_level(logging.INFO, logger='camreloc_ros'):
        refiner = Refiner.from_files(runs['map'], runs['again'])
    assert 'not ' + str(runs['again']) in caplog.text and 'so the map pairs' in caplog.text
    # it refines with the map as the first run's network would (a map image as the query)
    train_frames = split_dataset(read_dataset(runs['a'], 'posed'), 'train', 5, 4).frames
    query = train_frames[len(train_frames) // 2]
    res = refiner.refine(read_rgb(query.image_path))
    assert res.refined, res.reason
    assert np.linalg.norm(res.position - query.pose_c2w[:3, 3]) < 0.05
    # its ONNX export carries the frame too, so the node pairs an .onnx model
    onnx = export.main({'check': False}, {'checkpoint': str(runs['again']),
                                          'out': str(runs['dir'] / 'again.onnx')})
    assert len(Refiner.from_files(runs['map'], onnx).map) == len(refiner.map)
    # the evaluation's check too (same training frames: the test split did not change)
    assert open_map(runs['map'], runs['again'], train_frames, str(runs['a'])).path


def test_network_of_another_frame_is_refused_naming_both(runs):
    _, frame = model_identity(runs['other'])
    onnx = export.main({'check': False}, {'checkpoint': str(runs['other']),
                                          'out': str(runs['dir'] / 'other.onnx')})
    for model in (runs['other'], onnx):
        with pytest.raises(MapError) as err:
            Refiner.from_files(runs['map'], model)
        text = str(err.value)
        for part in (str(runs['map']), str(model), frame['id'][:12], str(runs['b'].resolve()),
                     load_map(runs['map']).meta['scene_frame']['id'][:12],
                     str(runs['a'].resolve()), 'another coordinate frame', 'camreloc map'):
            assert part in text, (part, text)


def test_files_without_a_frame_id_keep_the_checkpoint_rule(runs, tmp_path):
    import torch
    from camreloc_ros.core.models.pose_model import load_checkpoint_file

    # a checkpoint trained before the frame id existed: only the map's own checkpoint pairs
    state = load_checkpoint_file(runs['again'])
    del state['extra']['scene_frame']
    old_ckpt = tmp_path / 'old.pt'
    torch.save(state, old_ckpt)
    assert model_identity(old_ckpt)[1] is None
    with pytest.raises(MapError, match='does not belong to checkpoint .*old.pt.*checkpoint names '
                       'no scene frame'):
        Refiner.from_files(runs['map'], old_ckpt)
    # a map built before it: the same
    lmap = load_map(runs['map'])
    del lmap.meta['scene_frame']
    old_map = save_map(lmap, tmp_path / 'old_map.npz')
    with pytest.raises(MapError, match='map names no scene frame'):
        Refiner.from_files(old_map, runs['again'])
    assert len(Refiner.from_files(old_map, runs['first']).map) == len(lmap)   # its own one
    # a map without its descriptor network needs the trunk that built it: the old rule
    lmap = load_map(runs['map'])
    lmap.descriptor_onnx = None
    no_net = save_map(lmap, tmp_path / 'no_net.npz')
    with pytest.raises(MapError, match='holds no descriptor network'):
        Refiner.from_files(no_net, runs['again'])
