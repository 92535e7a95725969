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

"""The thesis' comparisons on the shared HoloLens walk -> ``docs/results.md``.

Split as ``camreloc train`` makes it: the test blocks (blocks of 25 frames, every 4th) are
never trained or validated on; validation is held-out blocks of the training side
(``data.val_block`` / ``data.val_every``): 248 train / 50 val / 75 test frames. Every
configuration trains for a fixed number of epochs and is scored on the test blocks twice,
each row marked with its checkpoint: the **last** epoch and **best-on-val** (``best.pt``,
selected on the validation blocks, never on test frames). Every table shows the simple
baselines next to the methods: the oracle nearest training pose (a perfect retrieval) and
image retrieval (top-1 GeM descriptor of the ImageNet trunk over the training frames).
Comparisons: NH vs QEH; Regressor vs Spatial-LSTM vs Temporal-GRU (window 8); frozen trunk
vs partly fine-tuned trunk.
"""

import argparse
from datetime import date
import json
import os
from pathlib import Path
import platform
import re
import time

import numpy as np
import torch

from camreloc_ros.core.data.formats import read_dataset
from camreloc_ros.core.data.split import split_dataset
from camreloc_ros.core.data.transforms import read_rgb
from camreloc_ros.core.evaluation.metrics import (atomic_write_text, format_table, pose_errors,
                                                  summarize)
from camreloc_ros.core.localization.retrieval import GlobalDescriptor
from camreloc_ros.core.models.backbones import SPECS
from camreloc_ros.core.models.pose_model import PoseModel
from camreloc_ros.core.localization.refiner import pose_neighbours
from camreloc_ros.core.training.trainer import pose_targets, train_conf
from camreloc_ros.tools import evaluate, train
from camreloc_ros.tools.common import load_frames, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir() / 'hololens-office'

