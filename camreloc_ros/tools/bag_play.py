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

"""``camreloc bag-play BAG``: publish a bag into live ROS 2 where ``ros2 bag play`` is missing.

A thin command over :class:`camreloc_ros.ros.bag_player.BagPlayer`: raw CDR bytes of the bag
go out unchanged on publishers created from the recorded type names and QoS, at the
recorded rate times ``--rate-factor``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from camreloc_ros.core.bags import Bag
from camreloc_ros.core.config import merge_conf
from camreloc_ros.tools.common import require_exists, tool_logging

logger = logging.getLogger('camreloc_ros')

default_conf = {
    'rate_factor': 1.0,
    'topics': None,           # None = every topic
    'loop': False,
    'wait_subscribers': False,
    'wait_timeout': 30.0,
    'max_idle': None,         # shorten pauses longer than this (s of bag time)
    'clock': False,           # publish /clock (rosgraph_msgs/Clock) from the log times
    'remap': {},              # bag topic -> published topic
}


def _parse_remap(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        if ':=' not in item:
            raise ValueError(f'--remap expects FROM:=TO, got {item!r}')
        src, dst = item.split(':=', 1)
        out[src] = dst
    return out


def main(conf: dict, paths: dict) -> Path:
    """Play ``paths['bag']`` into ROS 2 until it ends (or Ctrl-C); returns the bag path."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from camreloc_ros.ros.bag_player import BagPlayer

    conf = merge_conf(default_conf, conf)
    tool_logging()
    path = require_exists(paths['bag'], 'bag')
    with Bag(path) as bag:
        context = rclpy.Context()
        # Ctrl-C stays a KeyboardInterrupt, so the loop stops between two messages.
        rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node('camreloc_bag_play', context=context)
        try:
            player = BagPlayer(node, bag, conf['topics'], remap=conf['remap'],
                               clock=bool(conf['clock']))
            for topic, why in player.skipped.items():
                logger.warning(f'not publishing {topic}: {why}')
            logger.info('publishing ' + ', '.join(
                f'{player.out_topics[t]} ({bag.topics[t].msgtype}, {bag.topics[t].count})'
                for t in player.publishers))
            if conf['wait_subscribers']:
                missing = player.wait_for_subscribers(float(conf['wait_timeout']))
                if missing:
                    logger.warning(f'no subscriber after {conf["wait_timeout"]:g} s on: '
                                   + ', '.join(player.out_topics[t] for t in missing)
                                   + '; playing anyway')
            try:
                stats = player.play(float(conf['rate_factor']), loop=bool(conf['loop']),
                                    max_idle=conf['max_idle'])
            except KeyboardInterrupt:
                logger.info('stopped')
                return path
            player.linger()
            logger.info(f'published {stats.total} messages in {stats.seconds:.1f} s'
                        + (f' ({stats.loops} loops)' if stats.loops > 1 else ''))
        finally:
            node.destroy_node()
            context.try_shutdown()
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line interface of ``camreloc bag-play``."""
    parser.add_argument('bag', type=Path, help='rosbag2 folder (or .mcap / .db3 file)')
    parser.add_argument('--rate-factor', type=float, default=default_conf['rate_factor'],
                        help='speed: 1 = as recorded, 2 = twice as fast, 0 = no waiting')
    parser.add_argument('--topics', nargs='+', default=None, help='only these topics')
    parser.add_argument('--loop', action='store_true', help='start again at the end')
    parser.add_argument('--wait-subscribers', action='store_true',
                        help='wait until every published topic has a subscriber')
    parser.add_argument('--wait-timeout', type=float, default=default_conf['wait_timeout'],
                        help='seconds --wait-subscribers waits at most (default %(default)g)')
    parser.add_argument('--max-idle', type=float, default=None,
                        help='shorten pauses in the bag longer than this many seconds')
    parser.add_argument('--clock', action='store_true', help='publish /clock from the bag')
    parser.add_argument('--remap', nargs='+', default=None, metavar='FROM:=TO',
                        help='publish a bag topic under another name')


def from_args(args: argparse.Namespace) -> Path:
    """Run :func:`main` from parsed arguments."""
    conf = {'rate_factor': args.rate_factor, 'topics': args.topics, 'loop': args.loop,
            'wait_subscribers': args.wait_subscribers, 'wait_timeout': args.wait_timeout,
            'max_idle': args.max_idle, 'clock': args.clock,
            'remap': _parse_remap(args.remap)}
    return main(conf, {'bag': args.bag})
