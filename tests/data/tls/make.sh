#!/usr/bin/env bash
# Regenerates the test certificates of tests/tls.rs (test-only keys: never
# use them anywhere else). EC P-256, valid for 100 years, so the checked-in
# files do not expire under the tests.
#
#   ca.pem                  the test CA
#   server.pem, server.key  localhost / 127.0.0.1, signed by the test CA
#   client.pem, client.key  a client certificate signed by the test CA
#   other-ca.pem            an unrelated CA
#   other-client.pem/.key   a client certificate signed by the unrelated CA
set -euo pipefail
cd "$(dirname "$0")"
DAYS=36500
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() { # name subject
  ec "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days "$DAYS" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem"
}
leaf() { # name ca subject extensions
  ec "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
    -days "$DAYS" -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca "slimgate test CA"
ca other-ca "unrelated test CA"
leaf server ca localhost "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf client ca "test client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
leaf other-client other-ca "other client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
# The CA keys are not needed by the tests; this script makes new ones.
rm -f ca.key other-ca.key ./*.srl
