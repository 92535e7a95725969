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

"""The ROS-free half of the fault suite: what a hostile or unlucky user does offline.

Checkpoints from strangers (pickle payloads), damaged files, outputs over existing paths,
bad overrides, a full disk and the litter of killed runs; bags with bit-rot and outputs over
existing paths. Split from ``test_faults.py`` (the live node's faults, over rclpy) so that
these run without importing rclpy or a message package (test_architecture checks it). Bag
faults use real bags of 12 hololens-office frames written by ``bag-from-dataset``; most
refusals must come before the model runs, so they are given a checkpoint that is not one,
which would fail if it were loaded first.
"""

import dataclasses
import hashlib
import json
import os
from pathlib import Path
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
import torch

from camreloc_ros.core import bags
from camreloc_ros.core.config import ConfigError, parse_overrides
from camreloc_ros.core.evaluation.metrics import load_per_frame
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.core.io import atomic_write_text, clean_stale_temps, temp_prefix
from camreloc_ros.core.models.pose_model import (build_model, CheckpointError,
                                                 load_checkpoint_file, PoseModel, save_atomic)
from camreloc_ros.core.training.trainer import train_conf, Trainer
from camreloc_ros.tools import bag_eval, bag_from_dataset, cli, evaluate, export, train
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(600)


