// The node workload for AKS-style runs: the real @azure/identity WorkloadIdentityCredential, configured
// by the environment the platform gave; prints one RESULTS line as probe.py does. msal-node validates
// any authority it does not know at login.microsoftonline.com first, so against a custom authority it
// needs disableInstanceDiscovery, as every msal-based client does (docs/federation.md).
const { WorkloadIdentityCredential } = require("@azure/identity");

async function main() {
  const results = [];
  for (const scope of JSON.parse(process.argv[2])) {
    try {
      const token = await new WorkloadIdentityCredential({ disableInstanceDiscovery: true }).getToken(scope);
      results.push({ ok: true, value: token.token });
    } catch (error) {
      results.push({ ok: false, error: `${error.name}: ${error.message}`.slice(0, 2000) });
    }
  }
  console.log("RESULTS " + JSON.stringify(results));
}

main();
