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

"""Maps and ONNX models are data from strangers: issue #18, the file and network part.

A map's embedded descriptor network and a user's ``.onnx`` model must never read a file
(ONNX external data), every map array is checked when the map is opened (before any network
pass), a map carries a content digest (the checkpoints' one helper), and maps are written by
the project's one atomic writer (disk full names the file, killed runs' temps are removed,
the mode follows the umask). ROS-free: no rclpy here.
"""

import contextlib
import ctypes
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
import pytest
import torch

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.evaluation.map_eval import open_map
from camreloc_ros.core.inference import onnx_format
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.core.inference.onnx_format import OnnxModelError
from camreloc_ros.core.inference.runtimes import make_runtime, OnnxRuntime
from camreloc_ros.core.io import content_digest
from camreloc_ros.core.localization.descriptor_onnx import OnnxDescriptor
from camreloc_ros.core.localization.map_file import load_map, MapError, save_map
from camreloc_ros.core.localization.refiner import Refiner
from camreloc_ros.core.models.pose_model import build_model, load_checkpoint_file, save_atomic
from camreloc_ros.tools import cli, evaluate
from camreloc_ros.tools import map as map_tool
from camreloc_ros.tools.common import shared_data_dir

MINI = shared_data_dir() / '7scenes-stairs-mini'
SECRET = b'root:x:0:0:root:/root:/bin/bash\n'


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """(checkpoint, map) of the 7-Scenes mini scene: a real map with its ONNX descriptor."""
    d = tmp_path_factory.mktemp('safety')
    torch.manual_seed(0)
    frames = split_dataset(read_dataset(MINI, '7scenes'), 'train').frames
    pos = np.stack([f.pose_c2w[:3, 3] for f in frames])
    model = build_model('posenet', backbone={'pretrained': False}, head={'width': 64})
    model.set_pose_stats(pos.mean(axis=0), 1.0)
    ckpt = model.save_checkpoint(d / 'model.pt', extra={'data': {'format': '7scenes'}})
    out = map_tool.main({}, {'model': ckpt, 'data': MINI, 'out': d / 'map.npz'},
                        log=lambda s: None)
    return ckpt, out


# ---------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def opened(path: Path):
    """Yield a callable telling whether ``path`` was opened or read since (inotify)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    in_access, in_open = 0x1, 0x20
    assert libc.inotify_add_watch(fd, str(path).encode(), in_access | in_open) >= 0
    events = []

    def seen() -> bool:
        with contextlib.suppress(BlockingIOError):
            events.append(os.read(fd, 4096))
        return bool(events)

    try:
        yield seen
        assert not seen()
        path.read_bytes()          # the watch works: this read is seen
        assert seen(), 'inotify saw no read of the secret file: the check cannot work here'
    finally:
        os.close(fd)


def external(name: str, shape: tuple, location: str) -> TensorProto:
    """A float32 tensor whose bytes ONNX Runtime would read from ``location``."""
    tensor = numpy_helper.from_array(np.zeros(shape, np.float32), name)
    tensor.ClearField('raw_data')
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (('location', location), ('offset', '0'),
                       ('length', str(4 * int(np.prod(shape))))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def hostile_descriptor(location: str, dim: int) -> bytes:
    """A map descriptor network whose output is the bytes of the file ``location``."""
    graph = helper.make_graph(
        [helper.make_node('Identity', ['W'], ['descriptor'])], 'hostile',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, 'h', 'w'])],
        [helper.make_tensor_value_info('descriptor', TensorProto.FLOAT, [1, dim])],
        initializer=[external('W', (1, dim), location)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)],
                             ir_version=8).SerializeToString()


def hostile_pose_model(location: str) -> bytes:
    """An .onnx with camreloc metadata whose every output is the bytes of ``location``."""
    outs = ['feat', 'pos', 'quat', 'var', 'head_pos', 'head_quat', 'head_var']
    graph = helper.make_graph(
        [helper.make_node('Identity', ['W'], [o]) for o in outs], 'hostile',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, ['b', 3, 224, 224]),
         helper.make_tensor_value_info('features', TensorProto.FLOAT, ['b', 2])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 16]) for o in outs],
        initializer=[external('W', (1, 16), location)])   # >= 16 values: ORT reads the file
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)],
                              ir_version=8)
    meta = {'format': onnx_format.ONNX_FORMAT, 'format_version': onnx_format.ONNX_FORMAT_VERSION,
            'model_conf': {}, 'pose_stats': {}, 'temporal': False, 'window': 1,
            'feature_dim': 2, 'preprocessing': {'size': 224, 'mean': [0, 0, 0],
                                                'std': [1, 1, 1]}}
    entry = model.metadata_props.add()
    entry.key, entry.value = onnx_format.METADATA_KEY, json.dumps(meta)
    return model.SerializeToString()


def map_arrays(path: Path) -> tuple[dict, dict]:
    """The arrays and the meta header of a map file."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(arrays['meta'].tobytes().decode())


