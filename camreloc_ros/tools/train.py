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

"""``camreloc train``: fit a pose model on a dataset folder (or bags, see bag tools).

With no config it trains the project's default (EfficientNet-Lite0 + Regressor, QEH loss).
Outputs in ``--out``: ``epoch_NNN.pt`` per epoch, ``last.pt`` (resumable), ``best.pt`` (by
validation median), ``history.json`` and ``train_conf.yaml``. With ``--bag`` the images
and interpolated ground truth of rosbags are extracted once into a cache
(:func:`camreloc_ros.core.bags.extract_frames`) and trained on like a dataset folder.
"""

import argparse
import json
import logging
import os
from pathlib import Path
import sys

import yaml

from camreloc_ros.core.config import deep_update, load_yaml, parse_overrides
from camreloc_ros.core.data.formats import FORMATS
from camreloc_ros.core.evaluation.metrics import atomic_write_text
from camreloc_ros.tools.common import (add_bag_topic_arguments, FrameSplit, frames_from_paths,
                                       refuse_output_in_inputs, split_info, tool_logging)

logger = logging.getLogger('camreloc_ros')


RUN_FILES = ('last.pt', 'best.pt', 'history.json', 'train_conf.yaml', 'split.json')


def existing_run(out: Path) -> list[str]:
    """Names of training outputs already in ``out`` (empty when it holds no run)."""
    if not out.is_dir():
        return []
    found = [n for n in RUN_FILES if (out / n).exists()]
    return found + sorted(p.name for p in out.glob('epoch_*.pt'))


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuse to mix two runs in one folder: training never overwrites another run's files."""
    if out.exists() and not out.is_dir():
        raise ValueError(f'--out {out} is a file; expected a run folder')
    found = existing_run(out)
    if not found:
        return
    shown = ', '.join(found[:4]) + (' ...' if len(found) > 4 else '')
    if not resume:
        raise ValueError(f'run folder {out} already holds a training run ({shown}); pass '
                         '--resume to continue it, or choose a new --out')
    if not (out / 'last.pt').is_file():
        raise ValueError(f'--resume: run folder {out} holds {shown} but no last.pt to resume '
                         'from; choose a new --out')


PATH_KEYS = {'data', 'val_data', 'bags', 'val_bags', 'out'}


def main(conf: dict, paths: dict, resume: bool = False, log=None,
         progress_bars: bool = True) -> Path:
    """Train; ``paths``: ``out`` and the data (:func:`frames_from_paths`). Returns ``out``.

    Everything is checked before anything is written: the config (types and ranges), the run
    folder (an existing run is continued only with ``resume``) and, when resuming, that
    ``last.pt`` was trained with the same model and loss. ``train_conf.yaml`` is written last.
    """
    if log is None:
        tool_logging()
        log = logger.info
    from camreloc_ros.core.training.trainer import train_conf   # torch: not needed for --help

    unknown = sorted(set(paths) - PATH_KEYS)
    if unknown:
        raise ValueError(f'unknown paths key(s) {", ".join(map(repr, unknown))}; expected '
                         f'{", ".join(sorted(PATH_KEYS))} (frames already loaded: use fit)')
    conf = train_conf(conf)
    out = Path(paths['out'])
    refuse_output_in_inputs('--out', out, [('dataset', paths.get('data')),
                                           ('validation dataset', paths.get('val_data'))]
                            + [('bag', b) for b in (paths.get('bags') or [])
                               + (paths.get('val_bags') or [])])
    check_out_dir(out, resume)   # every rank, before the rendezvous: nothing written yet
    rank0 = os.environ.get('RANK', '0') == '0'
    split = frames_from_paths(conf, paths, log=log if rank0 else _quiet)
    return fit(conf, split, out, resume=resume, log=log, progress_bars=progress_bars)


def fit(conf: dict, split: FrameSplit | tuple, out: Path, resume: bool = False, log=None,
        progress_bars: bool = True) -> Path:
    """Train on frames already loaded (``(train, val)``): :func:`main` after the data.

    For Python callers that pick frames themselves (benchmarks); a plain tuple is recorded as
    'given by the caller' in ``split.json``.
    """
    log = log or logger.info
    from camreloc_ros.core.training import distributed   # torch: not needed for --help
    from camreloc_ros.core.training.trainer import train_conf, Trainer

    conf = train_conf(conf)
    out = Path(out)
    check_out_dir(out, resume)
    dist = distributed.init(conf['train']['device'])
    try:
        if not dist.main:
            log = _quiet
        train, val = split
        info = getattr(split, 'info', None) or split_info(train, val, None,
                                                          'given by the caller')
        loss = 'reprojection' if conf['model']['head']['name'] == 'scr' \
            else conf['loss']['name'].upper()
        log(f'training {conf["model"]["backbone"]["name"]} + {conf["model"]["head"]["name"]} '
            f'with {loss} on {len(train)} frames '
            f'(validation {len(val)}) -> {out}'
            + (f' on {dist.world} processes ({dist.device.type})' if dist.world > 1 else ''))
        if conf['model']['head']['name'] == 'scr':   # scene coordinates: one process
            if dist.world > 1:
                raise ValueError('model.head.name=scr trains on one process (no --nproc)')
            from camreloc_ros.core.training.scr import ScrTrainer
            trainer = ScrTrainer(conf, train, val, out, log=log, split_info=info,
                                 device=dist.device)
        else:
            trainer = Trainer(conf, train, val, out, log=log, progress_bars=progress_bars,
                              dist=dist, split_info=info)
        if resume:
            trainer.resume()
        if dist.main:
            atomic_write_text(out / 'train_conf.yaml', yaml.safe_dump(conf, sort_keys=False))
            atomic_write_text(out / 'split.json', json.dumps(info, indent=1) + '\n')
        trainer.fit()
    finally:
        distributed.shutdown(dist)
    log(f'done: {out / "last.pt"} (last), {out / "best.pt"} (best on validation)')
    return out


