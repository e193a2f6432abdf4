"""Faults injected into real notebooks on real MNIST: every wait is bounded, every grade kept.

Each case is the solution with one fault cell added; the expected points are exact.
"""

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from grader.authoring import notebook_text
from grader.grading import grade_bytes, open_session

HERE = Path(__file__).resolve().parent
EXPECTED = json.loads((HERE / "corpus" / "expected.json").read_text())
FULL = EXPECTED["solution"]
BEFORE_PARAMETERS = {"first_nine_index": 1, "target_for_3": 1, "expected_cost": 1, "NN_Model3": 3}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session(spec, grading_cache):
    return open_session(spec, cache_dir=grading_cache, cell_timeout=15, notebook_timeout=60)


def _with_fault(code: str, *, before_parameters: bool = False) -> bytes:
    nb = nbformat.reads((HERE / "corpus" / "notebooks" / "solution.ipynb").read_text(), 4)
    index = next(i for i, c in enumerate(nb.cells) if c.metadata.get("grader", {}).get("role") == "parameters")
    if not before_parameters:
        index = len(nb.cells) - 1
    nb.cells.insert(index, nbformat.v4.new_code_cell(code))
    return notebook_text(nb).encode()


def _points(result):
    return {q.id: q.points for q in result.questions if q.id in FULL}


FAULTS = {
    # name: (fault code, placed before the parameters cell?, expected points, a text expected in log/warnings)
    "cell_timeout_interrupted": ("import time\nwhile True:\n    time.sleep(0.05)", False, FULL, "timeout"),
    "sys_exit": ("import sys\nsys.exit(3)", False, FULL, "SystemExit"),
    "os_exit_kernel_death": ("import os\nos._exit(1)", False, FULL, "died"),
    "segfault": ("import ctypes\nctypes.string_at(0)", False, FULL, "died"),
    "memory_limit": ("import numpy as np\nhog = np.ones((6 * 2**30) // 8)\nhog[::4096] = 2", False, FULL, "Memory"),
    "output_flood_100mb": ("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 2**20)", False, FULL, "output limit"),
    "notebook_limit_ignores_interrupts": (
        "import time\nwhile True:\n    try:\n        time.sleep(1)\n    except KeyboardInterrupt:\n        pass",
        True,
        {**dict.fromkeys(FULL, 0), **BEFORE_PARAMETERS},
        "out of time",
    ),
    # A fork bomb in a session of its own that keeps every process it gets: the sandbox's
    # process limit (the control group's pids.max, or RLIMIT_NPROC) refuses the kernel's own
    # fork while it runs; then kill -STOP -1 and kill -9 -1 (which spare the kernel) end it.
    "fork_bomb": (
        "import os, signal, subprocess, sys, time\n"
        "LOOP = 'import os, time\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        time.sleep(0.05)'\n"
        "bomb = subprocess.Popen([sys.executable, '-c', LOOP], start_new_session=True)\n"
        "time.sleep(3)\n"
        "try:\n"
        "    pid = os.fork()\n"
        "except OSError as exc:\n"
        "    refused = exc.strerror\n"
        "else:\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "    refused = None\n"
        "for _ in range(20):  # kill -STOP -1 until no process forks any more, then kill -9 -1\n"
        "    os.kill(-1, signal.SIGSTOP)\n"
        "os.kill(-1, signal.SIGKILL)\n"
        "bomb.wait()\n"
        "raise RuntimeError(f'fork refused: {refused}' if refused else 'fork allowed')",
        False,
        FULL,
        "fork refused: Resource temporarily unavailable",
    ),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault(session, name):
    code, before, expected, evidence = FAULTS[name]
    result = grade_bytes(session, _with_fault(code, before_parameters=before), student=name, file=f"{name}.ipynb")
    assert _points(result) == expected, (result.warnings, result.log)
    text = " ".join(result.log + result.warnings)
    assert evidence in text, text


def test_no_process_left_behind(session):
    """Processes a student started in sessions of their own die with the submission."""
    from grader.sandbox import worker_uid

    code = (
        "import subprocess\n"
        "for _ in range(3):\n"
        "    subprocess.Popen(['sleep', '600'], start_new_session=True)"
    )
    grade_bytes(session, _with_fault(code), student="sleepers", file="sleepers.ipynb")
    time.sleep(1)
    leftovers = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        if int(uid) == worker_uid():  # this process's sandboxes run as its own uid
            leftovers.append(pid)
    assert leftovers == []