class Payload:
    """Pickles as a call of ``os.system``: what a hostile checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    model = build_model('posenet', head={'width': 64})
    model.set_pose_stats([1.0, 0.0, 0.5], 2.0)
    return model.save_checkpoint(tmp_path_factory.mktemp('ckpt') / 'model.pt')


def _payload_copy(checkpoint: Path, folder: Path) -> tuple[Path, Path]:
    """A real checkpoint with a code payload added: it would evaluate normally if unpickled."""
    marker = folder / 'payload_ran'
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt['extra'] = {'note': Payload(marker)}
    path = folder / 'payload.pt'
    torch.save(ckpt, path)
    return path, marker


@pytest.mark.slow   # trains, evaluates a bag or runs the CLI in a subprocess, 1.5-5 s
def test_payload_checkpoint_is_refused_everywhere_and_never_runs(checkpoint, tmp_path):
    path, marker = _payload_copy(checkpoint, tmp_path)
    entries = {
        'load': lambda: PoseModel.from_checkpoint(path),
        'evaluate': lambda: evaluate.main({'format': 'posed', 'split': 'test'},
                                          {'checkpoint': path, 'data': DATA,
                                           'out': tmp_path / 'eval'}),
        'export': lambda: export.main({}, {'checkpoint': path, 'out': tmp_path / 'x.onnx'}),
        'engine torch (node, bag-eval)': lambda: InferenceEngine.from_checkpoint(
            path, runtime='torch'),
        'engine onnx (node default on a CPU)': lambda: InferenceEngine.from_checkpoint(
            path, runtime='onnx', cache_dir=tmp_path / 'onnx'),
    }
    for name, call in entries.items():
        with pytest.raises(CheckpointError, match='refused') as info:
            call()
        assert str(path) in str(info.value), name
        assert 'GLOBAL' in str(info.value), name
        assert not marker.exists(), f'{name} ran the payload'
    run = tmp_path / 'run'
    run.mkdir()
    shutil.copy(path, run / 'last.pt')
    trainer = Trainer({'model': {'backbone': {'trainable_stages': 1}}, 'train': {'limit': 4}},
                      _frames()[:4], [], run, log=lambda s: None, progress_bars=False)
    with pytest.raises(CheckpointError, match='refused'):
        trainer.resume()
    assert not marker.exists(), 'train --resume ran the payload'


@pytest.mark.slow   # trains, evaluates a bag or runs the CLI in a subprocess, 1.5-5 s
def test_payload_refused_by_the_cli_with_exit_1(checkpoint, tmp_path):
    path, marker = _payload_copy(checkpoint, tmp_path)
    result = subprocess.run([sys.executable, '-m', 'camreloc_ros.tools.cli', 'export',
                             str(path), '--out', str(tmp_path / 'x.onnx')],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'refused' in result.stderr and str(path) in result.stderr
    assert not marker.exists()
    assert not (tmp_path / 'x.onnx').exists()


@pytest.mark.slow   # its module checkpoint fixture builds and saves a model (~5 s)
def test_damaged_checkpoint_names_the_file(checkpoint, tmp_path):
    data = bytearray(checkpoint.read_bytes())
    rng = np.random.default_rng(7)
    start = len(data) // 2          # inside the weights (most of the file)
    data[start:start + 1000] = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()
    damaged = tmp_path / 'last.pt'
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        PoseModel.from_checkpoint(damaged)
    assert str(damaged) in str(info.value)
    assert 'damaged' in str(info.value)
    with pytest.raises(CheckpointError, match='damaged'):
        InferenceEngine.from_checkpoint(damaged, runtime='onnx', cache_dir=tmp_path / 'onnx')


def test_non_finite_weights_are_refused(tmp_path):
    model = build_model('posenet', head={'width': 64})
    with torch.no_grad():
        model.head.out['pos'].weight[0, 0] = float('nan')
    path = model.save_checkpoint(tmp_path / 'nan.pt')
    with pytest.raises(CheckpointError, match='non-finite weights'):
        PoseModel.from_checkpoint(path)


def test_checkpoint_path_that_is_a_directory(tmp_path):
    for call in (lambda: PoseModel.from_checkpoint(tmp_path),
                 lambda: InferenceEngine.from_checkpoint(tmp_path, runtime='onnx')):
        with pytest.raises(CheckpointError, match='is a directory'):
            call()


# ----------------------------------------------------------------------------- training

def _frames():
    from camreloc_ros.core.data.formats import read_dataset
    return read_dataset(DATA, 'posed').frames


def _tiny(tmp_path: Path, **train_keys) -> dict:
    return {'model': {'backbone': {'trainable_stages': 1}, 'head': {'width': 64}},
            'train': dict({'epochs': 1, 'batch_size': 4, 'limit': 8,
                           'cache_dir': str(tmp_path / 'cache')}, **train_keys)}


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow   # trains, evaluates a bag or runs the CLI in a subprocess, 1.5-5 s
def test_train_into_an_existing_run_is_refused(tmp_path):
    run = tmp_path / 'run'
    quiet = {'log': lambda s: None, 'progress_bars': False}
    train.main(_tiny(tmp_path), {'data': DATA, 'out': run}, **quiet)
    before = _snapshot(run)
    assert {'last.pt', 'best.pt', 'epoch_001.pt', 'train_conf.yaml'} <= before.keys()
    with pytest.raises(ValueError, match='already holds a training run.*--resume'):
        train.main(_tiny(tmp_path, epochs=2), {'data': DATA, 'out': run}, **quiet)
    assert _snapshot(run) == before
    # --resume with another model config is refused before train_conf.yaml is rewritten
    other = _tiny(tmp_path, epochs=2)
    other['model']['head']['width'] = 32
    with pytest.raises(ValueError, match='another model or loss'):
        train.main(other, {'data': DATA, 'out': run}, resume=True, **quiet)
    assert _snapshot(run) == before
    # a bad override is refused before anything is read or written
    with pytest.raises(ConfigError, match='train.epochs'):
        train.main(_tiny(tmp_path, epochs=0), {'data': DATA, 'out': run}, resume=True,
                   **quiet)
    assert _snapshot(run) == before
    # a folder with run files but no last.pt cannot be "resumed" into a mix of two runs
    (run / 'last.pt').unlink()
    with pytest.raises(ValueError, match='no last.pt'):
        train.main(_tiny(tmp_path), {'data': DATA, 'out': run}, resume=True, **quiet)


@pytest.mark.parametrize('override, key', [
    ('train.epochs=0', 'train.epochs'),
    ('train.epochs=abc', 'train.epochs'),
    ('train.lr=nan', 'train.lr'),
    ('train.lr=.nan', 'train.lr'),
    ('train.lr=-1e-3', 'train.lr'),
    ('train.batch_size=0', 'train.batch_size'),
    ('train.limit=-5', 'train.limit'),
    ('train.cache=maybe', 'train.cache'),
    ('data.every=1', 'data.every'),
    ('loss.name=l3', 'loss.name'),
    ('model.head.dropout=1.5', 'model.head.dropout'),
    ('model.head.window=0', 'model.head.window'),
    ('model.backbone.trainable_stages=-1', 'model.backbone.trainable_stages'),
])
def test_overrides_are_type_and_range_checked(override, key):
    with pytest.raises(ConfigError) as info:
        train_conf(parse_overrides([override]))
    assert repr(key) in str(info.value)


@pytest.mark.slow   # trains, evaluates a bag or runs the CLI in a subprocess, 1.5-5 s
def test_cli_bad_override_exits_1_and_writes_nothing(tmp_path):
    run = tmp_path / 'run'
    result = subprocess.run([sys.executable, '-m', 'camreloc_ros.tools.cli', 'train',
                             '--data', str(DATA), '--format', 'posed', '--out', str(run),
                             'train.batch_size=0'],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "'train.batch_size'" in result.stderr and 'Traceback' not in result.stderr
    assert not run.exists()


def test_stale_temporaries_of_killed_runs_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    ours = tmp_path / f'{temp_prefix("last.pt")}abc'
    litter = [tmp_path / f'.last.pt.{dead.pid}.tmpx1y2',
              tmp_path / f'.abc.npy.{dead.pid}.tmpq.npy']
    keep = [ours, tmp_path / '.last.pt.notes', tmp_path / 'epoch_001.pt']
    for p in litter + keep:
        p.write_bytes(b'x')
    removed = clean_stale_temps(tmp_path)
    assert sorted(removed) == sorted(litter)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in litter)


# ----------------------------------------------------------------------------- full disk

@pytest.fixture
def tiny_disk(tmp_path):
    """A 40 MiB tmpfs (needs root and mount rights; skipped with the reason otherwise)."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which('mount') is None:
        pytest.skip('a full-disk test needs root to mount a small tmpfs')
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here: {result.stderr.strip()}')
    try:
        yield mount
    finally:
        subprocess.run(['umount', str(mount)], check=False)


