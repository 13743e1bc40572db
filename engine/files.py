"""File-system helpers shared by the runtime and the exporter (standard library only).

- The project's temporary names. Every temp file or folder pulse-trt creates beside its
  destination (atomic writes of outputs, exports into the artefact cache) is named
  `.NAME.pulse-tmp-HOST-PID-RANDOM[.tmp]`, where HOST is a short hash of the host name and PID
  the creating process. A process killed before it could clean up (SIGKILL, power loss) leaves
  such a name behind; remove_stale_temps deletes those of dead processes of this host, and only
  those: a name of a live process, of another host (a shared cache) or not in this pattern is
  never touched.
- Folder checks that turn "a path component is a file" into a one-line PulseError before any
  work, instead of an OSError halfway through a run.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
from pathlib import Path

from .errors import PulseError

TEMP_TAG = "pulse-tmp"
_TEMP_NAME = re.compile(r"^\..+\." + TEMP_TAG + r"-([0-9a-f]{8})-(\d+)-[^/]*$")


def host_tag() -> str:
    """8 hex digits identifying this host (sha256 of its name)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_prefix(name: str) -> str:
    """Prefix of a temp file or folder standing in for `name` while it is written:
    ".NAME.pulse-tmp-HOST-PID-" (tempfile adds the random part)."""
    return f".{name}.{TEMP_TAG}-{host_tag()}-{os.getpid()}-"


def temp_owner(entry_name: str) -> tuple[str, int] | None:
    """(host tag, pid) of a name made with temp_prefix; None for any other name."""
    m = _TEMP_NAME.match(entry_name)
    return (m.group(1), int(m.group(2))) if m else None


def pid_alive(pid: int) -> bool:
    """True when a process `pid` exists on this host (also one we may not signal)."""
    if pid <= 0 or os.name == "nt":  # not a real owner; on Windows os.kill(pid, 0) would kill it
        return True  # leave the entry alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by someone else
        return True
    return True


def remove_stale_temps(folder) -> list[Path]:
    """Delete the temp files and folders in `folder` (not recursive) whose owner, a process of
    this host, is gone. Returns what was removed; errors (a racing cleaner, permissions) are
    ignored: a stale temp is litter, not a reason to fail a run."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    me, pid_now = host_tag(), os.getpid()
    for entry in entries:
        owner = temp_owner(entry.name)
        if owner is None or owner[0] != me or owner[1] == pid_now or pid_alive(owner[1]):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def check_folder_path(path, what: str) -> None:
    """PulseError (one line) when `path` cannot be (or become) a folder: it exists and is not a
    folder, or its nearest existing ancestor is not one (`-o existing_file/sub`). `what` names
    the path in the message (e.g. "output folder", "artefact cache ($PULSE_TRT_CACHE)")."""
    path = Path(path)
    probe = path
    while True:
        try:
            st_is_dir = probe.is_dir()
            exists = st_is_dir or probe.exists() or probe.is_symlink()
        except OSError as e:  # ENAMETOOLONG, ELOOP, ...
            raise PulseError(f"{what} {path}: {os.strerror(e.errno or errno.EINVAL)}") from None
        if exists:
            if not st_is_dir:
                if probe == path:
                    raise PulseError(f"{what} {path} exists and is not a directory")
                raise PulseError(f"{what} {path}: {probe} is a file, not a directory")
            return
        if probe.parent == probe:
            return
        probe = probe.parent


def file_kind(path) -> str:
    """What a path is, in words: "a FIFO", "a socket", "a character device", "a block device",
    "a directory", "a regular file", "missing"."""
    import stat  # noqa: PLC0415

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    for test, words in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device")):
        if test(mode):
            return words
    return "not a regular file"


def require_regular_file(path, what: str = "input") -> None:
    """PulseError (one line) unless `path` is a regular file (after symlinks): opening a FIFO or
    a device to read an image would block or read forever."""
    kind = file_kind(path)
    if kind == "missing":
        raise PulseError(f"{path}: no such file")
    if kind != "a regular file":
        raise PulseError(f"{path}: is {kind}, not a regular file; give {what} files (or folders of them)")
