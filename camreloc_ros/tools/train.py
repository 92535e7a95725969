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
from pathlib import Path

import yaml

from camreloc_ros.core.config import deep_update, load_yaml, parse_overrides
from camreloc_ros.core.data.datasets import FORMATS, read_dataset
from camreloc_ros.core.data.split import block_split, split_dataset
from camreloc_ros.core.evaluation import atomic_write_text
from camreloc_ros.core.training import train_conf, Trainer


def load_frames(data: str | Path, conf: dict) -> tuple[list, list]:
    """Training and validation frames of a dataset folder, split as the config says."""
    dconf = conf['data']
    dataset = read_dataset(data, dconf['format'])
    train = split_dataset(dataset, 'train', dconf['block'], dconf['every']).frames
    val = split_dataset(dataset, 'test', dconf['block'], dconf['every']).frames
    return train, val


def load_bag_frames(bags: list, val_bags: list | None, conf: dict, image_topic: str,
                    gt_topic: str | None = None, gt_tf: str | None = None,
                    tolerance: float | None = None, log=print) -> tuple[list, list]:
    """Training and validation frames from bags: ``val_bags``, else a block split.

    Each bag is one sequence; without ``val_bags`` its held-out blocks (``data.block`` /
    ``data.every``, by image position in the topic) validate, as for a single-sequence
    dataset. Extracted images live in ``train.cache_dir/bag_frames`` (or the default cache).
    """
    from camreloc_ros.core import bags as bag_io

    cache = conf['train'].get('cache_dir')
    root = Path(cache) / 'bag_frames' if cache else None
    tol = bag_io.DEFAULT_TOLERANCE if tolerance is None else float(tolerance)

    def frames_of(paths: list) -> list:
        out = []
        for path in paths:
            frames, info = bag_io.extract_frames(path, image_topic, gt_topic, gt_tf, tol,
                                                 cache_dir=root, log=log)
            log(f'{path}: {info["frames"]} of {info["images"]} images with ground truth '
                f'({info["ground_truth"]})'
                + (f'; {info["outside_tolerance"]} outside {tol:g} s, not used'
                   if info['outside_tolerance'] else ''))
            out += frames
        return out

    train = frames_of(list(bags))
    if val_bags:
        return train, frames_of(list(val_bags))
    return block_split(train, conf['data']['block'], conf['data']['every'])


RUN_FILES = ('last.pt', 'best.pt', 'history.json', 'train_conf.yaml')


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


def main(conf: dict, paths: dict, resume: bool = False, log=print,
         progress_bars: bool = True) -> Path:
    """Train; ``paths``: ``data`` (dataset folder) and ``out`` (run folder). Returns ``out``.

    Everything is checked before anything is written: the config (types and ranges), the run
    folder (an existing run is continued only with ``resume``) and, when resuming, that
    ``last.pt`` was trained with the same model and loss. ``train_conf.yaml`` is written last.
    """
    conf = train_conf(conf)
    out = Path(paths['out'])
    check_out_dir(out, resume)
    train, val = paths.get('frames') or load_frames(paths['data'], conf)
    log(f'training {conf["model"]["backbone"]["name"]} + {conf["model"]["head"]["name"]} '
        f'with {conf["loss"]["name"].upper()} on {len(train)} frames '
        f'(validation {len(val)}) -> {out}')
    trainer = Trainer(conf, train, val, out, log=log, progress_bars=progress_bars)
    if resume:
        trainer.resume()
    atomic_write_text(out / 'train_conf.yaml', yaml.safe_dump(conf, sort_keys=False))
    trainer.fit()
    log(f'done: {out / "last.pt"} (last), {out / "best.pt"} (best on validation)')
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``camreloc train``."""
    parser.add_argument('--data', help='dataset folder (or use --bag)')
    parser.add_argument('--format', choices=FORMATS, help='dataset layout (with --data)')
    parser.add_argument('--config', help='YAML file with overrides of the training config')
    parser.add_argument('--out', default='runs/train', help='run folder (default runs/train)')
    parser.add_argument('--resume', action='store_true',
                        help='continue from OUT/last.pt (same config)')
    parser.add_argument('--epochs', type=int, help='shortcut for train.epochs=N')
    parser.add_argument('overrides', nargs='*', metavar='key=value',
                        help='config overrides, e.g. loss.name=nh model.head.name=lstm')
    bag = parser.add_argument_group('training from rosbags (instead of --data)')
    bag.add_argument('--bag', action='append', metavar='BAG',
                     help='training bag (repeatable); without --val-bag its held-out blocks '
                     'validate')
    bag.add_argument('--val-bag', action='append', metavar='BAG', help='validation bag')
    bag.add_argument('--image-topic', help='Image or CompressedImage topic of the bags')
    bag.add_argument('--gt-topic', help='ground truth: PoseStamped, PoseWithCovarianceStamped '
                     'or Odometry topic')
    bag.add_argument('--gt-tf', metavar='PARENT:CHILD', help='ground truth from /tf')
    bag.add_argument('--gt-tolerance', type=float, default=None,
                     help='seconds between an image and its ground truth (default 0.05)')


def conf_from_args(args: argparse.Namespace) -> dict:
    """Config file, then key=value overrides, then shortcuts."""
    conf = load_yaml(args.config) if args.config else {}
    shortcuts = {}
    if args.format is not None:
        shortcuts['data'] = {'format': args.format}
    if args.epochs is not None:
        shortcuts['train'] = {'epochs': args.epochs}
    return train_conf(deep_update(deep_update(conf, parse_overrides(args.overrides)),
                                  shortcuts))


def from_args(args: argparse.Namespace) -> Path:
    """Run from parsed command-line arguments (everything checked before any work)."""
    conf = conf_from_args(args)
    check_out_dir(Path(args.out), args.resume)
    if getattr(args, 'bag', None):
        if args.data:
            raise ValueError('give either --data or --bag, not both')
        if not args.image_topic or (args.gt_topic is None) == (args.gt_tf is None):
            raise ValueError('--bag needs --image-topic and one of --gt-topic / --gt-tf')
        frames = load_bag_frames(args.bag, args.val_bag, conf, args.image_topic,
                                 args.gt_topic, args.gt_tf, args.gt_tolerance)
        return main(conf, {'frames': frames, 'out': args.out}, resume=args.resume)
    if not args.data or (args.format is None and not args.config):
        raise ValueError('--data and --format are required (or data.format in --config, or '
                         'train from --bag)')
    return main(conf, {'data': args.data, 'out': args.out}, resume=args.resume)