def test_full_disk_names_the_file_and_keeps_earlier_checkpoints(tiny_disk):
    model = build_model('posenet')        # ~30 MB: one fits in 40 MiB, two do not
    first = model.save_checkpoint(tiny_disk / 'last.pt')
    saved_bias = model.head.out['pos'].bias.detach().clone()
    with torch.no_grad():
        model.head.out['pos'].bias.add_(1.0)
    with pytest.raises(OSError, match='no space left') as info:
        model.save_checkpoint(tiny_disk / 'last.pt')
    assert str(tiny_disk / 'last.pt') in str(info.value)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ['last.pt']   # no litter
    reloaded = load_checkpoint_file(first)                               # intact
    assert torch.equal(reloaded['state_dict']['head.out.pos.bias'], saved_bias)
    with pytest.raises(OSError, match=f'no space left.*{tiny_disk / "big.txt"}'):
        atomic_write_text(tiny_disk / 'big.txt', 'x' * (30 << 20))
    with pytest.raises(OSError, match='no space left'):
        save_atomic({'state_dict': {}, 'blob': torch.zeros(20 << 20)}, tiny_disk / 'x.pt')


# ----------------------------------------------------------------------------- bags

FRAMES = 12
RAW_TOPIC = '/camera/image_raw'
JPEG_TOPIC = '/camera/image_raw/compressed'
GT_TOPIC = '/ground_truth/pose'


@pytest.fixture(scope='module')
def junk_ckpt(tmp_path_factory):
    """A file named like a checkpoint that fails to load: proves a refusal came first."""
    path = tmp_path_factory.mktemp('junk') / 'junk.pt'
    path.write_bytes(b'not a checkpoint')
    return path


def _write(out: Path, **conf) -> Path:
    return bag_from_dataset.main(dict({'format': 'posed', 'limit': FRAMES}, **conf),
                                 {'data': DATA, 'out': out})


@pytest.fixture(scope='module')
def raw_bag(tmp_path_factory):
    """rgb8 images: about two frames per mcap chunk, so a damaged chunk leaves the rest."""
    return _write(tmp_path_factory.mktemp('bags') / 'raw_walk')


@pytest.fixture(scope='module')
def jpeg_bag(tmp_path_factory):
    return _write(tmp_path_factory.mktemp('bags') / 'jpeg_walk', compressed=True)


def _conf(bag: Path, **conf) -> dict:
    topic = JPEG_TOPIC if 'jpeg' in bag.name else RAW_TOPIC
    return dict({'image_topic': topic, 'gt_topic': GT_TOPIC, 'device': 'cpu',
                 'batch_size': 8}, **conf)


def _eval(bag: Path, ckpt: Path, out: Path, **conf) -> Path:
    return bag_eval.main(_conf(bag, **conf), {'bag': bag, 'checkpoint': ckpt, 'out': out})