def craft(path: Path, arrays: dict, meta: dict) -> Path:
    """Write a map as anybody can: ``np.savez`` with a chosen meta (fresh zip CRCs)."""
    np.savez(path, **dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)))
    return path


def refused(call, path: Path, match: str) -> str:
    """Run ``call``: a one-line MapError naming ``path`` that matches ``match``."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')      # crafted maps carry no digest: older-map warning
        with pytest.raises(MapError, match=match) as info:
            call()
    text = str(info.value)
    assert str(path) in text and '\n' not in text, text
    assert 'allow_pickle' not in text and 'Traceback' not in text
    return text


# ---------------------------------------------------------------------------- defect 1

def test_map_whose_descriptor_network_reads_a_file_is_refused_everywhere(built, tmp_path,
                                                                         monkeypatch):
    """The issue's probe: a relative external-data path below the working directory."""
    ckpt, path = built
    run = tmp_path / 'run'
    run.mkdir()
    monkeypatch.chdir(run)                  # as `cd / && camreloc evaluate ...`
    dim = load_map(path).global_desc.shape[1]
    secret = run / 'secret.txt'
    secret.write_bytes((SECRET * (4 * dim // len(SECRET) + 1))[:4 * dim])
    lmap = load_map(path)
    lmap.descriptor_onnx = hostile_descriptor('secret.txt', dim)
    hostile = save_map(lmap, tmp_path / 'hostile.npz')
    with opened(secret) as was_read:
        match = 'descriptor network.*external data.*secret.txt'
        refused(lambda: load_map(hostile), hostile, match)
        refused(lambda: Refiner.from_files(hostile, ckpt), hostile, match)
        refused(lambda: open_map(hostile, ckpt), hostile, match)
        refused(lambda: evaluate.main({}, {'checkpoint': ckpt, 'data': MINI,
                                           'out': tmp_path / 'ev', 'map': hostile}),
                hostile, match)
        # the descriptor itself checks too (a map made in memory never passed load_map)
        with pytest.raises(MapError, match='external data.*secret.txt'):
            OnnxDescriptor(lmap.descriptor_onnx, lmap.meta['descriptor'])
        assert not was_read()
    assert not (tmp_path / 'ev').exists()


def test_onnx_model_that_reads_a_file_is_refused_by_the_runtime(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / 'secret.bin'
    secret.write_bytes((SECRET * 2)[:64])
    model = tmp_path / 'model.onnx'
    model.write_bytes(hostile_pose_model('secret.bin'))
    with opened(secret) as was_read:
        for call in (lambda: make_runtime(str(model), 'onnx'),
                     lambda: OnnxRuntime(model),
                     lambda: OnnxRuntime(model.read_bytes())):
            with pytest.raises(OnnxModelError, match='external data.*secret.bin') as info:
                call()
            assert '\n' not in str(info.value)
        assert not was_read()
    with pytest.raises(OnnxModelError, match=f'{model}.*external data'):
        OnnxRuntime(model)


def _graph(nodes, initializer=(), sparse=()):
    return helper.make_graph(
        nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [2])],
        initializer=list(initializer), sparse_initializer=list(sparse))


def _model(graph, functions=()):
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17),
                                                   helper.make_opsetid('local', 1)],
                             functions=list(functions), ir_version=8)


