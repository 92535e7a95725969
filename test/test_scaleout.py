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

"""Training that scales out honestly: validation never touches test frames, checkpoints are
pruned, and torchrun DDP (gloo, 2 processes on this CPU) follows a 1-process run."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.inference.engine import InferenceEngine
from camreloc_ros.core.models.pose_model import load_checkpoint_file
from camreloc_ros.core.training.trainer import train_conf, Trainer
from camreloc_ros.tools import evaluate, train
from camreloc_ros.tools.common import load_frames, shared_data_dir
from support import wait_for_file
from test_datasets import make_7scenes, make_cambridge, make_csv, make_posed, make_tum

DATA = shared_data_dir() / 'hololens-office'
ROOT = Path(__file__).resolve().parents[1]
QUIET = {'log': lambda s: None, 'progress_bars': False}
pytestmark = pytest.mark.slow   # trains (several processes, resumes)


def _small_blocks(fmt: str) -> dict:
    return train_conf({'data': {'format': fmt, 'block': 2, 'every': 3, 'val_block': 1,
                                'val_every': 3}})


@pytest.mark.parametrize('fmt', ['posed', '7scenes', 'cambridge', 'tum', 'csv'])
def test_validation_and_test_frames_are_disjoint(tmp_path, fmt):
    root = {'posed': lambda: make_posed(tmp_path, n=12),
            '7scenes': lambda: make_7scenes(tmp_path),
            'cambridge': lambda: make_cambridge(tmp_path, n_train=8, n_test=3)[0],
            'tum': lambda: make_tum(tmp_path, n=12)[0],
            'csv': lambda: make_csv(tmp_path, n=12)[0]}[fmt]()
    conf = _small_blocks(fmt)
    logged = []
    split = load_frames(root, conf, log=logged.append)
    tr, val = split
    test = split_dataset(read_dataset(root, fmt), 'test', 2, 3).frames
    names = [{f.name for f in part} for part in (tr, val, test)]
    assert names[1], 'no validation frame'
    assert not names[1] & names[2], 'a validation frame is a test frame'
    assert not names[0] & names[2] and not names[0] & names[1]
    assert len(tr) + len(val) + len(test) == len(read_dataset(root, fmt))
    assert split.info['train'] == len(tr) and split.info['val'] == len(val)
    assert split.info['test'] == len(test)
    assert any(f'train {len(tr)}, val {len(val)}, test {len(test)}' in m for m in logged)


def test_run_records_split_and_evaluate_warns_on_validation_frames(tmp_path, capsys):
    run = tmp_path / 'run'
    conf = {'model': {'backbone': {'trainable_stages': 1}, 'head': {'width': 64}},
            'train': {'epochs': 2, 'batch_size': 8, 'keep_epochs': 1,
                      'cache_dir': str(tmp_path / 'cache')},
            'data': {'val_every': 8}}
    train.main(conf, {'data': DATA, 'out': run}, **QUIET)
    split = json.loads((run / 'split.json').read_text())
    assert (split['train'], split['val'], split['test']) == (248, 50, 75)
    # keep_epochs=1: only the newest epoch file beside last.pt and best.pt
    assert sorted(p.name for p in run.glob('*.pt')) == ['best.pt', 'epoch_002.pt', 'last.pt']
    extra = load_checkpoint_file(run / 'best.pt')['extra']
    assert extra['split']['val_names'] == split['val_names']
    capsys.readouterr()
    evaluate.main({'split': 'train', 'runtime': 'onnx', 'baselines': False},
                  {'checkpoint': run / 'best.pt', 'data': DATA, 'out': tmp_path / 'e_train'})
    out = capsys.readouterr().out
    assert 'WARNING: 50 of the 298 scored frames are validation frames' in out
    evaluate.main({'split': 'test', 'runtime': 'onnx', 'baselines': False},
                  {'checkpoint': run / 'best.pt', 'data': DATA, 'out': tmp_path / 'e_test'})
    assert 'WARNING' not in capsys.readouterr().out


# ----------------------------------------------------------------------------- torchrun DDP

def _ddp_conf(tmp_path: Path, epochs: int) -> list[str]:
    return ['--data', str(DATA), '--format', 'posed', f'train.epochs={epochs}',
            'train.batch_size=16', 'train.limit=64', 'train.seed=4', 'train.workers=0',
            'model.backbone.trainable_stages=1', 'model.head.width=128',
            f'train.cache_dir={tmp_path / "cache"}']


def _run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-m', 'camreloc_ros.tools.cli', 'train', *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_torchrun_ddp_follows_one_process_and_resumes_after_a_rank_is_killed(tmp_path):
    one = _run(_ddp_conf(tmp_path, 2) + ['--out', str(tmp_path / 'one')])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(_ddp_conf(tmp_path, 2) + ['--out', str(tmp_path / 'two'), '--nproc', '2'])
    assert two.returncode == 0, two.stderr[-3000:]
    h1 = json.loads((tmp_path / 'one' / 'history.json').read_text())
    h2 = json.loads((tmp_path / 'two' / 'history.json').read_text())
    # Same global batches (rows rank::2 of each), gradients averaged by DDP: the losses
    # differ only through batch-norm statistics of half batches and float summation order.
    for a, b in zip(h1, h2):
        assert b['loss'] == pytest.approx(a['loss'], rel=0.02), (h1, h2)
    # rank 0 alone wrote; the checkpoint loads in a 1-process run and in the node's engine
    ckpt = tmp_path / 'two' / 'last.pt'
    state = load_checkpoint_file(ckpt)
    assert not any(k.startswith('module.') for k in state['state_dict'])
    engine = InferenceEngine.from_checkpoint(ckpt, runtime='torch')
    pred = engine.predict(np.zeros((360, 540, 3), np.uint8))
    assert np.all(np.isfinite(pred.position))
    resumed = Trainer(train_conf(json.loads(json.dumps(state['extra']['train_conf']))),
                      read_dataset(DATA, 'posed').frames, [], tmp_path / 'two', **QUIET)
    assert resumed.resume() and resumed.epoch == 2

    # kill -9 one rank mid-run: torchrun stops the job; --resume continues from last.pt
    run = tmp_path / 'killed'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, '-m', 'camreloc_ros.tools.cli', 'train',
                             *_ddp_conf(tmp_path, 40), '--out', str(run), '--nproc', '2'],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_file(run / 'last.pt', proc, 300)   # the first epoch
        ranks = _rank_pids(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[-1], signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    done = torch.load(run / 'last.pt', weights_only=True)['resume']['epoch']
    assert 1 <= done < 40
    again = _run(_ddp_conf(tmp_path, done + 1) + ['--out', str(run), '--resume',
                                                  '--nproc', '2'])
    assert again.returncode == 0, again.stderr[-3000:]
    history = json.loads((run / 'history.json').read_text())
    assert [h['epoch'] for h in history] == list(range(1, done + 2))


def _rank_pids(launcher: int) -> list[int]:
    """PIDs of the worker processes torchrun started (grandchildren of the CLI process)."""
    out = subprocess.run(['ps', '-o', 'pid=,ppid=,args=', '-e'], capture_output=True,
                         text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
    children = {int(pid) for pid, ppid, _ in rows if int(ppid) == launcher}
    return sorted(int(pid) for pid, ppid, args in rows
                  if int(ppid) in children | {launcher}
                  and 'camreloc_ros.tools.train' in args)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason='no CUDA on this machine or in CI: the bf16/fp16 autocast, '
                    'channels-last and cudnn.benchmark path runs where a GPU is lent')
@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_cuda_autocast_trains_and_resumes(tmp_path, precision):
    conf = {'model': {'backbone': {'trainable_stages': 1}, 'head': {'width': 64}},
            'train': {'epochs': 2, 'batch_size': 8, 'limit': 32, 'device': 'cuda',
                      'precision': precision, 'cache_dir': str(tmp_path / 'cache')},
            'data': {'augment': {'brightness': 0.1}}}       # images through the GPU trunk
    frames = read_dataset(DATA, 'posed').frames
    trainer = Trainer(conf, frames, frames[-8:], tmp_path / 'run', **QUIET)
    record = trainer.fit()
    assert torch.backends.cudnn.benchmark
    assert np.isfinite(record['loss']) and np.isfinite(record['val_median_pos'])
    again = Trainer(dict(conf, train=dict(conf['train'], epochs=3)), frames, frames[-8:],
                    tmp_path / 'run', **QUIET)
    assert again.resume() and again.epoch == 2
    engine = InferenceEngine.from_checkpoint(tmp_path / 'run' / 'last.pt', runtime='torch',
                                             device='cuda')
    assert np.all(np.isfinite(engine.predict(np.zeros((360, 540, 3), np.uint8)).position))