def _tree_digest(path: Path) -> str:
    """Names and contents of everything under ``path`` (or of the file)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob('*'))
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode() + b'\0')
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def _mcap(bag: Path) -> Path:
    return next(bag.glob('*.mcap'))


def _records(path: Path) -> list[tuple[int, int, int]]:
    """(offset, opcode, length) of the top-level records of an mcap file."""
    buf = path.read_bytes()
    out, pos = [], 8
    while pos < len(buf) - 8:
        op = buf[pos]
        (length,) = struct.unpack_from('<Q', buf, pos + 1)
        out.append((pos, op, length))
        if op == 0x02:
            break
        pos += 9 + length
    return out


# ---------------------------------------------------------------------------- --write-bag

def _refused(bag, ckpt, tmp_path, target, match, **conf):
    """bag-eval must refuse ``target`` before any work and leave it as it was."""
    before = _tree_digest(target) if target.exists() else None
    out = tmp_path / 'results'
    with pytest.raises(ValueError, match=match) as info:
        _eval(bag, ckpt, out, write_bag=target, **conf)
    assert str(target) in str(info.value)
    assert not out.exists()
    if before is not None:
        assert _tree_digest(target) == before
    return info.value


@pytest.mark.parametrize('overwrite', [False, True])
def test_write_bag_never_replaces_a_file(raw_bag, junk_ckpt, tmp_path, overwrite):
    target = tmp_path / 'notes.txt'
    target.write_text('my notes')
    _refused(raw_bag, junk_ckpt, tmp_path, target,
             'is not a folder' if overwrite else 'exists already.*--overwrite',
             overwrite=overwrite)
    assert target.read_text() == 'my notes'


@pytest.mark.parametrize('overwrite', [False, True])
def test_write_bag_never_replaces_a_folder_that_is_not_a_bag(raw_bag, junk_ckpt, tmp_path,
                                                             overwrite):
    target = tmp_path / 'runs'
    (target / 'train').mkdir(parents=True)
    (target / 'train' / 'last.pt').write_bytes(b'weights')
    (target / 'metrics.csv').write_text('epoch,loss\n')
    _refused(raw_bag, junk_ckpt, tmp_path, target,
             'is not a rosbag2 folder' if overwrite else 'exists already', overwrite=overwrite)
    assert (target / 'train' / 'last.pt').read_bytes() == b'weights'


def test_write_bag_never_replaces_a_bag_folder_holding_more(raw_bag, junk_ckpt, jpeg_bag,
                                                            tmp_path):
    target = tmp_path / 'old_pred'
    shutil.copytree(jpeg_bag, target)
    (target / 'README.txt').write_text('what this bag is')
    _refused(raw_bag, junk_ckpt, tmp_path, target, 'holds more than a rosbag2 .*README.txt',
             overwrite=True)


def test_write_bag_never_replaces_the_checkpoint(raw_bag, ckpt, tmp_path):
    err = _refused(raw_bag, ckpt, tmp_path, ckpt, 'is the checkpoint', overwrite=True)
    assert 'choose another output' in str(err)
    # nor a folder holding it
    _refused(raw_bag, ckpt, tmp_path, ckpt.parent, 'holds the checkpoint', overwrite=True)


def test_write_bag_never_replaces_the_input_bag(raw_bag, junk_ckpt, tmp_path):
    _refused(raw_bag, junk_ckpt, tmp_path, raw_bag, 'is the evaluated bag', overwrite=True)
    _refused(raw_bag, junk_ckpt, tmp_path, raw_bag / 'pred', 'lies inside the evaluated bag',
             overwrite=True)
    # the bag given as its .mcap file: its folder holds it
    _refused(_mcap(raw_bag), junk_ckpt, tmp_path, raw_bag, 'holds the evaluated bag',
             overwrite=True)
    assert not (raw_bag / 'pred').exists()
    with Reader(raw_bag) as reader:
        assert reader.message_count == 4 * FRAMES


def test_write_bag_never_replaces_the_results_folder(raw_bag, junk_ckpt, tmp_path):
    out = tmp_path / 'results'
    with pytest.raises(ValueError, match='is the results folder'):
        _eval(raw_bag, junk_ckpt, out, write_bag=out, overwrite=True)


@pytest.mark.slow   # trains, evaluates a bag or runs the CLI in a subprocess, 1.5-5 s
def test_write_bag_replaces_an_older_bag_only_with_overwrite(jpeg_bag, ckpt, tmp_path):
    target = tmp_path / 'pred'
    shutil.copytree(jpeg_bag, target)       # an older bag, not an input
    _refused(jpeg_bag, ckpt, tmp_path, target, 'exists already.*--overwrite')
    code = cli.main(['bag-eval', str(jpeg_bag), '--model', str(ckpt), '--image-topic',
                     JPEG_TOPIC, '--gt-topic', GT_TOPIC, '--device', 'cpu', '--out',
                     str(tmp_path / 'results'), '--write-bag', str(target), '--overwrite'])
    assert code == 0
    with Reader(target) as reader:
        topics = {c.topic for c in reader.connections}
    assert '/camreloc/pose' in topics and JPEG_TOPIC not in topics
    assert sorted(p.name for p in tmp_path.iterdir()) == ['pred', 'results']   # no leftovers


def test_bag_writer_never_deletes_what_is_not_a_bag(jpeg_bag, tmp_path):
    plain = tmp_path / 'file.txt'
    plain.write_text('keep')
    folder = tmp_path / 'folder'
    folder.mkdir()
    (folder / 'data.csv').write_text('keep')
    for path in (plain, folder):
        with pytest.raises(bags.BagError, match='exists already'):
            bags.BagWriter(path)
        with pytest.raises(bags.BagError, match='only a rosbag2 folder is replaced'):
            bags.BagWriter(path, overwrite=True)
    # something that appears at the path while the bag is written is kept too
    late = tmp_path / 'late'
    with pytest.raises(bags.BagError, match='is not a rosbag2 folder'):
        with bags.BagWriter(late, overwrite=True) as writer:
            writer.write('/x', 'geometry_msgs/msg/PoseStamped', 1,
                         writer.msgs.pose_stamped(1, 'map', [0, 0, 0], [0, 0, 0, 1]))
            late.mkdir()
            (late / 'important.txt').write_text('keep')
    assert plain.read_text() == 'keep' and (folder / 'data.csv').read_text() == 'keep'
    assert (late / 'important.txt').read_text() == 'keep'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file.txt', 'folder', 'late']
    # bag-from-dataset --overwrite goes through the same check
    with pytest.raises(bags.BagError, match='is not a rosbag2 folder'):
        _write(folder, overwrite=True)
    # and an older bag is replaced
    older = tmp_path / 'older'
    shutil.copytree(jpeg_bag, older)
    _write(older, overwrite=True, limit=2)
    with Reader(older) as reader:
        assert reader.message_count == 4 * 2


# ---------------------------------------------------------------------------- --out

def test_out_that_is_a_file_is_a_clear_error(raw_bag, junk_ckpt, tmp_path, capsys):
    out = tmp_path / 'results.txt'
    out.write_text('keep')
    code = cli.main(['bag-eval', str(raw_bag), '--model', str(junk_ckpt), '--image-topic',
                     RAW_TOPIC, '--gt-topic', GT_TOPIC, '--out', str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert f'--out {out} exists and is not a folder' in err and 'Traceback' not in err
    assert out.read_text() == 'keep'


# ---------------------------------------------------------------------------- bit-rot

def test_written_mcap_carries_valid_crcs(raw_bag):
    """rosbags' writer leaves every CRC at 0; the bags written here have them all."""
    path = _mcap(raw_bag)
    buf = path.read_bytes()
    recs = _records(path)
    chunks = [r for r in recs if r[1] == 0x06]
    assert len(chunks) >= 4
    for pos, _, _ in chunks:
        body = pos + 9
        size, crc = struct.unpack_from('<QI', buf, body + 16)
        (n,) = struct.unpack_from('<I', buf, body + 28)
        assert n == 0      # no compression: the records follow their u64 length
        assert crc != 0 and crc == zlib.crc32(buf[body + 40:body + 40 + size])
    data_end = next(r for r in recs if r[1] == 0x0F)[0]
    assert struct.unpack_from('<I', buf, data_end + 9)[0] == zlib.crc32(buf[:data_end])
    footer = recs[-1][0]
    summary_start, _, summary_crc = struct.unpack_from('<QQI', buf, footer + 9)
    assert summary_crc == zlib.crc32(buf[summary_start:footer + 25])
    with bags.Bag(raw_bag) as bag:
        assert not bag.verify()


