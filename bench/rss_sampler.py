#!/usr/bin/python3
"""Peak memory of a server during a bench/relay run, sampled from /proc.

    rss_sampler.py --pid PID [--children NAME,NAME,...] --out FILE [--interval 0.2]

Without --children: the peak resident set of PID itself (VmHWM, which the kernel keeps
for us, so sampling only has to happen before the process exits).

With --children (Postfix: --pid MASTER --children smtpd,cleanup,qmgr,smtp): Postfix is
many short-lived processes (an smtpd serves 100 clients, then exits, taking its VmHWM
with it), so every --interval seconds the sampler adds up VmHWM over the live children
of PID whose command name is listed, and keeps the largest sum. Shared pages (libraries,
the binary) count once per process, which overstates Postfix a little; say so when
comparing.

It also keeps the largest sum of Pss (from /proc/PID/smaps_rollup), which charges each
shared page to its sharers in proportion, so sums over many processes are fair.

Runs until SIGTERM/SIGINT, then writes `PEAK_KB <n>` and `PEAK_PSS_KB <n>` to --out.
"""

import argparse
import os
import signal
import time

stop = False


def on_signal(signum, frame):
    global stop
    stop = True


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return 0


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return 0


def children(ppid, names):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            # comm is in parentheses and may contain spaces; ppid is the 2nd field after it.
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid_of = int(stat[stat.rindex(")") + 2:].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
        if ppid_of == ppid and comm in names:
            out.append(int(entry))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--children", help="comma-separated command names of child processes to sum")
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    names = set(args.children.split(",")) if args.children else None

    peak = 0
    peak_pss = 0
    while True:
        pids = children(args.pid, names) if names else [args.pid]
        peak = max(peak, sum(status_kb(pid, "VmHWM") for pid in pids))
        peak_pss = max(peak_pss, sum(pss_kb(pid) for pid in pids))
        if stop:
            break
        time.sleep(args.interval)
    with open(args.out, "w") as f:
        f.write(f"PEAK_KB {peak}\nPEAK_PSS_KB {peak_pss}\n")


if __name__ == "__main__":
    main()
