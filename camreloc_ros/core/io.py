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

"""Files written so that nothing is lost: atomic writes, clear disk errors, stale temp cleanup.

Every output (checkpoints, results, caches, exports, bags) is written into a temporary file
(or folder) beside its destination and renamed over it only when complete, so a reader never
sees a half-written file and a crash (or a full disk) leaves the previous version in place.
Temporary names carry the writer's process id (``.NAME.PID.tmpXXXX``), so a later run can
remove the litter of a killed one without touching the temporaries of a process that is still
writing.

Also here: the one file digest (:func:`file_sha256`), the one content digest of arrays and
tensors (:func:`content_digest`: checkpoints and maps), and the one cache root,
``$CAMRELOC_CACHE_DIR`` (default ``$XDG_CACHE_HOME/camreloc_ros``, i.e.
``~/.cache/camreloc_ros``), with one folder per cache below it (:data:`CACHES`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path
import re
import shutil
import sys
import tempfile
from typing import Callable, Iterator

import numpy as np

TEMP_MARK = '.tmp'
CACHE_ENV = 'CAMRELOC_CACHE_DIR'
# The caches below the cache root: frozen-trunk features, ONNX exports, frames from bags.
CACHES = ('features', 'onnx', 'bag_frames', 'retrieval')
_TEMP_RE = re.compile(r'^\..+\.(\d+)\.tmp[^/]*$')


def temp_prefix(name: str) -> str:
    """Prefix of this process' temporary files for an output called ``name``."""
    return f'.{name}.{os.getpid()}{TEMP_MARK}'


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (its owner may be somebody else)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # somebody else's live process
        return True
    return True


def clean_stale_temps(folder: str | Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove temporary files and folders of dead writers in ``folder`` (not recursive).

    Only names made by :func:`temp_prefix` whose process no longer runs are removed, so a
    user's own files and a concurrent writer's temporaries are never touched. Returns what
    was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMP_RE.match(entry.name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
    if removed and log is not None:
        log(f'removed {len(removed)} temporary file(s) left in {folder} by an interrupted run')
    return removed


def disk_error(exc: BaseException, path: str | Path) -> OSError | None:
    """Turn a failed write of ``path`` into a clear ``OSError`` when the disk is the cause.

    Writers bury the reason (torch says ``[enforce fail at inline_container.cc] ... file
    write failed``): when the target's file system has (almost) no free space, or the error
    is ENOSPC/EDQUOT, say which file and "no space left". Returns None for other errors.
    """
    path = Path(path)
    full = False
    cause: BaseException | None = exc
    while cause is not None and not full:    # torch wraps the OSError in a RuntimeError
        full = getattr(cause, 'errno', None) in (errno.ENOSPC, errno.EDQUOT)
        cause = cause.__cause__ or cause.__context__
    if not full:
        try:
            free = os.statvfs(path.parent)
            full = free.f_bavail * free.f_frsize < 1 << 20
        except OSError:
            full = False
    if not full:
        return None
    return OSError(errno.ENOSPC, f'no space left on device while writing {path}; the '
                   'previous version of this file (if any) and earlier outputs are intact. '
                   'Free some space and run again', str(path))


def user_umask() -> int:
    """Return the process' umask, read without changing it (``os.umask`` only swaps)."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)   # no /proc: swap and restore (a moment's race with other threads)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    Readers (a running plot script, evo, a second evaluation) never see a half-written file,
    and a crash leaves the previous version in place. A full disk raises an ``OSError`` that
    names ``path``. The file gets ``mode`` (default: ``0o666`` less the user's umask, as
    ``open`` would give) instead of the temporary file's 0600, which would hide a shared
    output from the user's group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, (0o666 & ~user_umask()) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException as exc:
        # judge the disk before the temporary file gives its space back
        clear = disk_error(exc, path) if isinstance(exc, (OSError, RuntimeError)) else None
        if os.path.exists(tmp):
            os.unlink(tmp)
        if clear is not None:
            raise clear from exc
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a not yet existing path to build a folder at; move it to ``path`` on success.

    The yielded path has ``path``'s name (tools such as rosbags name files after their
    folder) inside a temporary folder beside ``path``, which is removed in any case. An
    existing ``path`` is replaced only with ``overwrite`` (the caller checks that it may be);
    else the rename fails with an ``OSError`` and the existing folder is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), dir=path.parent))
    try:
        yield tmp / path.name
        old = None
        if overwrite and (path.exists() or path.is_symlink()):
            old = tmp / '.replaced'
            os.replace(path, old)
        try:
            os.replace(tmp / path.name, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode('utf-8'))


def reserve(fd: int, size: int, path: str | Path) -> None:
    """Allocate ``size`` bytes for an open file now, so a full disk fails here, clearly.

    A memory-mapped file on a full disk is killed by SIGBUS at the first page written;
    allocating first turns that into an ``OSError`` naming ``path``.
    """
    try:
        os.posix_fallocate(fd, 0, max(int(size), 1))
    except OSError as exc:
        clear = disk_error(exc, path)
        if clear is not None:
            raise clear from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes (streamed)."""
    with open(path, 'rb') as fh:
        return hashlib.file_digest(fh, 'sha256').hexdigest()


def content_digest(content) -> str:
    """SHA-256 over every array of a (nested) mapping: key paths, dtypes, shapes and bytes.

    The one digest of what a file holds, stored when a checkpoint or a map is written and
    checked when it is read, so damaged (or edited) bytes are an error naming the file
    instead of NaN or wrong poses later. Torch tensors and numpy arrays are both hashed
    (torch only when already imported: a map reader needs no torch); other leaves by
    ``repr``. Checkpoint values equal those of the former ``pose_model.tensor_digest``.
    """
    h = hashlib.sha256()
    torch = sys.modules.get('torch')

    def walk(prefix: str, obj) -> None:
        if torch is not None and isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f'{prefix}|{t.dtype}|{tuple(t.shape)}|'.encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
        elif isinstance(obj, np.ndarray):
            a = np.ascontiguousarray(obj)
            h.update(f'{prefix}|numpy.{a.dtype.str}|{a.shape}|'.encode())
            h.update(a.tobytes())
        elif isinstance(obj, dict):
            for key in obj:
                walk(f'{prefix}/{key}', obj[key])
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                walk(f'{prefix}/{i}', value)
        else:
            h.update(f'{prefix}={obj!r};'.encode())

    walk('', content)
    return h.hexdigest()


def cache_root() -> Path:
    """``$CAMRELOC_CACHE_DIR``, else ``$XDG_CACHE_HOME/camreloc_ros`` (``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'camreloc_ros'


def cache_folder(kind: str) -> Path:
    """Return the folder of one cache (one of :data:`CACHES`) below :func:`cache_root`."""
    if kind not in CACHES:
        raise ValueError(f'cache must be one of {", ".join(CACHES)}, got {kind!r}')
    return cache_root() / kind