CONFIGS = {
    'Regressor, QEH (default)': {},
    'Regressor, NH': {'loss': {'name': 'nh'}},
    'Spatial-LSTM, QEH': {'model': {'head': {'name': 'lstm'}}},
    'Temporal-GRU (T=8), QEH': {'model': {'head': {'name': 'gru', 'window': 8}}},
    'Regressor, QEH, frozen trunk': {'model': {'backbone': {'trainable_stages': 0}}},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run(name: str, overrides: dict, epochs: int, out: Path, stages: int | None) -> dict:
    """Train one configuration; score its last and best-on-val checkpoints on the test blocks.

    Returns ``{'last': (summary, uncertainty), 'best': (...), 'best_epoch', 'minutes'}``.
    """
    conf = {'train': {'epochs': epochs}, 'data': {'format': 'posed'}}
    if stages is not None:
        conf['model'] = {'backbone': {'trainable_stages': stages}}
    conf = _merge(conf, overrides)
    run_dir = out / name.replace(' ', '_').replace(',', '').replace('(', '').replace(')', '')
    t0 = time.monotonic()
    train.main(conf, {'data': DATA, 'out': run_dir}, resume=(run_dir / 'last.pt').is_file(),
               progress_bars=False, log=lambda s: None)
    result = {'minutes': (time.monotonic() - t0) / 60.0}
    history = json.loads((run_dir / 'history.json').read_text())
    result['best_epoch'] = min(history, key=lambda r: r['val_score'])['epoch']
    for which in ('last', 'best'):
        eval_dir = evaluate.main({'split': 'test'},
                                 {'checkpoint': run_dir / f'{which}.pt', 'data': DATA,
                                  'out': run_dir / f'eval_{which}'})
        summary = json.loads((eval_dir / 'summary.json').read_text())
        result[which] = (summary['summary'], summary['uncertainty'])
    return result


def baselines(device: str) -> dict:
    """Rows of the simple baselines on the test blocks, database = the training frames.

    Pose regressors behave much like image retrieval (Sattler et al., CVPR 2019). The oracle
    takes, for each test frame, the training pose nearest to its true pose (position +
    rotation / 10 deg): what a *perfect* retrieval would score. Image retrieval takes the
    pose of the training image whose GeM descriptor (ImageNet EfficientNet-Lite0 trunk, no
    training on this scene) is most similar: what a method must beat to be worth training.
    """
    dataset = read_dataset(DATA, 'posed')
    tr, _ = load_frames(DATA, train_conf({'data': {'format': 'posed'}}), log=lambda s: None)
    test = split_dataset(dataset, 'test').frames
    train_pos, train_quat = pose_targets(tr)
    test_pos, test_quat = pose_targets(test)
    poses = np.stack([f.pose_c2w for f in tr])
    oracle = [int(pose_neighbours(poses, p, q, 1)[0]) for p, q in zip(test_pos, test_quat)]
    describe = GlobalDescriptor(PoseModel(train_conf({})['model']), 3.0, device)
    db = describe([read_rgb(f.image_path) for f in tr])
    query = describe([read_rgb(f.image_path) for f in test])
    top1 = np.argmax(query @ db.T, axis=1)
    rows = {}
    for name, idx in ((f'baseline: image retrieval top-1 (GeM, ImageNet trunk, {len(tr)} '
                       'training images)', top1),
                      (f'baseline: oracle nearest training pose ({len(tr)} frames; not a '
                       'method)', oracle)):
        rows[name] = summarize(*pose_errors(train_pos[idx], train_quat[idx], test_pos,
                                            test_quat))
    return rows


def kept_sections(doc: str | Path) -> str:
    """Sections other benchmarks keep in the same file (``<!-- name:start -->`` .. ``end``).

    ``benchmarks/refine.py`` writes its "Refined poses" section into results.md between
    such markers; rewriting the accuracy part must not delete it.
    """
    path = Path(doc)
    text = path.read_text() if path.is_file() else ''
    found = re.finditer(r'<!-- ([\w-]+):start -->.*?<!-- \1:end -->', text, flags=re.S)
    return ''.join('\n' + m.group(0) + '\n' for m in found)


def _fmt(value) -> str:
    return 'n/a' if value is None else f'{value:+.2f}'


def main(argv: list[str] | None = None) -> str:
    """Run all configurations, print the table and write docs/results.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--epochs', type=int, default=None,
                        help='default: the training default (train.epochs)')
    parser.add_argument('--stages', type=int, default=None,
                        help='trainable trunk stages of the fine-tuned configurations '
                        '(default: the model default)')
    parser.add_argument('--only', nargs='*', help='subset of configuration names')
    parser.add_argument('--out', default=str(ROOT / 'runs' / 'accuracy'))
    parser.add_argument('--doc', default=str(ROOT / 'docs' / 'results.md'))
    args = parser.parse_args(argv)
    args.epochs = args.epochs or train_conf({})['train']['epochs']
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    load0 = os.getloadavg()[0]
    rows, minutes, spearman, results = {}, {}, {}, {}
    for name, overrides in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        print(f'== {name}', flush=True)
        res = run(name, overrides, args.epochs, Path(args.out), args.stages)
        results[name] = res
        minutes[name] = res['minutes']
        for which in ('last', 'best'):
            label = (f'{name} [last, epoch {args.epochs}]' if which == 'last' else
                     f'{name} [best-on-val, epoch {res["best_epoch"]}]')
            rows[label] = res[which][0]
            unc = res[which][1]
            spearman[label] = (unc['position_spearman'], unc['orientation_spearman'])
            print(format_table({label: rows[label]}), flush=True)
    rows.update(baselines(device))
    table = format_table(rows)
    default_stages = SPECS['efficientnet_lite0'].default_trainable
    stages = default_stages if args.stages is None else args.stages
    stage_note = (f'{stages} trainable trunk stage{"s" if stages != 1 else ""}'
                  + (' (the default)' if stages == default_stages else
                     f' (the default is {default_stages})'))
    where = (torch.cuda.get_device_name() if device == 'cuda' else
             f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU '
             f'threads, load average {load0:.2f} at the start')
    timing = '\n'.join(f'- {k}: {v:.1f} min training ({device})' for k, v in minutes.items())
    calib = '\n'.join(f'| {k} | {_fmt(p)} | {_fmt(r)} |' for k, (p, r) in spearman.items())
    (Path(args.out) / 'accuracy.json').write_text(json.dumps(
        {'rows': rows, 'minutes': minutes, 'epochs': args.epochs, 'stages': stages,
         'device': where}, indent=1))
    doc = f'''# Accuracy on the shared HoloLens office walk

Measured {date.today().isoformat()} on {where}, torch {torch.__version__};
EfficientNet-Lite0 (ImageNet weights), {stage_note}, input 224x224, Adam lr 2e-4, L1
losses, batch 32 (windows of 8 for the GRU), {args.epochs} epochs.

Split (as `camreloc train` makes it): blocks of 25 consecutive frames, every 4th block is
**test** (75 frames: never trained or validated on); of the rest, every 8th block is
**validation** (50 frames); 248 frames train. Each configuration is scored on the test
frames with two checkpoints, marked in the row: **last** (the last epoch, no selection) and
**best-on-val** (`best.pt`, the epoch with the best validation score, median m + median
deg / 10, selected on the validation blocks only).

Baselines in the same table: **image retrieval** (the pose of the most similar training
image by a GeM descriptor of the ImageNet-trained trunk, no training on this scene) and the
**oracle nearest training pose** (a perfect retrieval; not a method). Both use the 248
training frames as the database.

{table}

{timing}

Predicted uncertainty vs actual error on the test frames (Spearman rank correlation
between the covariance's std and the error; positive = larger variance goes with larger
error, what robot_localization needs):

| configuration | position | orientation |
|---|---|---|
{calib}

Regenerate: `make accuracy` (or `.venv/bin/python benchmarks/accuracy.py --epochs N`).
'''
    atomic_write_text(args.doc, doc + kept_sections(args.doc))
    print('\n' + table + f'\n\nwritten to {args.doc}')
    return table


if __name__ == '__main__':
    main()
