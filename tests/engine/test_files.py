"""engine.files: the project's temp names, removing those of dead processes, folder and
regular-file checks (issue 16: stale temps after SIGKILL, FIFO inputs, `-o file/sub`)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.files import (check_folder_path, host_tag, remove_stale_temps, require_regular_file, temp_owner,
                                    temp_prefix)


@pytest.fixture(scope="module")
def dead_pid():
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_names_carry_host_and_pid():
    prefix = temp_prefix("face_pulse.png")
    assert prefix == f".face_pulse.png.pulse-tmp-{host_tag()}-{os.getpid()}-"
    assert temp_owner(prefix + "k2j3.tmp") == (host_tag(), os.getpid())
    assert temp_owner("face_pulse.png") is None and temp_owner(".face_pulse.png.x1y2.tmp") is None


def test_remove_stale_temps_only_removes_dead_owners_of_this_host(tmp_path, dead_pid):
    me = host_tag()
    dead_file = tmp_path / f".a_pulse.png.pulse-tmp-{me}-{dead_pid}-x.tmp"
    dead_dir = tmp_path / f".0123abcd.pulse-tmp-{me}-{dead_pid}-y"
    live = tmp_path / f".b_pulse.png.pulse-tmp-{me}-{os.getppid()}-z.tmp"  # our parent: alive
    mine = tmp_path / f".c_pulse.png.pulse-tmp-{me}-{os.getpid()}-w.tmp"
    other_host = tmp_path / f".d_pulse.png.pulse-tmp-{'0' * 8 if me != '0' * 8 else '1' * 8}-{dead_pid}-v.tmp"
    foreign = tmp_path / ".e_pulse.png.abc.tmp"  # not our pattern (e.g. an older pulse-trt's): left alone
    for p in (dead_file, live, mine, other_host, foreign):
        p.write_bytes(b"x")
    dead_dir.mkdir()
    (dead_dir / "step.onnx").write_bytes(b"x" * 1000)
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([dead_file, dead_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, mine, other_host, foreign))


def test_check_folder_path(tmp_path):
    (tmp_path / "file").write_text("x")
    check_folder_path(tmp_path / "new" / "deeper", "output folder")  # may be created
    check_folder_path(tmp_path, "output folder")
    with pytest.raises(PulseError, match="output folder .*/file exists and is not a directory"):
        check_folder_path(tmp_path / "file", "output folder")
    # Seen: `-o existing_file/sub` exited 70 ("a bug") after the search had run.
    with pytest.raises(PulseError, match=f"{tmp_path / 'file'} is a file, not a directory"):
        check_folder_path(tmp_path / "file" / "sub" / "x", "output folder")


def test_require_regular_file(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    require_regular_file(tmp_path / "a.png")
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(PulseError, match="fifo.png: is a FIFO, not a regular file"):
        require_regular_file(tmp_path / "fifo.png")
    with pytest.raises(PulseError, match="is a character device"):
        require_regular_file("/dev/null")
    with pytest.raises(PulseError, match="no such file"):
        require_regular_file(tmp_path / "nope.png")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(tmp_path / "sock"))
        with pytest.raises(PulseError, match="is a socket"):
            require_regular_file(tmp_path / "sock")
    finally:
        s.close()