def _hostile_models() -> dict:
    """One model per place a tensor can hide in ONNX, each pointing at a file."""
    add = helper.make_node('Add', ['x', 'W'], ['y'])
    const = helper.make_node('Constant', [], ['W'], value=external('c', (2,), 'f_const'))
    sub = _graph([helper.make_node('Constant', [], ['y'],
                                   value=external('s', (2,), 'f_subgraph'))])
    sub.ClearField('input')
    branch = helper.make_node('If', ['cond'], ['y'], then_branch=sub, else_branch=sub)
    cond = helper.make_node('Constant', [], ['cond'], value=helper.make_tensor(
        'c', TensorProto.BOOL, [], [True]))
    sparse = helper.make_sparse_tensor(external('v', (1,), 'f_sparse'),
                                       numpy_helper.from_array(np.array([0], np.int64)), [2])
    fbody = helper.make_node('Constant', [], ['t'], value=external('f', (2,), 'f_function'))
    func = helper.make_function('local', 'Leak', ['a'], ['b'],
                                [fbody, helper.make_node('Add', ['a', 't'], ['b'])],
                                [helper.make_opsetid('', 17)])
    entries_only = numpy_helper.from_array(np.zeros(2, np.float32), 'W')
    entries_only.external_data.add().key = 'location'
    entries_only.external_data[0].value = 'f_entries'
    tensors_attr = helper.make_node('Constant', [], ['W'])
    tensors_attr.attribute.append(helper.make_attribute('value_floats', [1.0, 2.0]))
    tensors_attr.attribute.append(onnx.AttributeProto(
        name='extra', type=onnx.AttributeProto.TENSORS,
        tensors=[external('l', (2,), 'f_tensors')]))
    return {
        'f_init': _model(_graph([add], [external('W', (2,), 'f_init')])),
        'f_const': _model(_graph([const, add])),
        'f_subgraph': _model(_graph([cond, branch])),
        'f_sparse': _model(_graph([helper.make_node('Add', ['x', 'S'], ['y'])],
                                  sparse=[_named(sparse, 'S')])),
        'f_function': _model(_graph([helper.make_node('Leak', ['x'], ['y'],
                                                      domain='local')]), [func]),
        'f_entries': _model(_graph([add], [entries_only])),
        'f_tensors': _model(_graph([tensors_attr, add])),
    }


def _named(sparse, name):
    sparse.values.name = name
    return sparse


@pytest.mark.parametrize('where, found', [
    ('f_init', 'initializer of the main graph'),
    ('f_const', 'attribute value of node Constant'),
    ('f_subgraph', 'subgraph attribute (then|else)_branch of node If'),
    ('f_sparse', 'sparse initializer of the main graph'),
    ('f_function', 'function local.Leak'),
    ('f_entries', 'initializer of the main graph'),
    ('f_tensors', 'attribute extra of node Constant')])
def test_self_contained_check_finds_every_file_reference(where, found):
    model = _hostile_models()[where]
    for given in (model, model.SerializeToString()):
        with pytest.raises(OnnxModelError, match=f'network X refers to a file: .*{found}.* '
                           f'external data at {where!r}'):
            onnx_format.check_self_contained(given, 'network X')
    with pytest.raises(MapError, match=f'map M refers to a file: .*{where}'):
        onnx_format.check_self_contained(model, 'map M', MapError)


def test_self_contained_check_passes_the_map_network_and_rejects_garbage(built):
    _, path = built
    data = load_map(path).descriptor_onnx
    proto = onnx_format.check_self_contained(data, 'map')
    assert proto.graph.output[0].name == 'descriptor'
    for bad in (b'', b'\xff' * 64):
        with pytest.raises(OnnxModelError, match='map is not an ONNX model'):
            onnx_format.check_self_contained(bad, 'map')


# ---------------------------------------------------------------------------- validation

