"""Profile the gateway under load: py-spy samples the uvicorn worker while wrk drives chat c64.

Usage: python bench/profile.py [--seconds 8] [--scenario "chat c64"]
Needs py-spy (pip install py-spy; may need ptrace rights, e.g. run as root or with
CAP_SYS_PTRACE). Prints the top functions by own time and by total time, and writes a
flamegraph SVG under bench/results/.
"""

import argparse
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.load import SCENARIOS, wrk_run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def collapsed_top(path: Path, n: int) -> tuple[list, list, int]:
    """Own-time and total-time tops from a py-spy collapsed-stack file."""
    own, total, samples = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        c = int(count)
        frames = stack.split(";")
        samples += c
        own[frames[-1]] += c
        for f in set(frames):
            total[f] += c
    return own.most_common(n), total.most_common(n), samples


def main() -> None:
    """Start mock + gateway, record while wrk runs, print the tops."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--scenario", default="chat c64")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (CPU use)")
    args = parser.parse_args()
    if not shutil.which("py-spy"):
        sys.exit("bench: py-spy is not installed: pip install py-spy")
    RESULTS.mkdir(exist_ok=True)
    mock = servers.mock_start()
    data_dir, env = servers.gateway_prepare(mock.url)
    gw = servers.gateway_start(env)
    sc = next(s for s in SCENARIOS if s.name == args.scenario)
    try:
        wrk_run(gw.url, sc, 1)
        raw = RESULTS / "profile.collapsed"
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(gw.pid), "--duration", str(args.seconds),
                                "--rate", "250", *(["--gil"] if args.gil else []), "--format", "raw", "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        result = {}
        t = threading.Thread(target=lambda: result.update(wrk_run(gw.url, sc, args.seconds - 1)))
        t.start()
        t.join()
        spy.wait(60)
        print(f"{sc.name} while profiling: {result.get('rps', 0):.0f} req/s (py-spy slows it down)")
        own, total, samples = collapsed_top(raw, args.top)
        print(f"\nTop by own time ({samples} samples, all threads):")
        for frame, c in own:
            print(f"  {c / samples * 100:5.1f}%  {frame}")
        print("\nTop by total time (inclusive):")
        for frame, c in total:
            print(f"  {c / samples * 100:5.1f}%  {frame}")
    finally:
        gw.stop()
        mock.stop()
        servers.gateway_cleanup(data_dir, env)


if __name__ == "__main__":
    main()
