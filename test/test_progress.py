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

"""Progress: a bar on a real terminal (a pty), a line per 10 % in a file, nothing when off."""

import fcntl
import io
import os
import pty
import select
import struct
import termios

from camreloc_ros.core.progress import is_terminal, Progress


def test_a_log_file_gets_one_line_per_ten_percent_and_no_carriage_return(tmp_path):
    with open(tmp_path / 'run.log', 'w') as log:
        assert not is_terminal(log)
        with Progress(100, 'features', stream=log) as progress:
            for i in range(100):
                progress.update(1, loss=f'{i / 100:.2f}')
    text = (tmp_path / 'run.log').read_text()
    lines = text.splitlines()
    assert 10 <= len(lines) <= 11, lines
    assert '\r' not in text
    assert lines[0].startswith('features: 10/100 (10 %') and lines[-1].startswith(
        'features: 100/100 (100 %')
    assert lines[-1].endswith('loss 0.99')


def test_uneven_steps_still_end_on_the_last_one_and_log_takes_the_lines():
    got: list[str] = []
    progress = Progress(7, 'refined', log=got.append, every_pct=25)
    for _ in range(7):
        progress.update()
    assert [line.split(' (')[0] for line in got] == [
        'refined: 2/7', 'refined: 4/7', 'refined: 6/7', 'refined: 7/7']


def test_disabled_or_no_lines_writes_nothing():
    stream = io.StringIO()
    for progress in (Progress(50, 'x', stream=stream, enabled=False),
                     Progress(50, 'x', stream=stream, every_pct=None)):
        for _ in range(50):
            progress.update()
        progress.close()
    assert stream.getvalue() == ''


def test_a_terminal_gets_a_tqdm_bar():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 80, 0, 0))   # 80 columns
    try:
        with os.fdopen(slave, 'w', closefd=False) as tty:
            assert is_terminal(tty)
            progress = Progress(20, 'epoch 1/3', stream=tty)
            for _ in range(20):
                progress.update()
            progress.close()
            tty.flush()
        assert select.select([master], [], [], 10.0)[0], 'nothing reached the terminal'
        out = os.read(master, 65536).decode(errors='replace')
    finally:
        os.close(master)
        os.close(slave)
    assert '\r' in out and 'epoch 1/3' in out and '/20 [' in out, out   # a tqdm bar, redrawn
    assert '\n' not in out, out                # and wiped at the end: no line left behind