def _quiet(_: str) -> None:
    """Log of ranks other than 0."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``camreloc train``."""
    parser.add_argument('--data', help='dataset folder (or use --bag)')
    parser.add_argument('--format', choices=FORMATS, help='dataset layout (with --data)')
    parser.add_argument('--config', help='YAML file with overrides of the training config')
    parser.add_argument('--out', default='runs/train', help='run folder (default runs/train)')
    parser.add_argument('--resume', action='store_true',
                        help='continue from OUT/last.pt (same config)')
    parser.add_argument('--epochs', type=int, help='shortcut for train.epochs=N')
    parser.add_argument('--val-data', help='validation dataset folder (same format; default: '
                        'held-out blocks of the training side, data.val_block/val_every)')
    parser.add_argument('--nproc', type=int, default=None, metavar='N',
                        help='train on N processes with torchrun + DDP (gloo on CPU, nccl with '
                        'one GPU each); several machines: run torchrun yourself (docs)')
    parser.add_argument('overrides', nargs='*', metavar='key=value',
                        help='config overrides, e.g. loss.name=nh model.head.name=lstm')
    bag = parser.add_argument_group('training from rosbags (instead of --data)')
    bag.add_argument('--bag', action='append', metavar='BAG',
                     help='training bag (repeatable); without --val-bag its held-out blocks '
                     'validate')
    bag.add_argument('--val-bag', action='append', metavar='BAG', help='validation bag')
    add_bag_topic_arguments(bag)


def conf_from_args(args: argparse.Namespace) -> dict:
    """Config file, then key=value overrides, then shortcuts."""
    from camreloc_ros.core.training.trainer import train_conf

    conf = load_yaml(args.config) if args.config else {}
    shortcuts = {}
    if args.format is not None:
        shortcuts['data'] = {'format': args.format}
    if args.epochs is not None:
        shortcuts['train'] = {'epochs': args.epochs}
    keys = ('image_topic', 'gt_topic', 'gt_tf', 'gt_tolerance')
    bag = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if bag:
        shortcuts.setdefault('data', {})['bag'] = bag
    return train_conf(deep_update(deep_update(conf, parse_overrides(args.overrides)),
                                  shortcuts))


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == '--nproc':
            skip = True
        elif not token.startswith('--nproc='):
            out.append(token)
    return out


def launch_torchrun(nproc: int, argv: list[str]) -> None:
    """``camreloc train --nproc N ...``: torchrun's own launcher on this machine.

    Equivalent to ``torchrun --standalone --nproc_per_node=N -m camreloc_ros.tools.train
    ...``; for several machines use torchrun's rendezvous flags directly (docs/training.md).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    args = [f'--nproc_per_node={nproc}', '--standalone', '-m', 'camreloc_ros.tools.train']
    try:
        torchrun(args + _without_nproc(argv))
    except ChildFailedError as exc:
        raise RuntimeError(f'training on {nproc} processes failed ({exc.name}); the errors of '
                           'the ranks are printed above. Continue with --resume') from None


def from_args(args: argparse.Namespace) -> Path:
    """Run from parsed command-line arguments (everything checked before any work)."""
    conf = conf_from_args(args)
    check_out_dir(Path(args.out), args.resume)
    if args.nproc is not None:
        if args.nproc < 1:
            raise ValueError(f'--nproc must be >= 1, got {args.nproc}')
        if args.nproc > 1 and 'WORLD_SIZE' not in os.environ:
            launch_torchrun(args.nproc, getattr(args, 'argv', None) or sys.argv[1:])
            return Path(args.out)
    if not getattr(args, 'bag', None) and args.data and args.format is None \
            and not args.config:
        raise ValueError('--format is required with --data (or data.format in --config)')
    return main(conf, {'data': args.data, 'out': args.out, 'val_data': args.val_data,
                       'bags': getattr(args, 'bag', None), 'val_bags': args.val_bag},
                resume=args.resume)


if __name__ == '__main__':   # torchrun -m camreloc_ros.tools.train ... (one process per rank)
    from camreloc_ros.tools.cli import main as cli_main
    sys.exit(cli_main(['train'] + sys.argv[1:]))