def _broken(kind: str, arrays: dict, meta: dict) -> tuple[dict, dict, str]:
    """One unusable map per kind and the words its error must contain."""
    a = dict(arrays)
    m = json.loads(json.dumps(meta))
    m.pop('content_sha256', None)
    if kind == 'garbage_onnx':
        a['descriptor_onnx'] = np.frombuffer(b'\xff' * 64, np.uint8)
        return a, m, 'descriptor network is not an ONNX model'
    if kind == 'empty_onnx':
        a['descriptor_onnx'] = np.zeros(0, np.uint8)
        return a, m, 'descriptor network is not an ONNX model'
    if kind == 'string_points':
        a['points'] = a['points'].astype(str)
        return a, m, 'points has dtype <U.*expected float'
    if kind == 'int_names':
        a['names'] = np.arange(len(a['names']))
        return a, m, 'names has dtype int64.*expected str'
    if kind == 'float_offsets':
        a['obs_offsets'] = a['obs_offsets'].astype(np.float64)
        return a, m, 'obs_offsets has dtype float64.*expected int'
    if kind == 'version_1':
        m['version'] = 1
        return a, m, ('has version 1.*stores each point once.*rebuild it with `camreloc map '
                      '--model .* --data .* --out .* --overwrite`')
    if kind == 'no_descriptor_meta':
        del m['descriptor']
        return a, m, r'meta\.descriptor is missing'
    if kind == 'descriptor_meta_without_size':
        del m['descriptor']['input_shorter_side']
        return a, m, r'meta\.descriptor.*input_shorter_side'
    if kind == 'descriptor_dim':
        m['descriptor']['dim'] = 7
        return a, m, r'meta\.descriptor.*dim 7.*global_desc'
    if kind in ('fx_zero', 'fy_negative', 'fx_inf'):
        K = a['K'].copy()
        K[1, 1 if kind == 'fy_negative' else 0, 1 if kind == 'fy_negative' else 0] = {
            'fx_zero': 0.0, 'fy_negative': -500.0, 'fx_inf': np.inf}[kind]
        a['K'] = K
        return a, m, 'image 1.*focal length' if kind != 'fx_inf' else 'K has NaN or inf'
    if kind == 'size_zero':
        size = a['image_size'].copy()
        size[2, 1] = 0
        a['image_size'] = size
        return a, m, 'image 2.*image_size'
    raise AssertionError(kind)


KINDS = ['garbage_onnx', 'empty_onnx', 'string_points', 'int_names', 'float_offsets', 'version_1',
         'no_descriptor_meta', 'descriptor_meta_without_size', 'descriptor_dim', 'fx_zero',
         'fy_negative', 'fx_inf', 'size_zero']


@pytest.mark.parametrize('kind', KINDS)
def test_unusable_map_is_a_one_line_error_naming_the_file(built, tmp_path, kind):
    ckpt, path = built
    arrays, meta = map_arrays(path)
    arrays, meta, match = _broken(kind, arrays, meta)
    bad = craft(tmp_path / f'{kind}.npz', arrays, meta)
    refused(lambda: load_map(bad), bad, match)
    refused(lambda: Refiner.from_files(bad, ckpt), bad, match)   # the node's configure


def test_evaluate_refuses_an_unusable_map_before_its_network_pass(built, tmp_path,
                                                                  monkeypatch):
    ckpt, path = built
    arrays, meta = map_arrays(path)
    arrays, meta, match = _broken('no_descriptor_meta', arrays, meta)
    bad = craft(tmp_path / 'bad.npz', arrays, meta)

    def no_network(*args, **kwargs):
        raise AssertionError('the network ran before the map was checked')

    monkeypatch.setattr(InferenceEngine, 'predict_frames', no_network)
    refused(lambda: evaluate.main({}, {'checkpoint': ckpt, 'data': MINI,
                                       'out': tmp_path / 'ev', 'map': bad}), bad, match)
    assert not (tmp_path / 'ev').exists()


def test_a_text_file_given_as_a_map_is_told_what_a_map_is(tmp_path):
    text = tmp_path / 'notes.txt'
    text.write_text('these are my notes, not a map\n')
    npy = tmp_path / 'array.npy'
    np.save(npy, np.zeros(3))
    for path in (text, npy):
        msg = refused(lambda: load_map(path), path, 'not a readable')
        assert 'written by `camreloc map`' in msg


# ---------------------------------------------------------------------------- digest

def test_content_digest_keeps_the_checkpoint_digest_values(tmp_path):
    """The one digest helper gives old checkpoints' values (computed by the old
    ``pose_model.tensor_digest`` on this state), so they still verify."""
    state = {'state_dict': {'w': torch.arange(6, dtype=torch.float32).reshape(2, 3),
                            'n': torch.tensor(7), 'e': torch.zeros(0, 4, dtype=torch.float16)},
             'resume': {'epoch': 3, 'lr': [0.1, 0.01], 'name': 'x',
                        'opt': {'m': torch.ones(2, dtype=torch.float64)}}}
    old = '5fcf26b2bb455174636ff72703b222d77561013db49ec3e0f2dcfb32447d7cb6'
    assert content_digest(state) == old
    path = save_atomic(dict(state, format='camreloc_ros.checkpoint'), tmp_path / 'c.pt')
    assert torch.load(path, weights_only=True)['weights_sha256'] == old
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        load_checkpoint_file(path)
    # numpy arrays: every byte, dtype and shape counts
    a = {'x': np.arange(6, dtype=np.float32), 'm': {'k': 'v'}}
    assert content_digest(a) == content_digest({'x': np.arange(6, dtype=np.float32),
                                                'm': {'k': 'v'}})
    for other in ({'x': np.arange(6, dtype=np.float64), 'm': {'k': 'v'}},
                  {'x': np.arange(6, dtype=np.float32).reshape(2, 3), 'm': {'k': 'v'}},
                  {'x': np.arange(1, 7, dtype=np.float32), 'm': {'k': 'v'}},
                  {'x': np.arange(6, dtype=np.float32), 'm': {'k': 'w'}}):
        assert content_digest(other) != content_digest(a)


