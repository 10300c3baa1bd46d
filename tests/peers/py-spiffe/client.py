"""A Workload API client on py-spiffe (PyPI `spiffe`), run by the suite against ward's
Workload API the way a Python app would use its identity.

    client.py ADDR x509        the X.509 context as one JSON line
    client.py ADDR bundles     the X.509 bundles as one JSON line
    client.py ADDR jwt AUD     a JWT-SVID for AUD as one JSON line
    client.py ADDR validate AUD TOKEN

ADDR is `unix:///path`. An error is printed to stderr as `error: <type>: <text>`, exit 1.
"""

import json
import sys

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from spiffe import WorkloadApiClient


def bundles(bundle_set):
    out = {}
    for bundle in bundle_set.bundles:
        subjects = sorted(c.subject.rfc4514_string() for c in bundle.x509_authorities)
        out[str(bundle.trust_domain)] = subjects
    return out


def main():
    addr, cmd = sys.argv[1], sys.argv[2]
    client = WorkloadApiClient(socket_path=addr, default_timeout=30)
    try:
        if cmd == "x509":
            ctx = client.fetch_x509_context()
            svids = []
            for svid in ctx.x509_svids:
                leaf = svid.leaf
                # The key must be the leaf's: compare the public halves.
                match = svid.private_key.public_key().public_bytes(
                    Encoding.DER, PublicFormat.SubjectPublicKeyInfo
                ) == leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
                svids.append({
                    "spiffe_id": str(svid.spiffe_id),
                    "serial": format(leaf.serial_number, "x"),
                    "chain": len(svid.cert_chain),
                    "key_matches_leaf": match,
                })
            print(json.dumps({"svids": svids, "bundles": bundles(ctx.x509_bundle_set)}))
        elif cmd == "bundles":
            print(json.dumps(bundles(client.fetch_x509_bundles())))
        elif cmd == "jwt":
            svid = client.fetch_jwt_svid(audience={sys.argv[3]})
            print(json.dumps({"spiffe_id": str(svid.spiffe_id), "token": svid.token}))
        elif cmd == "validate":
            svid = client.validate_jwt_svid(sys.argv[4], sys.argv[3])
            print(json.dumps({"spiffe_id": str(svid.spiffe_id), "audience": sorted(svid.audience)}))
        else:
            raise SystemExit(f"unknown command {cmd}")
    except Exception as e:  # the test reads the kind of failure
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        client.close()


if __name__ == "__main__":
    main()
