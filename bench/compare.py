#!/usr/bin/env python3
"""Latency of two ward builds side by side, to tell a regression from the machine's noise.

Both builds run at once against one nginx, each as a client + server sidecar pair with the
same policy and certificates as bench/run.py; the fixed-rate latency runs alternate between
them (the order flips every round), so drift of the machine over time lands on both.
A short warm-up per build and case runs first and is not counted. Prints every run and,
per case, each build's p99 values sorted, with their median.

    python3 bench/compare.py --base target/baseline/release [--new target/release]
        [--cases http1,http2,grpc] [--rounds 6] [--seconds 10] [--rate 2000] [--saturation]

The base build is any release build of an earlier commit, e.g. built with
CARGO_TARGET_DIR=target/baseline in a git worktree (a separate target directory, so that
the workspace's own artefacts are not overwritten).
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import run as bench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="bin dir of the build to compare against")
    ap.add_argument("--new", type=Path, default=bench.ROOT / "target" / "release")
    ap.add_argument("--cases", default="http1,http2,grpc")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--saturation", action="store_true",
                    help="also req/s at saturation and sidecar CPU per 1k requests, alternating")
    args = ap.parse_args()
    builds = {"base": args.base.resolve(), "new": args.new.resolve()}
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in ("http1", "http2", "grpc")]
    missing = [str(b / n) for b in builds.values() for n in ("ward", "ward-proxy") if not (b / n).exists()]
    if unknown or missing:
        print(f"compare: unknown cases {unknown} / missing {missing}", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="ward-compare-"))
    workdir.chmod(0o755)  # nginx workers read www/ in it
    p99: dict = {c: {b: [] for b in builds} for c in cases}
    rps: dict = {c: {b: [] for b in builds} for c in cases}
    cpu: dict = {c: {b: [] for b in builds} for c in cases}
    try:
        pki = bench.Pki(builds["new"] / "ward", workdir)
        app = bench.Nginx(workdir, 16)
        grpc_body = workdir / "grpc-request.bin"
        payload = b"\x0a\x05hello"
        grpc_body.write_bytes(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        stacks = {}
        for name, bins in builds.items():
            (workdir / name).mkdir()
            stacks[name] = bench.ward_stack(bins / "ward-proxy", pki, app, workdir / name, 1)
        # The first seconds of load on fresh processes (page faults, pool growth, nginx
        # warming up) are far slower than the rest; they are run and not counted.
        for case in cases:
            for name in builds:
                bench.latency(case, stacks[name], 3, args.rate, grpc_body, app)
        for r in range(args.rounds):
            order = list(builds) if r % 2 == 0 else list(reversed(builds))
            for case in cases:
                for name in order:
                    if args.saturation:
                        sat = bench.saturate(case, stacks[name], args.seconds, grpc_body, app)
                        rps[case][name].append(sat["rps"])
                        cpu[case][name].append(sat["cpu_s_per_1k"])
                        print(f"round {r + 1} {case} {name}: {sat['rps']:.0f} req/s, "
                              f"{sat['cpu_s_per_1k']:.4f} CPU s/1k, {sat['failed']} failed", flush=True)
                    res = bench.latency(case, stacks[name], args.seconds, args.rate, grpc_body, app)
                    p99[case][name].append(res["p99_ms"])
                    print(f"round {r + 1} {case} {name}: p50 {res['p50_ms']} p99 {res['p99_ms']} "
                          f"p99.9 {res['p999_ms']} ms, {res['failed']} failed", flush=True)
    finally:
        for p in reversed(bench.ALL_PROCS):
            p.stop()
    for case in cases:
        for name in builds:
            v = sorted(x for x in p99[case][name] if x is not None)
            med = statistics.median(v) if v else None
            print(f"{case} {name}: p99 ms {v}, median {med}")
            if rps[case][name]:
                print(f"{case} {name}: req/s median {statistics.median(rps[case][name]):.0f}, "
                      f"CPU s/1k median {statistics.median(cpu[case][name]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