def test_map_with_a_changed_array_is_refused_by_its_digest(built, tmp_path):
    _, path = built
    arrays, meta = map_arrays(path)
    assert meta['content_sha256'] == load_map(path).meta['content_sha256']
    for key, change in (('points', lambda v: v + np.float32(0.01)),
                        ('poses_c2w', lambda v: v * 1.0001),
                        ('descriptor_onnx', lambda v: np.concatenate([v, v[-1:]])),
                        ('names', lambda v: v[::-1].copy())):
        changed = dict(arrays, **{key: change(arrays[key])})
        edited = craft(tmp_path / f'{key}.npz', changed, meta)   # old meta, new CRCs
        with pytest.raises(MapError, match='content digest') as info:
            load_map(edited)
        assert str(edited) in str(info.value)
    meta_edit = json.loads(json.dumps(meta))
    meta_edit['checkpoint']['sha256'] = '0' * 64                  # re-paired by hand
    edited = craft(tmp_path / 'meta.npz', arrays, meta_edit)
    with pytest.raises(MapError, match='content digest'):
        load_map(edited)


def test_map_without_a_digest_loads_with_a_warning(built, tmp_path):
    _, path = built
    arrays, meta = map_arrays(path)
    del meta['content_sha256']
    older = craft(tmp_path / 'older.npz', arrays, meta)
    with pytest.warns(UserWarning, match=f'map {older} has no content digest.*cannot be '
                      'detected'):
        lmap = load_map(older)
    assert len(lmap) == len(arrays['names'])
    with warnings.catch_warnings():
        warnings.simplefilter('error')           # a map with its digest loads silently
        again = save_map(lmap, tmp_path / 'again.npz')
        assert 'content_sha256' in load_map(again).meta


# ---------------------------------------------------------------------------- writer

@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB tmpfs (needs root and mount rights; skipped with the reason otherwise)."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which('mount') is None:
        pytest.skip('a full-disk test needs root to mount a small tmpfs')
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here: {result.stderr.strip()}')
    try:
        yield mount
    finally:
        subprocess.run(['umount', str(mount)], check=False)


def test_full_disk_while_saving_a_map_names_the_map(built, tiny_disk):
    _, path = built
    lmap = load_map(path)
    target = tiny_disk / 'map.npz'
    with pytest.raises(OSError, match=f'no space left on device while writing {target}'):
        save_map(lmap, target)
    assert list(tiny_disk.iterdir()) == []                   # no half file, no temp


def test_killed_saves_temp_is_removed_by_the_next_map_run(built, tmp_path, capsys):
    ckpt, _ = built
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    out = tmp_path / 'maps'
    out.mkdir()
    litter = out / f'.map.npz.{dead.pid}.tmpk1ll.npz'          # what a killed save leaves
    litter.write_bytes(b'x' * 1000)
    keep = out / '.map.npz.notes'
    keep.write_bytes(b'mine')
    code = cli.main(['map', '--model', str(ckpt), '--data', str(MINI),
                     '--out', str(out / 'other.npz')])
    assert code == 0, capsys.readouterr().err
    assert not litter.exists() and keep.exists()
    assert sorted(p.name for p in out.iterdir()) == ['.map.npz.notes', 'other.npz']


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_map_file_mode_follows_the_umask(built, tmp_path, umask, mode):
    _, path = built
    lmap = load_map(path)
    old = os.umask(umask)
    try:
        saved = save_map(lmap, tmp_path / 'm.npz')
    finally:
        os.umask(old)
    assert saved.stat().st_mode & 0o777 == mode
