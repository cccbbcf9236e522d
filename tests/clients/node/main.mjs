// The real @azure/identity, unmodified, as a test workload. Its one argument is a JSON array of cases; for
// each it builds the credential the case names, asks for one token and prints one JSON line:
// {"token", "expires_on"} or {"error", "message"}.
import { ClientSecretCredential, ManagedIdentityCredential } from "@azure/identity";

function managedIdentity(testCase) {
  const selectors = ["client_id", "resource_id", "object_id"].filter((name) => testCase[name]);
  if (selectors.length > 1) {
    throw new Error("name at most one of client_id, resource_id, object_id");
  }
  if (testCase.client_id) return new ManagedIdentityCredential({ clientId: testCase.client_id });
  if (testCase.resource_id) return new ManagedIdentityCredential({ resourceId: testCase.resource_id });
  if (testCase.object_id) return new ManagedIdentityCredential({ objectId: testCase.object_id });
  return new ManagedIdentityCredential();
}

function credentialFor(testCase) {
  switch (testCase.credential) {
    case "managed-identity":
      return managedIdentity(testCase);
    case "client-secret":
      // The secret comes from the environment, never the command line (other users can read that).
      return new ClientSecretCredential(testCase.tenant_id, testCase.client_id, process.env.AZURE_CLIENT_SECRET, {
        authorityHost: testCase.authority,
        disableInstanceDiscovery: true,
      });
    default:
      throw new Error(`unknown credential ${testCase.credential} (managed-identity, client-secret)`);
  }
}

async function run(testCase) {
  try {
    const token = await credentialFor(testCase).getToken(testCase.scope);
    return { token: token.token, expires_on: Math.floor(token.expiresOnTimestamp / 1000) };
  } catch (error) {
    return { error: error?.name ?? "Error", message: String(error?.message ?? error) };
  }
}

if (process.argv.length !== 3) {
  console.error(`usage: node main.mjs '[{"credential": "managed-identity", "scope": "..."}]'`);
  process.exit(2);
}
const cases = JSON.parse(process.argv[2]);
for (const testCase of cases) {
  process.stdout.write(JSON.stringify(await run(testCase)) + "\n");
}
