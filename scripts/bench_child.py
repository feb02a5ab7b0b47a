"""The `herald serve` process a `herald bench` run starts, for the scripts that look
inside it while it runs (`scripts/profile`, `scripts/log-pages`)."""

import os
import sys
import time


def serve_child(bench_pid):
    """(pid, command-line arguments) of the `serve` process the bench started, once it
    exists."""
    for _ in range(400):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    arguments = cmdline.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if parent == bench_pid and b"serve" in arguments:
                return int(entry), arguments
        time.sleep(0.05)
    sys.exit("the bench started no `serve` process")
