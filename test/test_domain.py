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

"""The ROS domain allocator: no two live holders, in one process or two, ever share an id."""

import subprocess
import sys

import pytest
from support import allocate_domain, DOMAIN_POOL, release_domain

from camreloc_ros.ros import domain

HOLD = '''
import sys
from camreloc_ros.ros.domain import allocate_domain
print(allocate_domain(range(int(sys.argv[1]), int(sys.argv[2])), sys.argv[3]), flush=True)
sys.stdin.read()   # hold the id until the parent closes stdin
'''


def _holder(directory, pool: range) -> tuple[subprocess.Popen, int]:
    """Another process that took an id from ``pool`` in ``directory`` and keeps it."""
    proc = subprocess.Popen([sys.executable, '-c', HOLD, str(pool.start), str(pool.stop),
                             str(directory)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    return proc, int(proc.stdout.readline())


def test_two_allocations_in_one_process_differ_and_a_release_frees_one(tmp_path):
    pool = range(150, 153)
    first, second = allocate_domain(pool, tmp_path), allocate_domain(pool, tmp_path)
    assert first != second and {first, second} <= set(pool)
    release_domain(first)
    assert allocate_domain(pool, tmp_path) == first
    third = allocate_domain(pool, tmp_path)
    assert len({first, second, third}) == 3
    with pytest.raises(RuntimeError, match='150..152 are taken'):
        allocate_domain(pool, tmp_path)
    for d in (first, second, third):
        release_domain(d)


def test_another_process_never_gets_an_id_held_here_and_its_exit_frees_its_id(tmp_path):
    pool = range(160, 162)
    mine = allocate_domain(pool, tmp_path)
    proc, theirs = _holder(tmp_path, pool)
    try:
        assert theirs != mine and theirs in pool
        with pytest.raises(RuntimeError):    # both ids are held, one in each process
            allocate_domain(pool, tmp_path)
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    assert allocate_domain(pool, tmp_path) == theirs    # the kernel dropped the dead lock
    release_domain(mine)
    release_domain(theirs)


def test_the_default_pool_fits_fast_dds_and_sits_in_the_shared_lock_dir(monkeypatch, tmp_path):
    assert DOMAIN_POOL.start > 0 and DOMAIN_POOL.stop <= 233
    monkeypatch.setenv(domain.LOCK_DIR_ENV, str(tmp_path / 'locks'))
    got = allocate_domain()
    assert got in DOMAIN_POOL and (tmp_path / 'locks' / f'{got}.lock').is_file()
    release_domain(got)
