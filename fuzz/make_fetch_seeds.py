#!/usr/bin/env python3
"""Write the seed corpora of the key-fetching fuzz targets (run from the
repository root; the output is checked in under fuzz/seeds/<target>/):

- fetch_response: raw HTTP/1.1 answers a server could send to the JWKS
  fetcher (valid ones are named valid_*; tests/oidc_fuzz_seeds.rs checks
  that exactly those are accepted with the target's 1024-byte body limit);
- oidc_discovery: discovery documents for the target's issuer (valid_*
  accepted) and URLs.
"""
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
ISSUER = "http://keycloak.keycloak.svc.cluster.local/realms/openshell"

JWKS = json.dumps({"keys": [{"kty": "EC", "kid": "k1", "crv": "P-256",
                             "x": "a_QWr_r5IheCPOKQ3SNV2i1JVP2PhO1mQFUip1tZYXE",
                             "y": "t1wHXcIe8Ej4-tX1WhL9SxQsqSb7vxE84_voSGEqa1Y"}]}).encode()


def response(status, headers, body=b""):
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode() + body


def chunked(body, size):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


FETCH = {
    "valid_content_length": response("200 OK", [("content-type", "application/json"),
                                                 ("content-length", len(JWKS))], JWKS),
    "valid_chunked": response("200 OK", [("transfer-encoding", "chunked")], chunked(JWKS, 37)),
    "valid_close_delimited": response("200 OK", [("connection", "close")], JWKS),
    "valid_continue_then_ok": b"HTTP/1.1 100 Continue\r\n\r\n"
    + response("200 OK", [("content-length", 2)], b"{}"),
    "valid_trailers": response("200 OK", [("transfer-encoding", "chunked")],
                               b"2\r\n[]\r\n0\r\nx-trailer: 1\r\n\r\n"),
    "redirect": response("302 Found", [("location", "http://evil.example/"),
                                       ("content-length", 0)]),
    "status_500": response("500 Internal Server Error", [("content-length", 5)], b"oops!"),
    "oversize_announced": response("200 OK", [("content-length", 5000)], b"{}"),
    "oversize_chunked": response("200 OK", [("transfer-encoding", "chunked")],
                                 chunked(b" " * 1100 + b"{}", 500)),
    "not_json": response("200 OK", [("content-type", "text/html"), ("content-length", 6)],
                         b"<html>"),
    "truncated_body": response("200 OK", [("content-length", 100)], b"{\"keys\":"),
    "bad_chunk_size": response("200 OK", [("transfer-encoding", "chunked")], b"zz\r\n{}\r\n0\r\n\r\n"),
    "two_lengths": response("200 OK", [("content-length", 2), ("content-length", 3)], b"{}"),
    "valid_http10": b"HTTP/1.0 200 OK\r\n\r\n{}",
    "garbage": b"SSH-2.0-OpenSSH_9.6\r\n",
    "empty": b"",
}

DISCOVERY = {
    "valid_keycloak": json.dumps({
        "issuer": ISSUER,
        "authorization_endpoint": ISSUER + "/protocol/openid-connect/auth",
        "token_endpoint": ISSUER + "/protocol/openid-connect/token",
        "jwks_uri": ISSUER + "/protocol/openid-connect/certs",
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "mtls_endpoint_aliases": {"token_endpoint": ISSUER + "/mtls/token"},
    }, indent=1).encode(),
    "valid_ipv6_port": json.dumps({"issuer": ISSUER, "jwks_uri": "http://[fd00::1]:8080/certs?x=1"}).encode(),
    "issuer_mismatch": json.dumps({"issuer": ISSUER + "/", "jwks_uri": "http://idp/certs"}).encode(),
    "https_jwks": json.dumps({"issuer": ISSUER, "jwks_uri": "https://idp/certs"}).encode(),
    "userinfo_jwks": json.dumps({"issuer": ISSUER, "jwks_uri": "http://a:b@idp/certs"}).encode(),
    "duplicate_issuer": ('{"issuer":"%s","issuer":"%s","jwks_uri":"http://idp/c"}' % (ISSUER, ISSUER)).encode(),
    "no_jwks_uri": json.dumps({"issuer": ISSUER}).encode(),
    "url_plain": b"http://idp.example:8080/realms/x?y=1",
    "url_ipv6": b"http://[::1]/jwks",
    "url_bad": b"http://127.1:0/#x",
}

for target, seeds in (("fetch_response", FETCH), ("oidc_discovery", DISCOVERY)):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
