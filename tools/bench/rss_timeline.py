"""Runs a command and samples its resident memory over time: the peak (the kernel's, from
wait4), the wall time, and a timeline of VmRSS with each line the command prints, so that
the phases of a pipeline run (text encoders, transformer, VAE; each loaded and dropped in
`--memory sequential`) can be read off when the program prints no timings of its own. The
RSS sampled is the command's and its descendants' (so `-- /usr/bin/time -v CMD` works).

    /work/venv/bin/python tools/bench/rss_timeline.py [--interval 0.5] [--csv FILE] -- CMD ...

Prints, every time the RSS moves by more than --step GB (default 0.5) or the command prints a
line, `t = SECONDS  rss = GB  [line]`, then the peak.
"""

import argparse
import os
import resource
import subprocess
import sys
import threading
import time


def own_rss(pid):
    """One process's current VmRSS in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid):
    """The pids of `pid`'s children (all its threads')."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def rss_bytes(pid):
    """The VmRSS of `pid` and all its descendants (a wrapper such as /usr/bin/time
    included), in bytes."""
    return own_rss(pid) + sum(rss_bytes(c) for c in children(pid))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="sampling period, s")
    parser.add_argument("--step", type=float, default=0.5, help="report RSS moves of this, GB")
    parser.add_argument("--csv", help="also write every sample (seconds, bytes) here")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lock = threading.Lock()
    state = {"last": 0}

    def report(line=""):
        rss = rss_bytes(proc.pid)
        with lock:
            print(f"t = {time.time() - start:8.1f} s  rss = {rss / 1e9:6.2f} GB  {line}",
                  flush=True)
            state["last"] = rss

    def reader():
        for line in proc.stdout:
            report(line.rstrip())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    samples = []
    while proc.poll() is None:
        rss = rss_bytes(proc.pid)
        samples.append((time.time() - start, rss))
        if abs(rss - state["last"]) > args.step * 1e9:
            report()
        time.sleep(args.interval)
    # poll() reaped the child; its peak is in the children's usage.
    thread.join(timeout=5)
    wall = time.time() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"exit {proc.returncode}, wall {wall:.1f} s, "
          f"peak RSS {usage.ru_maxrss * 1024 / 1e9:.2f} GB (max sampled {max((r for _, r in samples), default=0) / 1e9:.2f} GB)")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("seconds,rss_bytes\n")
            f.writelines(f"{t:.2f},{r}\n" for t, r in samples)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