def _rot(bag: Path, dst: Path, seed: int = 9) -> tuple[Path, int]:
    """Copy ``bag`` and change 1000 bytes in the middle of its chunk area (seeded).

    In the data of the chunk that holds the middle of the chunk area, where bit-rot in a
    large bag almost always lands (chunk headers are a few dozen bytes of a megabyte).
    """
    shutil.copytree(bag, dst)
    path = _mcap(dst)
    chunks = [r for r in _records(path) if r[1] == 0x06]
    middle = (chunks[0][0] + chunks[-1][0] + chunks[-1][2]) // 2
    pos, _, length = next(c for c in chunks if c[0] <= middle < c[0] + 9 + c[2])
    buf = bytearray(path.read_bytes())
    start = pos + 9 + length // 2 - 500
    rng = np.random.default_rng(seed)
    noise = rng.integers(1, 256, 1000, dtype=np.uint8)
    buf[start:start + 1000] = (np.frombuffer(buf[start:start + 1000], np.uint8) ^ noise).tobytes()
    path.write_bytes(bytes(buf))
    return dst, start


@pytest.mark.parametrize('which', ['raw', 'jpeg'])
def test_bitrot_in_an_mcap_chunk_is_an_error_naming_the_file(which, raw_bag, jpeg_bag,
                                                             junk_ckpt, tmp_path, capsys):
    src = raw_bag if which == 'raw' else jpeg_bag
    bag, _ = _rot(src, tmp_path / f'rotten_{which}')
    topic = RAW_TOPIC if which == 'raw' else JPEG_TOPIC
    code = cli.main(['bag-eval', str(bag), '--model', str(junk_ckpt), '--image-topic', topic,
                     '--gt-topic', GT_TOPIC, '--out', str(tmp_path / 'results')])
    err = capsys.readouterr().err
    assert code == 1, err
    assert str(bag) in err and 'bag is damaged' in err and _mcap(bag).name in err
    assert 'CRC mismatch' in err and '--allow-damaged' in err
    assert not (tmp_path / 'results').exists()


