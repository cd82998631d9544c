// A real OpenID provider (panva/node-oidc-provider) for slimgate's
// end-to-end key test (tests/oidc_provider.rs). Loopback only.
//
// - Listens on 127.0.0.1 on a free port; prints one JSON line on stdout:
//   {"issuer": "...", "token_endpoint": "..."}.
// - One confidential client, `slimgate-e2e`, allowed the client-credentials
//   grant. Resource indicators are on, so access tokens are JWTs (typ
//   at+jwt) for the audience `slimgate`: resource `urn:slimgate:rs256` signs
//   with RS256, `urn:slimgate:es256` with ES256.
// - Signing keys: a fresh RSA 2048 and a P-256 key, generated at start.
//   `POST /__rotate` replaces both with new ones (new kids): tokens signed
//   before are no longer verifiable with the published JWKS.
//
// Test keys and a test client secret only: nothing here is a credential.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const CLIENT_ID = 'slimgate-e2e';
const CLIENT_SECRET = 'e2e-test-secret-not-a-credential';
const AUDIENCE = 'slimgate';

function signingKeys(generation) {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  return {
    keys: [
      { ...rsa.export({ format: 'jwk' }), kid: `rsa-${generation}`, alg: 'RS256', use: 'sig' },
      { ...ec.export({ format: 'jwk' }), kid: `ec-${generation}`, alg: 'ES256', use: 'sig' },
    ],
  };
}

function makeProvider(issuer, generation) {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
      scope: 'openshell:all',
    }],
    scopes: ['openshell:all'],
    jwks: signingKeys(generation),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:slimgate:rs256',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          const alg = { 'urn:slimgate:rs256': 'RS256', 'urn:slimgate:es256': 'ES256' }[resource];
          if (!alg) throw new Error(`unknown resource ${resource}`);
          return {
            scope: 'openshell:all',
            audience: AUDIENCE,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    // The user role, where slimgate reads it by default (Keycloak's place).
    extraTokenClaims: () => ({ realm_access: { roles: ['openshell-user'] } }),
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

let generation = 0;
let current;

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/__rotate') {
    generation += 1;
    current = makeProvider(issuer, generation);
    handler = current.callback();
    res.writeHead(204).end();
    return;
  }
  handler(req, res);
});

let issuer;
let handler;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  current = makeProvider(issuer, generation);
  handler = current.callback();
  process.stdout.write(`${JSON.stringify({ issuer, token_endpoint: `${issuer}/token` })}\n`);
});

// Exit with the test: when stdin closes (the test process is gone).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
