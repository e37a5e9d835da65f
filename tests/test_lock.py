import subprocess
import sys
import time

import pytest

from atelier.lock import WorkspaceBusy, workspace_lock


def test_second_holder_is_refused_with_a_clear_message(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time, pathlib; from atelier.lock import workspace_lock\n"
                f"with workspace_lock(pathlib.Path({str(tmp_path)!r}), 'pipeline run'):\n"
                "    print('held', flush=True); time.sleep(30)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkspaceBusy, match=rf"pipeline run, pid {holder.pid}"):
            with workspace_lock(tmp_path, "second run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with workspace_lock(tmp_path, "after the holder died"):  # a killed holder leaves no stale lock
        pass
