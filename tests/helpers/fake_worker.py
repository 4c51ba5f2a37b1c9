"""A stand-in for `stockscale train` that behaves as its --config tells it, for launcher tests.

Config keys (per-rank overrides under `ranks: {<rank>: {...}}`):
  behave: success | env | alloc | exit | sleep | memoryerror | selfkill | nojson
  metrics: the JSON object `success` prints last
  code: exit code for `exit`;  delay: seconds to wait before behaving
  alloc_mib / chunk_mib: how much `alloc` allocates at most (then sleeps), in chunks
  ignore_term: ignore SIGTERM (the launcher must escalate to SIGKILL)
  spawn: start a grandchild in its own session that sleeps (the launcher must still end it)
  report_json: for `memoryerror`, print the train command's final {"status": "oom"} line
Every worker first prints {"event": "started", "rank": r, "pid": p, "children": [...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import yaml

DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "PET_MASTER_ADDR", "PET_MASTER_PORT", "WORLD_SIZE", "RANK",
             "PET_NODE_RANK", "PET_NNODES", "PET_NPROC_PER_NODE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
             "GROUP_RANK", "PYTHONUNBUFFERED", "OMP_NUM_THREADS")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    with open(args.config, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    rank = int(os.environ.get("RANK", "0"))
    ranks = config.get("ranks", {})  # rank keys are strings in the job's YAML (its JSON-valued overrides)
    settings = {**config, **ranks.get(rank, ranks.get(str(rank), {}))}

    if settings.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    children = []
    if settings.get("spawn"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
        children.append(child.pid)
    print(json.dumps({"event": "started", "rank": rank, "pid": os.getpid(), "children": children}))
    print("a plain log line")
    time.sleep(float(settings.get("delay", 0)))

    behave = settings.get("behave", "success")
    if behave == "success":
        print(json.dumps({"status": "success", "rank": rank, **settings.get("metrics", {})}))
        return 0
    if behave == "nojson":
        return 0
    if behave == "env":
        seen = {name: os.environ[name] for name in DIST_VARS if name in os.environ}
        seen.update({name: value for name, value in os.environ.items() if name.startswith("PET_")})
        print(json.dumps({"status": "success", "rank": rank, "env": seen, "argv": sys.argv[1:],
                          "config": config, "session_leader": os.getsid(0) == os.getpid()}))
        return 0
    if behave == "exit":
        print(f"boom from rank {rank}", file=sys.stderr)
        return int(settings.get("code", 1))
    if behave == "selfkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if behave == "memoryerror":
        try:
            raise MemoryError("cannot allocate 1.2 GiB for the training windows")
        except MemoryError as error:
            if settings.get("report_json"):
                print(json.dumps({"status": "oom", "detail": f"MemoryError: {error}"}))
            return 3
    if behave == "alloc":
        chunk = int(settings.get("chunk_mib", 16)) * 1024**2
        held = []
        for _ in range(int(settings.get("alloc_mib", 1024)) * 1024**2 // chunk):
            held.append(b"x" * chunk)  # written, so resident (not lazily zero-mapped)
            time.sleep(float(settings.get("chunk_pause", 0.005)))
    while True:  # sleep, or hold what `alloc` got until someone ends us
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
