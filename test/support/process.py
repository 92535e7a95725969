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

"""Processes a test starts: wait for what they write, stop them and their children."""

import os
from pathlib import Path
import signal
import subprocess
import time


def wait_for_file(path: Path, proc, timeout_s: float, period_s: float = 0.05) -> None:
    """Wait until ``path`` exists while ``proc`` (a Popen) runs; fail if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while not Path(path).exists():
        assert proc.poll() is None, f'the process died (exit {proc.returncode}) before {path}'
        assert time.monotonic() < deadline, f'no {path} within {timeout_s:g} s'
        time.sleep(period_s)


class Started:
    """A command in its own process group, output in a file; stopped as a group.

    The node start/stop helper: ``ros2 launch`` and ``camreloc node`` start children of
    their own, so stopping only the first process would leave a node behind on the domain.
    """

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]):
        self.argv, self.log = argv, log
        with open(log, 'wb') as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=log.parent, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def output(self) -> str:
        """Everything the command printed so far."""
        return self.log.read_text(errors='replace')

    def stop(self) -> None:
        """SIGINT to the whole group (launch and its node), SIGKILL what is left after 20 s."""
        for sig, wait_s in ((signal.SIGINT, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self.proc.poll()
                try:
                    os.killpg(self.proc.pid, 0)    # anyone left in the group?
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                continue
            break
        self.proc.wait(timeout=10)
