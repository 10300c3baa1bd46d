#!/usr/bin/env python3
"""What transparent capture costs: two pods as network namespaces joined by a veth pair,
nginx in one, wrk in the other, both sidecars running at once and serving both ways in.

  explicit  the app dials its sidecar's outbound listener, which dials the server
            sidecar's inbound listener (ports written in config);
  captured  the app dials the server pod's address; `ward-proxy init` sends it through
            both sidecars (original-destination routing on both sides).

Req/s at saturation, alternating rounds; the figure to watch is captured / explicit
(target: capture costs at most 5 %). Needs root (network namespaces, nftables); without
it, says why and exits 0.

    python3 bench/capture.py [--bin-dir target/release] [--seconds 10] [--rounds 3]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run as bench

CLIENT_NS, SERVER_NS = "wardbench-c", "wardbench-s"
CLIENT_IP, SERVER_IP = "10.88.0.1", "10.88.0.2"
UID = "1337"


def sh(*argv: str) -> str:
    return bench.run(list(argv), 60)


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def as_proxy(ns: str, *argv: str) -> list[str]:
    return in_ns(ns, "setpriv", "--reuid", UID, "--regid", UID, "--clear-groups", *argv)


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "not root (network namespaces and nftables need it)"
    missing = [t for t in ("ip", "nft", "wrk", "nginx", "setpriv") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


def make_pods() -> None:
    for ns in (CLIENT_NS, SERVER_NS):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", "wbc0", "netns", CLIENT_NS, "type", "veth", "peer", "name", "wbs0",
       "netns", SERVER_NS)
    for ns, dev, addr in ((CLIENT_NS, "wbc0", CLIENT_IP), (SERVER_NS, "wbs0", SERVER_IP)):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")


def sidecar_configs(work: Path, pki: bench.Pki) -> tuple[Path, Path]:
    policies = work / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(bench.POLICY)
    common = f"trust_domain: {bench.TRUST_DOMAIN}\nruntime: {{ worker_threads: 1 }}\n"
    common += f"policy: {{ dir: {policies} }}\nadmin: 127.0.0.1:15000\n"
    server = work / "server.yaml"
    server.write_text(common + f"""\
identity: {{ cert: {pki.cert('server')}, key: {pki.key('server')}, bundle: {pki.bundle} }}
workload: {{ namespace: bench, labels: {{ app: server }} }}
inbound:
  - {{ listen: "{SERVER_IP}:16006", app: "{SERVER_IP}:80" }}
capture: {{}}
""")
    client = work / "client.yaml"
    client.write_text(common + f"""\
identity: {{ cert: {pki.cert('client')}, key: {pki.key('client')}, bundle: {pki.bundle} }}
workload: {{ namespace: bench, labels: {{ app: client }} }}
outbound:
  - {{ listen: "127.0.0.1:17001", upstream: "{SERVER_IP}:16006", server_identity: "{bench.SERVER_ID}" }}
capture:
  destinations:
    - {{ address: "{SERVER_IP}:80", spiffe_id: "{bench.SERVER_ID}" }}
""")
    return client, server


def start(work: Path, ward_proxy: Path) -> list[bench.Proc]:
    nginx_dir = work / "nginx"
    (nginx_dir / "www").mkdir(parents=True)
    (nginx_dir / "www" / "1k").write_bytes(b"w" * 1024)
    (nginx_dir / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {nginx_dir}/nginx.pid;
error_log {nginx_dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path {nginx_dir}/tmp;
  server {{ listen {SERVER_IP}:80; root {nginx_dir}/www; location = /1k {{ sendfile off; }} }}
}}
""")
    procs = [bench.Proc("nginx", in_ns(SERVER_NS, "nginx", "-p", str(nginx_dir), "-c",
                                        str(nginx_dir / "nginx.conf")), work)]
    sh(*in_ns(SERVER_NS, str(ward_proxy), "init", "--exclude-inbound-ports", "16006"))
    sh(*in_ns(CLIENT_NS, str(ward_proxy), "init"))
    client, server = sidecar_configs(work, bench.Pki(ward_proxy.parent / "ward", work))
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(work)], check=True)
    for ns, name, cfg in ((SERVER_NS, "server", server), (CLIENT_NS, "client", client)):
        procs.append(bench.Proc(name, as_proxy(ns, str(ward_proxy), "sidecar", "--config",
                                               str(cfg)), work))
    for ns in (SERVER_NS, CLIENT_NS):
        def ready(ns=ns):
            out = subprocess.run(in_ns(ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                       "http://127.0.0.1:15000/ready"), capture_output=True,
                                 text=True)
            return out.stdout == "200"
        bench.wait_until(f"{ns} sidecar ready", ready, procs)
    return procs


def saturate(url: str, seconds: int) -> float:
    out = sh(*in_ns(CLIENT_NS, "wrk", "-t1", "-c50", f"-d{seconds}s", url))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise bench.BenchError(f"{url}: {bad.group(1)} failed responses")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", type=Path, default=bench.ROOT / "target" / "release")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=bench.ROOT / "bench" / "results" / "capture.md")
    args = ap.parse_args()
    why = unavailable()
    if why:
        print(f"capture bench: skipped: {why}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="ward-capture-bench-"))
    work.chmod(0o755)
    cases = {"explicit": "http://127.0.0.1:17001/1k", "captured": f"http://{SERVER_IP}/1k"}
    rps: dict[str, list[float]] = {k: [] for k in cases}
    try:
        make_pods()
        start(work, args.bin_dir.resolve() / "ward-proxy")
        for name, url in cases.items():
            saturate(url, 2)  # warm-up, not counted
        for r in range(args.rounds):
            order = list(cases) if r % 2 == 0 else list(reversed(cases))
            for name in order:
                rps[name].append(saturate(cases[name], args.seconds))
                print(f"round {r + 1} {name}: {rps[name][-1]:.0f} req/s", flush=True)
    finally:
        for p in reversed(bench.ALL_PROCS):
            p.stop()
        for ns in (CLIENT_NS, SERVER_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    med = {k: statistics.median(v) for k, v in rps.items()}
    ratio = med["captured"] / med["explicit"]
    verdict = "within" if ratio >= 0.95 else "OVER"
    report = (f"# Transparent capture, HTTP/1.1 1 KiB, wrk -c50, {args.rounds} alternating rounds "
              f"of {args.seconds} s ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
              f"| case | req/s (median) | runs |\n|---|---:|---|\n"
              + "".join(f"| {k} | {med[k]:,.0f} | {', '.join(f'{x:.0f}' for x in rps[k])} |\n"
                        for k in cases)
              + f"\ncaptured / explicit = {ratio:.3f} ({verdict} the 5 % budget)\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
