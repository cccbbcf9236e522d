// RSA-2048 RS256 signatures per second on one core in node: context for the oidc-provider row
// (how close the peer gets to its own runtime's limit). Usage: node rsa_ceiling.mjs SECONDS
import { generateKeyPairSync, sign } from 'node:crypto';

const seconds = Number(process.argv[2] ?? '2');
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const input = Buffer.alloc(900, 'e');
let count = 0;
const start = performance.now();
const deadline = start + seconds * 1000;
while (performance.now() < deadline) {
  for (let i = 0; i < 32; i += 1) sign('sha256', input, privateKey);
  count += 32;
}
console.log(JSON.stringify({ rate: count / ((performance.now() - start) / 1000) }));
