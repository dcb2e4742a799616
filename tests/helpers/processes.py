"""The processes tests start and stop: whether a stage has reached its main(), and killing a whole session."""

import os
import signal
import time
from pathlib import Path


def in_main(pid):
    """Whether the stage's main() runs: exit_on_error has installed its SIGTERM handler (/proc's SigCgt mask), so a
    stop lands in the stage, not in its imports."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def kill_session(sid):
    """SIGKILL every process of session `sid` (a runner started with start_new_session, dvc and its stages), again
    until none is left: a stage dvc started while the first pass read /proc would otherwise run on, orphaned."""
    for _ in range(50):
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # the fields after the name: state, ppid, pgrp, session
                alive.append(int(stat.parent.name))
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
