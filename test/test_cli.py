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

"""The ``camreloc`` command line: version, help, logging levels, and ``--help`` without torch."""

import argparse
import logging
import re
import subprocess
import sys

import pytest

from camreloc_ros import __version__
from camreloc_ros.tools import cli
from camreloc_ros.tools.common import shared_data_dir

DATA = shared_data_dir() / 'hololens-office'
TOOLS = [name for name in cli.SUBCOMMANDS if name != 'node']
# Subcommands whose modules import torch at the top (none now): strict, so a name listed
# here must go as soon as its imports move into main().
TORCH_AT_IMPORT: set = set()
HELP_MISSING: set = set()


def _strict_xfail(names: set, reason: str) -> list:
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=reason))
            if n in names else n for n in TOOLS]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(['--version'])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f'camreloc {__version__}'


def test_help_lists_the_subcommands_one_per_line(capsys):
    assert cli.main(['--help']) == 0
    out = capsys.readouterr().out
    for name, (_, text) in cli.SUBCOMMANDS.items():
        assert re.search(rf'^  {re.escape(name)} +{re.escape(text)}$', out, re.M), name
    assert '-v, --verbose' in out and '-q, --quiet' in out and '--version' in out
    assert cli.main([]) == 2


@pytest.mark.parametrize('name', _strict_xfail(HELP_MISSING, 'options without help text'))
def test_every_option_has_help_text(name):
    parser = cli.subcommand_parser(name)
    bare = [a.option_strings or [a.dest] for a in parser._actions
            if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not bare, f'camreloc {name}: options without help: {bare}'


@pytest.mark.parametrize('name', _strict_xfail(TORCH_AT_IMPORT, 'imports torch at the top'))
def test_subcommand_help_does_not_import_torch(name):
    code = ('import sys\n'
            'from camreloc_ros.tools import cli\n'
            'try:\n'
            f'    cli.main([{name!r}, "--help"])\n'
            'except SystemExit as exc:\n'
            '    assert exc.code == 0, exc.code\n'
            'print("torch loaded:", "torch" in sys.modules)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert f'usage: camreloc {name}' in result.stdout
    assert 'torch loaded: False' in result.stdout


def test_node_help_lists_the_parameters_without_starting_a_node(capsys):
    from camreloc_ros.ros.parameters import PARAMETERS

    assert cli.main(['node', '--help']) == 0
    out = capsys.readouterr().out
    assert out.startswith('usage: camreloc node')
    for param in PARAMETERS:
        assert f'\n  {param.name} (default ' in out, param.name
    assert ' '.join(PARAMETERS[0].description.split()[:4]) in out


def test_quiet_verbose_and_default(tmp_path, capsys):
    """Information goes to stdout by default and with -v; -q (either place) keeps it quiet."""
    runs = (['bag-from-dataset'], ['-q', 'bag-from-dataset'], ['bag-from-dataset', '-q'],
            ['-v', 'bag-from-dataset'])
    before = list(logging.getLogger('camreloc_ros').handlers)
    for n, words in enumerate(runs):
        out = tmp_path / f'bag{n}'
        assert cli.main(words + [str(DATA), str(out), '--format', 'posed', '--limit', '3']) == 0
        printed = capsys.readouterr().out
        assert (out / 'metadata.yaml').is_file()
        assert ('wrote 3 frames' in printed) == ('-q' not in words), words
        if '-q' in words:
            assert printed == ''
    # the CLI leaves the logger as it found it (in-process runs, tests)
    assert logging.getLogger('camreloc_ros').handlers == before


def test_tools_print_their_messages_when_run_from_python(tmp_path, capsys):
    """Without the CLI, a tool's main still prints its information (nothing configured)."""
    from camreloc_ros.tools import bag_from_dataset

    bag_from_dataset.main({'format': 'posed', 'limit': 2}, {'data': DATA, 'out': tmp_path / 'b'})
    assert 'wrote 2 frames' in capsys.readouterr().out
