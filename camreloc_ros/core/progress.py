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

"""Progress of a long loop: a bar on a terminal, a few plain lines in a log file.

A tqdm bar redraws itself with carriage returns; written to a file (``make demo > demo.log``,
a CI log, a robot's journal) that is hundreds of fragments on one line. So the bar is drawn
only when the stream is a terminal (``isatty()``); anywhere else :class:`Progress` writes
one line each time another ``every_pct`` % of the steps is done (11 lines at most for the
default 10 %), or nothing when ``every_pct`` is None (a loop whose caller logs a line after it
anyway, as the trainer does per epoch).

Flat in ``core/`` and import-free (tqdm is imported only for a terminal): training, map
building and evaluation all run long loops.
"""

import sys
import time
from typing import Callable, TextIO


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Show ``total`` steps of ``desc``: :meth:`update` after each, :meth:`close` at the end.

    Args:
        total: the number of steps.
        desc: what the steps are, as the bar and the lines show it.
        stream: where the bar or the lines go (default ``sys.stderr``, as tqdm).
        log: off a terminal, lines go to this callable instead of ``stream`` (e.g. a logger).
        every_pct: off a terminal, one line per this many percent; None: no lines.
        enabled: False shows nothing at all (other ranks of a distributed run, tests).
    """

    def __init__(self, total: int, desc: str, stream: TextIO | None = None,
                 log: Callable[[str], None] | None = None, every_pct: float | None = 10.0,
                 enabled: bool = True):
        self.total, self.desc, self.done = max(int(total), 0), desc, 0
        self.stream = stream if stream is not None else sys.stderr
        self._log, self._every = log, every_pct
        self._t0 = time.monotonic()
        self._next_pct = every_pct or 0.0
        self._bar = None
        self._lines = enabled and not is_terminal(self.stream) and every_pct is not None
        if enabled and is_terminal(self.stream):
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, desc=desc, leave=False, dynamic_ncols=True,
                             file=self.stream)

    def update(self, n: int = 1, **postfix: str) -> None:
        """Count ``n`` more steps done; ``postfix`` (name=value) goes beside the count."""
        self.done += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        elif self._lines and self.total:
            pct = 100.0 * self.done / self.total
            if pct >= self._next_pct or self.done == self.total:
                while self._next_pct <= pct:
                    self._next_pct += self._every
                self._write(pct, postfix)

    def _write(self, pct: float, postfix: dict) -> None:
        extra = ''.join(f'  {k} {v}' for k, v in postfix.items())
        line = (f'{self.desc}: {self.done}/{self.total} ({pct:.0f} %, '
                f'{time.monotonic() - self._t0:.0f} s){extra}')
        if self._log is not None:
            self._log(line)
        else:
            self.stream.write(line + '\n')
            self.stream.flush()

    def close(self) -> None:
        """Remove the bar (a finished loop leaves no bar behind; its caller logs the result)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> 'Progress':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
