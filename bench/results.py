"""What the benchmark scripts share: the release qcc binary, running a command for its time and
peak memory, and rewriting one marked section of bench/RESULTS.md, leaving the others as they are."""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
RESULTS = os.path.join(HERE, "RESULTS.md")
HEADER = "# Benchmark results\n\nMeasured by the scripts in this folder; each section says which.\n\n"


def release_qcc():
    """Builds qcc with `--release` (benchmarks never time a debug build) and returns its path."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "qcc"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "qcc")


def run_measured(cmd):
    """Runs `cmd` to its end; returns (wall seconds, peak resident memory of the process in KiB,
    its standard output). Exits with its error output when it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{err.read().decode(errors='replace')}")
        return seconds, usage.ru_maxrss, out.read().decode(errors="replace")


def update_section(name, section):
    """Replaces the text between `<!-- NAME:begin` and `<!-- NAME:end -->` (which `section` must
    itself start and end with), or appends `section` when the file has none yet."""
    text = open(RESULTS).read() if os.path.exists(RESULTS) else HEADER
    begin, end = f"<!-- {name}:begin", f"<!-- {name}:end -->"
    if begin in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    open(RESULTS, "w").write(text)
    print("updated", RESULTS)
