// The peer for G3: node `oidc-provider` (OpenID-certified) issuing RS256 JWT access tokens through
// client_credentials, served over https like Lanyard. Usage: node oidc_provider.mjs CONFIG.json
//
// CONFIG (written by benchkit/peer.py): module (path to oidc-provider's lib/index.js), port,
// issuer, tls_cert, tls_key, signing_key (PEM paths), resource, scope, secret_client
// {client_id, client_secret}, jwt_client {client_id, public_key (PEM path)}.
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { default: Provider } = await import(pathToFileURL(config.module).href);

const jwk = (pem, isPrivate) => ({
  ...(isPrivate ? createPrivateKey(pem) : createPublicKey(pem)).export({ format: 'jwk' }),
  alg: 'RS256',
  use: 'sig',
});

// Lanyard does not reject a reused client-assertion jti, and wrk can only replay one request
// body, so the peer gets the same treatment: a store whose ReplayDetection never remembers.
// Everything else lives in a plain Map (client_credentials JWT access tokens are not stored).
class BenchAdapter {
  static store = new Map();

  constructor(name) {
    this.name = name;
    this.remember = name !== 'ReplayDetection';
  }

  key(id) { return `${this.name}:${id}`; }

  async upsert(id, payload) { if (this.remember) BenchAdapter.store.set(this.key(id), payload); }

  async find(id) { return this.remember ? BenchAdapter.store.get(this.key(id)) : undefined; }

  async findByUid() { return undefined; }

  async findByUserCode() { return undefined; }

  async consume(id) {
    const found = BenchAdapter.store.get(this.key(id));
    if (found) found.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { BenchAdapter.store.delete(this.key(id)); }

  async revokeByGrantId() {}
}

const common = { grant_types: ['client_credentials'], response_types: [], redirect_uris: [] };
const provider = new Provider(config.issuer, {
  adapter: BenchAdapter,
  clients: [
    {
      ...common,
      client_id: config.secret_client.client_id,
      client_secret: config.secret_client.client_secret,
      token_endpoint_auth_method: 'client_secret_post',
    },
    {
      ...common,
      client_id: config.jwt_client.client_id,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'RS256',
      jwks: { keys: [jwk(readFileSync(config.jwt_client.public_key), false)] },
    },
  ],
  jwks: { keys: [jwk(readFileSync(config.signing_key), true)] },
  cookies: { keys: ['bench-cookie-key-not-secret'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // JWT (not opaque) access tokens need resource indicators: the resource server decides the format.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => config.resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: config.scope,
        audience: config.resource,
        accessTokenTTL: 3600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

const server = createServer(
  { cert: readFileSync(config.tls_cert), key: readFileSync(config.tls_key) },
  provider.callback(),
);
server.keepAliveTimeout = 60_000;
server.listen(config.port, '127.0.0.1', () => console.log(`oidc-provider listening on ${config.issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