@pytest.mark.slow   # trains, evaluates a bag or runs the CLI in a subprocess, 1.5-5 s
def test_allow_damaged_evaluates_the_intact_chunks_and_reports_the_rest(raw_bag, ckpt,
                                                                        tmp_path, capsys):
    bag, start = _rot(raw_bag, tmp_path / 'rotten')
    intact = load_per_frame(_eval(raw_bag, ckpt, tmp_path / 'intact') / 'per_frame.txt')
    capsys.readouterr()
    out = _eval(bag, ckpt, tmp_path / 'out', allow_damaged=True)
    printed = capsys.readouterr().out
    assert f'WARNING: {bag} is damaged; skipped (--allow-damaged)' in printed
    assert 'CRC mismatch' in printed

    info = json.loads((out / 'bag_eval.json').read_text())
    damage = info['damage']
    [chunk] = damage['damaged_chunks']
    assert chunk['file'] == _mcap(bag).name
    assert chunk['byte_offset'] <= start < chunk['byte_offset'] + chunk['bytes']
    assert chunk['reason'].startswith('CRC mismatch')
    skipped = damage['skipped_messages']
    assert set(skipped) == {RAW_TOPIC, GT_TOPIC, '/tf', '/camera/camera_info'}
    assert skipped[RAW_TOPIC] >= 1
    assert info['images'] == FRAMES - skipped[RAW_TOPIC]
    assert json.loads((out / 'summary.json').read_text())['info']['damage'] == damage
    # images whose ground truth was in the chunk are counted as outside the tolerance
    assert 0 <= info['outside_tolerance'] <= skipped[GT_TOPIC]
    per = load_per_frame(out / 'per_frame.txt')
    assert len(per['names']) == info['scored'] == info['images'] - info['outside_tolerance']
    # the missing images are the chunk's: within its time span
    seen = np.array([float(n.split('_', 1)[1]) for n in per['names']]
                    + info['outside_tolerance_stamps'])
    missing = [sec for sec in (float(n.split('_', 1)[1]) for n in intact['names'])
               if not np.any(np.abs(seen - sec) < 1e-6)]
    assert len(missing) == skipped[RAW_TOPIC]
    for sec in missing:
        assert chunk['log_start_ns'] / 1e9 - 1e-6 <= sec <= chunk['log_end_ns'] / 1e9 + 1e-6
    # what was scored is exactly what the intact bag gives for those images
    ref = {n.split('_', 1)[1]: k for k, n in enumerate(intact['names'])}
    rows = [ref[n.split('_', 1)[1]] for n in per['names']]
    np.testing.assert_allclose(per['position'], intact['position'][rows], atol=1e-5)
    np.testing.assert_allclose(per['pos_err_m'], intact['pos_err_m'][rows], atol=1e-5)


