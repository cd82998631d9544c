#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (run from the repository root;
the output is checked in under fuzz/seeds/<target>/).

Seeds are valid and near-valid inputs, signed with the checked-in TEST keys
at the fuzz targets' clock (NOW), so the fuzzer starts from inputs that
reach deep into the verifier.
"""
import base64
import copy
import json
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
KEYS = os.path.join(ROOT, "tests", "keys")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
NOW = 1_700_000_000
ISSUER = "https://idp.example/realms/test"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key(name):
    with open(os.path.join(KEYS, name + ".pk8.der"), "rb") as f:
        return serialization.load_der_private_key(f.read(), password=None)


def sign(name, signing_input: bytes) -> bytes:
    k = key(name)
    if isinstance(k, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(k.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return k.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


def token(header, claims, name, raw=False):
    h = header if raw else json.dumps(header, separators=(",", ":")).encode()
    p = claims if raw else json.dumps(claims, separators=(",", ":")).encode()
    si = b64u(h) + "." + b64u(p)
    return si + "." + b64u(sign(name, si.encode()))


CLAIMS = {
    "iss": ISSUER, "aud": "slimgate", "sub": "alice", "iat": NOW - 10, "exp": NOW + 300,
    "azp": "cli", "jti": "id-1", "realm_access": {"roles": ["openshell-user"]},
    "scope": "openid profile openshell:sandbox",
}


def claims(**changes):
    c = copy.deepcopy(CLAIMS)
    for k, v in changes.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    rs = {"alg": "RS256", "typ": "JWT", "kid": "rsa2048"}
    es = {"alg": "ES256", "typ": "JWT", "kid": "ec_p256"}
    t = "jwt_token"
    write(t, "valid_rs256", token(rs, CLAIMS, "rsa2048"))
    write(t, "valid_rs3072", token(dict(rs, kid="rsa3072"), CLAIMS, "rsa3072"))
    write(t, "valid_rs4096", token(dict(rs, kid="rsa4096"), CLAIMS, "rsa4096"))
    write(t, "valid_es256", token(es, CLAIMS, "ec_p256"))
    write(t, "valid_es256_no_typ", token({"alg": "ES256", "kid": "ec_p256"}, CLAIMS, "ec_p256"))
    write(t, "valid_azp_only", token(es, claims(aud=None, azp="slimgate"), "ec_p256"))
    write(t, "valid_aud_array", token(es, claims(aud=["x", "slimgate"]), "ec_p256"))
    write(t, "valid_float_exp", token(es, claims(exp=NOW + 300.5), "ec_p256"))
    write(t, "expired", token(es, claims(exp=NOW - 100), "ec_p256"))
    write(t, "nbf_future", token(es, claims(nbf=NOW + 1000), "ec_p256"))
    write(t, "nbf_string", token(es, claims(nbf="soon"), "ec_p256"))
    write(t, "bad_issuer", token(es, claims(iss=ISSUER + "/"), "ec_p256"))
    write(t, "bad_audience", token(es, claims(aud="other"), "ec_p256"))
    write(t, "no_sub", token(es, claims(sub=None), "ec_p256"))
    write(t, "unknown_kid", token(dict(es, kid="nope"), CLAIMS, "ec_p256"))
    write(t, "no_kid_ambiguous", token({"alg": "RS256"}, CLAIMS, "rsa2048"))
    write(t, "wrong_key", token(rs, CLAIMS, "rsa3072"))
    write(t, "kid_mismatch", token(dict(es, kid="rsa2048"), CLAIMS, "ec_p256"))
    write(t, "crit", token(dict(rs, crit=["exp"]), CLAIMS, "rsa2048"))
    write(t, "jwk_header", token(dict(es, jwk={"kty": "EC"}), CLAIMS, "ec_p256"))
    write(t, "cty_jwt", token(dict(es, cty="JWT"), CLAIMS, "ec_p256"))
    write(t, "typ_bad", token(dict(es, typ="JWS"), CLAIMS, "ec_p256"))
    write(t, "dup_alg", token(b'{"alg":"ES256","alg":"none","kid":"ec_p256"}',
                              json.dumps(CLAIMS).encode(), "ec_p256", raw=True))
    write(t, "dup_sub", token(json.dumps(es).encode(),
                              json.dumps(CLAIMS)[:-1].encode() + b',"sub":"bob"}', "ec_p256", raw=True))
    write(t, "alg_none", b64u(b'{"alg":"none"}') + "." + b64u(json.dumps(CLAIMS).encode()) + ".")
    write(t, "hs256", token(dict(rs, alg="HS256"), CLAIMS, "rsa2048"))
    write(t, "four_dots", token(es, CLAIMS, "ec_p256") + ".x.y")
    write(t, "padding", token(es, CLAIMS, "ec_p256") + "==")
    write(t, "dots", "." * 64)

    c = "jwt_claims"
    for name, value in [
        ("valid", CLAIMS), ("azp_only", claims(aud=None, azp="slimgate")),
        ("aud_array", claims(aud=["a", "slimgate"])), ("aud_empty", claims(aud=[])),
        ("float_dates", claims(exp=NOW + 300.9, nbf=NOW - 0.5, iat=NOW - 10.5)),
        ("exp_string", claims(exp="1700000300")), ("exp_big", claims(exp=2**53 + 1)),
        ("exp_negative", claims(exp=-1)), ("nbf_null", claims(nbf=None) | {"nbf": None}),
        ("roles_deep", claims(resource_access={"slimgate": {"roles": ["r1", "r2"]}},
                              scp=["openid", "openshell:all"])),
        ("roles_bad", claims(realm_access={"roles": "admin"})),
        ("scope_array", claims(scope=["a", "openid"])),
        ("lifetime", claims(exp=NOW + 90000)), ("sub_empty", claims(sub="")),
    ]:
        write(c, name, json.dumps(value))
    write(c, "dup_exp", json.dumps(CLAIMS)[:-1] + ',"exp":1}')
    write(c, "deep", '{"a":' + "[" * 20 + "]" * 20 + "}")
    write(c, "surrogate", '{"sub":"\\ud800"}')

    j = "jwks_parse"
    with open(os.path.join(KEYS, "jwks.json"), "rb") as f:
        write(j, "test_set", f.read())
    jwk = {}
    for name in ["rsa2048", "ec_p256", "rsa2047", "rsa1024", "rsa2048_e3"]:
        with open(os.path.join(KEYS, name + ".jwk.json")) as f:
            jwk[name] = json.load(f)
    write(j, "weak_rsa", json.dumps({"keys": [jwk["rsa2047"], jwk["rsa1024"], jwk["rsa2048_e3"]]}))
    write(j, "private", json.dumps({"keys": [dict(jwk["rsa2048"], d="AQAB"), dict(jwk["ec_p256"], d="AQAB")]}))
    write(j, "oct_okp", json.dumps({"keys": [{"kty": "oct", "k": "AAAA"}, {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, jwk["rsa2048"]]}))
    write(j, "dup_kid", json.dumps({"keys": [jwk["rsa2048"], jwk["rsa2048"], jwk["ec_p256"]]}))
    bad_point = dict(jwk["ec_p256"], y=b64u(b"\x01" * 32))
    write(j, "bad_ec", json.dumps({"keys": [bad_point, dict(jwk["ec_p256"], crv="P-384"), dict(jwk["ec_p256"], x="AAAA")]}))
    write(j, "use_ops_alg", json.dumps({"keys": [dict(jwk["rsa2048"], use="enc"), dict(jwk["rsa2048"], key_ops=["sign"]), dict(jwk["ec_p256"], alg="ES384")]}))
    write(j, "no_kid", json.dumps({"keys": [{k: v for k, v in jwk["ec_p256"].items() if k != "kid"}]}))
    write(j, "empty", '{"keys":[]}')


if __name__ == "__main__":
    main()
