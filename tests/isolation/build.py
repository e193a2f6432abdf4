"""Hostile neighbours for the isolation test: the blank template with one attack cell.

Each notebook answers nothing (so its own exact score is 0 for every question, whatever
its attack does to itself) and attacks whatever else runs on the machine for
ATTACK_SECONDS from its first code cell on: the honest notebook graded beside it must get
exactly the score it gets alone. `python tests/isolation/build.py --update` regenerates
the committed notebooks; a test checks they are current.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "corpus"

#: How long each attack lasts (it must overlap the honest notebook's data loading and
#: training). Every process it leaves behind lives until its sandbox ends.
ATTACK_SECONDS = 40

#: In the argv of every process an attack starts, so a test can look for leftovers.
MARKER = "grader-hostile-7f3a"

_PRELUDE = f"""\
import os, signal, subprocess, sys, time
MARKER = {MARKER!r}
END = STOP = time.monotonic() + {ATTACK_SECONDS}
"""

ATTACKS = {
    # CPU spinners, each in a session of its own (setsid), outliving the cell.
    "spinners": """\
for _ in range(8):
    subprocess.Popen([sys.executable, "-c", "while True: pass", MARKER], start_new_session=True)
time.sleep(max(0, END - time.monotonic()))
""",
    # A fork loop that keeps every process it can get (it never lets a slot go).
    "fork_loop": """\
LOOP = '''
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        os.fork()
    except OSError:
        time.sleep(0.05)
'''
subprocess.Popen([sys.executable, "-c", LOOP, str(STOP - time.monotonic()), MARKER], start_new_session=True)
time.sleep(max(0, END - time.monotonic()))
""",
    # kill -9 -1 (from the kernel, which it spares), again and again: every process it may signal.
    "kill_all": """\
while time.monotonic() < END:
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    time.sleep(0.5)
""",
    # Look for the other kernel in /proc (and its connection file) and signal it.
    "proc_scan": """\
signalled = set()
while time.monotonic() < END:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in (os.getpid(), 1):
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"ipykernel" in cmdline or b"kernel.json" in cmdline:
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                try:
                    os.kill(int(pid), sig)
                    signalled.add(pid)
                except OSError:
                    pass
    time.sleep(0.2)
print("signalled", sorted(signalled))
""",
}


def attack_cell(names: list[str]) -> str:
    """One cell running the named attacks one after the other, ATTACK_SECONDS in all."""
    parts = [_PRELUDE]
    share = f"END = time.monotonic() + {ATTACK_SECONDS} / {len(names)}\n"
    for name in names:
        parts.append(f"# --- {name}\n" + (share if len(names) > 1 else "") + ATTACKS[name])
    return "\n".join(parts)


CASES = {
    "hostile_spinners": ["spinners"],
    "hostile_fork_loop": ["fork_loop"],
    "hostile_kill_all": ["kill_all"],
    "hostile_proc_scan": ["proc_scan"],
    # All of them at once: spinners and the fork loop stay while the others run.
    "hostile_all": ["spinners", "fork_loop", "proc_scan", "kill_all"],
}


def build(out: Path) -> dict[str, dict[str, float]]:
    """Write every case into `out`; return its exact expected points per question."""
    blank = nbformat.read(CORPUS / "notebooks" / "blank_template.ipynb", as_version=4)
    zero = json.loads((CORPUS / "expected.json").read_text())["blank_template"]
    first_code = next(i for i, c in enumerate(blank.cells) if c.cell_type == "code")
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, attacks in CASES.items():
        nb = nbformat.from_dict(json.loads(json.dumps(blank)))
        cell = nbformat.v4.new_code_cell(attack_cell(attacks))
        cell["id"] = name.replace("_", "-")
        nb.cells.insert(first_code + 1, cell)
        (out / f"{name}.ipynb").write_text(nbformat.writes(nb) + "\n")
        expected[name] = dict(zero)
    return expected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite the committed files")
    args = parser.parse_args()
    if not args.update:
        parser.print_help()
        return 2
    expected = build(HERE / "notebooks")
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
