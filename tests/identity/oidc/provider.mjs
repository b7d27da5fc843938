// A real OpenID Provider for StreamSpace's SSO tests (panva/oidc-provider, dev interactions).
//
// Env: PORT (required), ISSUER (default http://127.0.0.1:PORT), REDIRECT_URI (the RP callback).
// Clients: "streamspace" (codes live 60 s) and "streamspace-short" (codes live 1 s, for the
// expired-code test); both use client_secret_post with the secret "test-secret".
// Accounts: any login name works on the dev login form; the ones below carry claims and groups.
// Prints "READY <issuer>" on stdout once listening.
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
if (!port) {
  console.error('PORT is required');
  process.exit(2);
}
const issuer = process.env.ISSUER || `http://127.0.0.1:${port}`;
const redirectUri = process.env.REDIRECT_URI;

const accounts = {
  'sso-alice': { email: 'sso-alice@example.com', given_name: 'Alice', family_name: 'Sso', groups: ['engineering'] },
  'sso-admin': { email: 'sso-admin@example.com', given_name: 'Ada', family_name: 'Admin', groups: ['streamspace-admins', 'staff'] },
  'sso-ops': { email: 'sso-ops@example.com', given_name: 'Otto', family_name: 'Ops', groups: ['platform-ops'] },
};

const client = (clientId) => ({
  client_id: clientId,
  client_secret: 'test-secret',
  redirect_uris: [redirectUri],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_post',
});

const configuration = {
  clients: [client('streamspace'), client('streamspace-short')],
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'given_name', 'family_name', 'name'],
    groups: ['groups'],
  },
  async findAccount(ctx, id) {
    const extra = accounts[id] || { email: `${id}@example.com`, groups: [] };
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, email_verified: true, name: id, ...extra };
      },
    };
  },
  ttl: {
    AuthorizationCode: (ctx, token, clientObj) => (clientObj.clientId === 'streamspace-short' ? 1 : 60),
    AccessToken: 600,
    IdToken: 600,
    Interaction: 600,
    Session: 600,
    Grant: 600,
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['streamspace-test-cookie-key'] },
  pkce: { required: () => false },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
