#!/usr/bin/env python3
"""Generate the test keys of the JWT verifier (run once; the output is checked in).

Every key here is a TEST key, generated for this repository and used for
nothing else. Private keys are stored as PKCS#8 DER (what ring loads);
each key also gets `<name>.jwk.json` with its public JWK, and `jwks.json`
is the key set most tests and the fuzz targets load.

RSA keys come from the `openssl` CLI (as the project brief asks); the EC
keys and the JWK encoding use Python's `cryptography`.

    python3 tests/keys/generate.py          # from the repository root
"""
import base64
import json
import os
import subprocess

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")

# The injected clock of the tests (tests/common/mod.rs has the same value).
NOW = 1_700_000_000

RSA_KEYS = {
    # name: (bits, public exponent)
    "rsa2048": (2048, 65537),
    "rsa3072": (3072, 65537),
    "rsa4096": (4096, 65537),
    "rsa2047": (2047, 65537),  # one bit short: ring would accept it (bytes rounded up)
    "rsa1024": (1024, 65537),
    "rsa2048_e3": (2048, 3),
}
EC_KEYS = ["ec_p256", "ec_p256_b"]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def load(name):
    with open(os.path.join(HERE, name + ".pk8.der"), "rb") as f:
        return serialization.load_der_private_key(f.read(), password=None)


def gen_rsa(name, bits, e):
    pem = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA",
         "-pkeyopt", f"rsa_keygen_bits:{bits}",
         "-pkeyopt", f"rsa_keygen_pubexp:{e}"],
        check=True, capture_output=True).stdout
    der = subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-nocrypt", "-outform", "DER"],
        input=pem, check=True, capture_output=True).stdout
    with open(os.path.join(HERE, name + ".pk8.der"), "wb") as f:
        f.write(der)


def gen_ec(name):
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER,
                            serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with open(os.path.join(HERE, name + ".pk8.der"), "wb") as f:
        f.write(der)


def public_jwk(name):
    key = load(name)
    pub = key.public_key().public_numbers()
    if name.startswith("rsa"):
        jwk = {"kty": "RSA", "kid": name, "use": "sig", "alg": "RS256",
               "n": b64u(int_bytes(pub.n)), "e": b64u(int_bytes(pub.e))}
    else:
        jwk = {"kty": "EC", "kid": name, "use": "sig", "alg": "ES256", "crv": "P-256",
               "x": b64u(pub.x.to_bytes(32, "big")), "y": b64u(pub.y.to_bytes(32, "big"))}
    with open(os.path.join(HERE, name + ".jwk.json"), "w") as f:
        json.dump(jwk, f, indent=1)
        f.write("\n")
    return jwk


def sign_rs256(name, header, payload):
    key = load(name)
    signing_input = b64u(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64u(json.dumps(payload, separators=(",", ":")).encode())
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64u(sig)


def main():
    for name, (bits, e) in RSA_KEYS.items():
        if not os.path.exists(os.path.join(HERE, name + ".pk8.der")):
            gen_rsa(name, bits, e)
    for name in EC_KEYS:
        if not os.path.exists(os.path.join(HERE, name + ".pk8.der")):
            gen_ec(name)
    jwks = {name: public_jwk(name) for name in list(RSA_KEYS) + EC_KEYS}
    # The set most tests use: only keys that pass every hygiene rule.
    good = [jwks[n] for n in ["rsa2048", "rsa3072", "rsa4096", "ec_p256"]]
    with open(os.path.join(HERE, "jwks.json"), "w") as f:
        json.dump({"keys": good}, f, indent=1)
        f.write("\n")
    # A token signed by the 2047-bit key (ring's RSA_PKCS1_2048_8192_SHA256
    # accepts it because it rounds the modulus up to whole bytes).
    os.makedirs(DATA, exist_ok=True)
    claims = {"iss": "https://idp.example/realms/test", "aud": "slimgate", "sub": "alice",
              "iat": NOW, "exp": NOW + 600}
    token = sign_rs256("rsa2047", {"alg": "RS256", "typ": "JWT", "kid": "rsa2047"}, claims)
    with open(os.path.join(DATA, "rsa2047_token.txt"), "w") as f:
        f.write(token + "\n")


if __name__ == "__main__":
    main()
