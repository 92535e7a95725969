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

"""Private ``ROS_DOMAIN_ID``s that no two processes on this host share.

Tests, benchmarks and ``make demo``'s live step each start nodes that must hear only their own
peers. Hand-picked ids (``200 + pid % 30``, 200, 210, ...) collide as soon as two runs share a
machine, and a collision shows up as poses from somebody else's node, not as an error. So an
id is taken by an exclusive ``fcntl.flock`` on ``<lock dir>/<id>.lock``: the kernel drops the
lock when the holder exits (even on SIGKILL), so there is nothing stale to clean up, and a
second holder, in this process or any other, is refused and moves on to the next id.

No rclpy here: the allocator runs before ``rclpy.init`` and in processes that never import it.
"""

import fcntl
import os
from pathlib import Path
import tempfile

# Fast DDS maps a domain to UDP ports 7400 + 250 * id; ids from 233 on overflow the port range.
# Ids below 100 are left to people (0 is ROS' default, small ids are the usual manual choice).
DOMAIN_POOL = range(100, 233)
LOCK_DIR_ENV = 'CAMRELOC_DOMAIN_LOCK_DIR'

_held: dict[int, int] = {}    # domain id -> file descriptor holding its lock (this process)


def lock_dir() -> Path:
    """Return the directory every allocator on this host locks in.

    ``$CAMRELOC_DOMAIN_LOCK_DIR`` when set, else ``camreloc_ros_domains`` in the temp dir:

    one shared place, so the demo, a benchmark and several pytest runs see each other's ids.
    """
    path = Path(os.environ.get(LOCK_DIR_ENV)
                or Path(tempfile.gettempdir()) / 'camreloc_ros_domains')
    path.mkdir(parents=True, exist_ok=True)
    try:                       # other users on the host must be able to lock here too
        path.chmod(0o1777)
    except PermissionError:
        pass
    return path


def _try_lock(directory: Path, domain_id: int) -> int | None:
    """Lock ``domain_id``: the fd holding its lock, or None when another holder has it."""
    fd = os.open(directory / f'{domain_id}.lock', os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)        # who holds it, for a person looking at the directory
    os.write(fd, f'{os.getpid()}\n'.encode())
    return fd


def allocate_domain(pool: range = DOMAIN_POOL, directory: str | Path | None = None) -> int:
    """Take a ``ROS_DOMAIN_ID`` from ``pool`` that no other live allocation on this host holds.

    The id stays taken until :func:`release_domain` or the end of this process. The file
    descriptor is not inherited by child processes (Python's default), so a child given the id
    through its environment does not keep it taken after this process ends.

    Raises:
        RuntimeError: every id of ``pool`` is taken.
    """
    directory = Path(directory) if directory is not None else lock_dir()
    for domain_id in pool:
        if domain_id in _held:
            continue
        fd = _try_lock(directory, domain_id)
        if fd is not None:
            _held[domain_id] = fd
            return domain_id
    raise RuntimeError(f'all ROS domain ids {pool.start}..{pool.stop - 1} are taken on this '
                       f'host (locks in {directory}); stop some runs or set {LOCK_DIR_ENV}')


def release_domain(domain_id: int) -> None:
    """Give ``domain_id`` back early (its nodes must be gone); unknown ids are ignored."""
    fd = _held.pop(domain_id, None)
    if fd is not None:
        os.close(fd)           # closing the only descriptor drops the flock
