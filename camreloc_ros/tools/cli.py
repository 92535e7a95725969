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

"""The ``camreloc`` command: one subcommand per tool module.

Each tool module defines ``main(conf, paths)`` (callable from Python), ``add_arguments(parser)``
and ``from_args(args)``; modules are imported only when their subcommand runs, so
``camreloc --help`` stays fast.
"""

import argparse
import importlib
import sys

SUBCOMMANDS = {
    'demo': ('camreloc_ros.tools.demo', 'the main job: train, evaluate and replay live'),
    'train': ('camreloc_ros.tools.train', 'train a pose model on a dataset or bags'),
    'evaluate': ('camreloc_ros.tools.evaluate', 'score a checkpoint on a dataset'),
    'map': ('camreloc_ros.tools.map', 'build a localization map for pose refinement'),
    'search': ('camreloc_ros.tools.search', 'Optuna hyper-parameter search (resumable)'),
    'saliency': ('camreloc_ros.tools.saliency', 'saliency maps of a checkpoint'),
    'export': ('camreloc_ros.tools.export', 'export a checkpoint to ONNX (with its metadata)'),
    'node': ('camreloc_ros.ros.localizer_node', 'run the live localizer node'),
    'bag-eval': ('camreloc_ros.tools.bag_eval', 'evaluate a checkpoint on a rosbag'),
    'bag-from-dataset': ('camreloc_ros.tools.bag_from_dataset', 'write a dataset as a rosbag'),
    'bag-play': ('camreloc_ros.tools.bag_play', 'publish a rosbag into live ROS 2'),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``camreloc SUBCOMMAND ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog='camreloc', description='Camera relocalization tools (camreloc_ros).')
    parser.add_argument('command', choices=sorted(SUBCOMMANDS),
                        help='; '.join(f'{k}: {v[1]}' for k, v in SUBCOMMANDS.items()))
    if not argv or argv[0] in ('-h', '--help'):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    if args.command == 'node':
        return module.main(['camreloc'] + argv[1:]) or 0
    sub = argparse.ArgumentParser(prog=f'camreloc {args.command}',
                                  description=SUBCOMMANDS[args.command][1])
    module.add_arguments(sub)
    sub_args = sub.parse_args(argv[1:])
    sub_args.argv = argv[1:]   # what the user typed, for tools that relaunch (torchrun)
    try:
        module.from_args(sub_args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f'camreloc {args.command}: error: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
