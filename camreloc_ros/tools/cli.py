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
``camreloc --help`` and ``camreloc SUBCOMMAND --help`` stay fast (no torch). ``camreloc node``
hands its arguments to rclpy; ``camreloc node --help`` lists the node's parameters.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap

from camreloc_ros import __version__
from camreloc_ros.tools.common import logging_for

SUBCOMMANDS = {
    'demo': ('camreloc_ros.tools.demo', 'the main job: train, evaluate and replay live'),
    'train': ('camreloc_ros.tools.train', 'train a pose model on a dataset or bags'),
    'evaluate': ('camreloc_ros.tools.evaluate', 'score a checkpoint on a dataset'),
    'reconstruct': ('camreloc_ros.tools.reconstruct',
                    'posed dataset from a plain recording (structure from motion)'),
    'map': ('camreloc_ros.tools.map', 'build a localization map for pose refinement'),
    'search': ('camreloc_ros.tools.search', 'Optuna hyper-parameter search (resumable)'),
    'saliency': ('camreloc_ros.tools.saliency', 'saliency maps of a checkpoint'),
    'export': ('camreloc_ros.tools.export', 'export a checkpoint to ONNX (with its metadata)'),
    'node': ('camreloc_ros.ros.localizer_node', 'run the live localizer node'),
    'bag-eval': ('camreloc_ros.tools.bag_eval', 'evaluate a checkpoint on a rosbag'),
    'bag-from-dataset': ('camreloc_ros.tools.bag_from_dataset', 'write a dataset as a rosbag'),
    'bag-play': ('camreloc_ros.tools.bag_play', 'publish a rosbag into live ROS 2'),
}
WHEN = {'startup': 'read at start-up only', 'configure': 'applied at configure',
        'live': 'applied at once'}


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument('-v', '--verbose', action='count', default=0,
                       help='also print debug messages')
    group.add_argument('-q', '--quiet', action='store_true',
                       help='print only warnings, errors and the results')


def _verbosity(args: argparse.Namespace) -> int:
    return -1 if args.quiet else args.verbose


def _top_parser() -> argparse.ArgumentParser:
    width = max(map(len, SUBCOMMANDS)) + 2
    listing = '\n'.join(f'  {name:<{width}}{help_}' for name, (_, help_) in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog='camreloc', description='Camera relocalization tools (camreloc_ros).',
        epilog=f'subcommands:\n{listing}\n\n`camreloc SUBCOMMAND --help` lists its options.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--version', action='version', version=f'camreloc {__version__}',
                        help='print the camreloc_ros version and exit')
    _add_verbosity(parser)
    parser.add_argument('command', metavar='SUBCOMMAND', choices=sorted(SUBCOMMANDS),
                        help='the tool to run (see the list below)')
    parser.add_argument('args', nargs=argparse.REMAINDER, metavar='...',
                        help='arguments of the subcommand')
    return parser


def node_help(parameters: list) -> str:
    """``camreloc node --help``: how to start the node and every parameter it takes."""
    lines = ['usage: camreloc node [--ros-args [-p NAME:=VALUE ...] [--params-file FILE] '
             '[-r FROM:=TO ...]]', '']
    lines += textwrap.wrap('Run the live localizer node (as `ros2 run camreloc_ros localizer`); '
                           'the arguments go to rclpy. Topics, QoS and covariance: '
                           'docs/live_node.md.', 99)
    lines += ['', 'parameters (-p NAME:=VALUE):']
    for p in parameters:
        default = str(p.default).lower() if isinstance(p.default, bool) else repr(p.default)
        facts = [type(p.default).__name__, WHEN.get(p.when, p.when)]
        if p.limits is not None:
            facts.append(f'{p.limits[0]:g}..{p.limits[1]:g}')
        if p.choices:
            facts.append('one of ' + ', '.join(p.choices))
        lines.append(f'  {p.name} (default {default}; {"; ".join(facts)})')
        lines += textwrap.wrap(p.description, 95, initial_indent=' ' * 6,
                               subsequent_indent=' ' * 6)
    return '\n'.join(lines) + '\n'


def subcommand_parser(name: str) -> argparse.ArgumentParser:
    """Build the options of ``camreloc NAME`` (imports the tool's module, not torch itself)."""
    sub = argparse.ArgumentParser(prog=f'camreloc {name}', description=SUBCOMMANDS[name][1])
    _add_verbosity(sub)
    importlib.import_module(SUBCOMMANDS[name][0]).add_arguments(sub)
    return sub


def _node(argv: list[str]) -> int:
    own = argv[:argv.index('--ros-args')] if '--ros-args' in argv else argv   # not rclpy's
    if '-h' in own or '--help' in own:
        from camreloc_ros.ros.parameters import PARAMETERS   # no torch, no node
        sys.stdout.write(node_help(PARAMETERS))
        return 0
    from camreloc_ros.ros import localizer_node
    return localizer_node.main(['camreloc'] + argv) or 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``camreloc [-v|-q] SUBCOMMAND ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _top_parser()
    if not argv or argv[0] in ('-h', '--help'):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv)
    if args.command == 'node':
        with logging_for(_verbosity(args)):
            return _node(args.args)
    sub_args = subcommand_parser(args.command).parse_args(args.args)
    sub_args.argv = args.args   # what the user typed, for tools that relaunch (torchrun)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    verbosity = _verbosity(sub_args) if sub_args.quiet or sub_args.verbose else _verbosity(args)
    with logging_for(verbosity):
        try:
            module.from_args(sub_args)
        except (ValueError, OSError, RuntimeError) as exc:
            print(f'camreloc {args.command}: error: {exc}', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