def _damage_sqlite(bag: Path) -> dict[str, int]:
    """Spoil three messages of a sqlite3 bag in place; return their log times by kind."""
    ts = bags.typestore()
    db = next(bag.glob('*.db3'))
    con = sqlite3.connect(db)
    topics = {name: tid for tid, name in con.execute('SELECT id, name FROM topics')}
    images = con.execute('SELECT id, timestamp, data FROM messages WHERE topic_id = ? '
                         'ORDER BY id', (topics[JPEG_TOPIC],)).fetchall()
    poses = con.execute('SELECT id, timestamp FROM messages WHERE topic_id = ? ORDER BY id',
                        (topics[GT_TOPIC],)).fetchall()
    # image #3: cut to 8 bytes (no header); image #5: CDR intact, JPEG bytes zeroed;
    # ground truth #8: garbage CDR
    con.execute('UPDATE messages SET data = ? WHERE id = ?', (images[3][2][:8], images[3][0]))
    msg = ts.deserialize_cdr(images[5][2], 'sensor_msgs/msg/CompressedImage')
    msg = dataclasses.replace(msg, data=np.zeros(len(msg.data), np.uint8))
    con.execute('UPDATE messages SET data = ? WHERE id = ?',
                (bytes(ts.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage')),
                 images[5][0]))
    con.execute('UPDATE messages SET data = ? WHERE id = ?', (b'\x00\x01\x00', poses[8][0]))
    con.commit()
    con.close()
    return {'cut': images[3][1], 'zeroed': images[5][1], 'pose': poses[8][1]}


@pytest.mark.slow   # trains, evaluates a bag or runs the CLI in a subprocess, 1.5-5 s
def test_undecodable_messages_in_sqlite3_are_counted(ckpt, junk_ckpt, tmp_path, capsys):
    bag = _write(tmp_path / 'jpeg_sqlite', compressed=True, storage='sqlite3')
    times = _damage_sqlite(bag)
    code = cli.main(['bag-eval', str(bag), '--model', str(junk_ckpt), '--image-topic',
                     JPEG_TOPIC, '--gt-topic', GT_TOPIC, '--out', str(tmp_path / 'results')])
    err = capsys.readouterr().err
    assert code == 1 and str(bag) in err and 'bag is damaged' in err
    assert f'undecodable message on {JPEG_TOPIC} image #3' in err and '--allow-damaged' in err

    out = _eval(bag, ckpt, tmp_path / 'out', allow_damaged=True)
    printed = capsys.readouterr().out
    assert 'image #5' in printed and 'skipped (--allow-damaged)' in printed
    info = json.loads((out / 'bag_eval.json').read_text())
    found = {(u['topic'], u['index'], u['log_ns']) for u in
             info['damage']['undecodable_messages']}
    assert found == {(JPEG_TOPIC, 3, times['cut']), (JPEG_TOPIC, 5, times['zeroed']),
                     (GT_TOPIC, None, times['pose'])}
    assert info['damage']['skipped_messages'] == {JPEG_TOPIC: 2, GT_TOPIC: 1}
    # image 8 lost its ground truth (neighbours 0.1 s away > 0.05 s): counted as outside
    assert info['images'] == FRAMES and info['outside_tolerance'] == 1
    names = load_per_frame(out / 'per_frame.txt')['names']
    assert [int(n.split('_')[0]) for n in names] == [i for i in range(FRAMES)
                                                     if i not in (3, 5, 8)]
    assert info['scored'] == FRAMES - 3


def test_a_damaged_chunk_header_is_stepped_over(raw_bag, tmp_path):
    """Noise over a chunk's header (its length): reading goes on at the next indexed chunk."""
    bag = tmp_path / 'rotten_header'
    shutil.copytree(raw_bag, bag)
    path = _mcap(bag)
    chunks = [r for r in _records(path) if r[1] == 0x06]
    pos = chunks[3][0]
    buf = bytearray(path.read_bytes())
    buf[pos:pos + 64] = np.random.default_rng(3).integers(0, 256, 64, np.uint8).tobytes()
    buf[pos] = 0x00         # an opcode no record has
    path.write_bytes(bytes(buf))
    with bags.Bag(bag) as b:
        with pytest.raises(bags.BagDamagedError, match='unreadable record structure'):
            bags.scan_bag(b, RAW_TOPIC, gt_topic=GT_TOPIC)
    with bags.Bag(bag) as b:
        scan = bags.scan_bag(b, RAW_TOPIC, gt_topic=GT_TOPIC, allow_damaged=True)
        [gap] = scan.damage.chunks
        assert gap['byte_offset'] == pos and pos + gap['bytes'] == chunks[4][0]
        assert 0 < len(scan) < FRAMES and scan.gt_ok.sum() >= len(scan) - 1
        # every image left decodes, in the order the scan saw them
        images = list(bags.iter_images(b, scan))
        assert [i for i, _ in images] == list(range(len(scan)))
        assert [bags.header_stamp_ns(m.data) for _, m in images] == scan.stamps_ns.tolist()


def test_zstd_chunks_are_salvaged_and_checked(tmp_path):
    """zstd chunks (rosbags' decompressors) of a cut file are read; their CRCs are checked."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    m, ts = bags.Messages(), bags.typestore()
    rng = np.random.default_rng(3)
    path = tmp_path / 'zstd_bag'
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    conn = writer.add_connection(RAW_TOPIC, bags.IMAGE, typestore=ts)
    stamps = [(1_700_000_000 + k) * bags.NS for k in range(6)]
    for ns in stamps:     # 0.9 MB of noise each: two images per 1 MiB chunk
        rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        writer.write(conn, ns, ts.serialize_cdr(m.image(ns, 'cam', rgb), bags.IMAGE))
    writer.close()
    mcap = _mcap(path)
    chunks = [r for r in _records(mcap) if r[1] == 0x06]
    assert len(chunks) == 3
    assert bags.mcap._chunk_data(mcap.read_bytes()[chunks[0][0] + 9:])[2] == 0   # rosbags: no CRC
    bags.mcap.write_crcs(mcap)
    with bags.Bag(path) as bag:
        assert not bag.verify()
        assert [msg.log_ns for msg in bag.messages()] == stamps
    # cut in the middle of the last chunk: the two complete ones are decompressed and read
    cut = tmp_path / 'cut.mcap'
    cut.write_bytes(mcap.read_bytes()[:chunks[2][0] + chunks[2][2] // 2])
    got = []
    with bags.Bag(cut) as bag, pytest.raises(bags.BagCorruptError) as info:
        assert bag.damaged
        for msg in bag.messages():
            got.append(msg.log_ns)
    assert got == stamps[:4] and info.value.messages_read == 4
    # bit-rot in the compressed data of the middle chunk: found, and the others still read
    buf = bytearray(mcap.read_bytes())
    middle = chunks[1][0] + 9 + chunks[1][2] // 2
    buf[middle:middle + 64] = bytes(b ^ 0x5A for b in buf[middle:middle + 64])
    mcap.write_bytes(bytes(buf))
    with bags.Bag(path) as bag:
        damage = bag.verify()
        assert [c['chunk'] for c in damage.chunks] == [1]
        assert [msg.log_ns for msg in bag.messages()] == stamps[:2] + stamps[4:]


def test_atomic_folder_publishes_only_a_finished_folder(tmp_path):
    """What BagWriter and frame extraction build appears whole, or not at all."""
    from camreloc_ros.core.io import atomic_folder

    def build(name: str, **kw) -> None:
        with atomic_folder(tmp_path / 'out', **kw) as tmp:
            tmp.mkdir()
            (tmp / name).write_text(name)

    with pytest.raises(RuntimeError, match='crash'):
        with atomic_folder(tmp_path / 'out') as tmp:
            tmp.mkdir()
            (tmp / 'half').write_text('x')
            raise RuntimeError('crash')
    assert list(tmp_path.iterdir()) == []
    build('a')
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['a']
    with pytest.raises(OSError):        # exists: kept unless the caller allows replacing it
        build('b')
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['a']
    build('b', overwrite=True)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['b']
    assert [p.name for p in tmp_path.iterdir()] == ['out']      # no temporaries left
