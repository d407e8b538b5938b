// Runs the browser's bundle verifier (src/lib/bundle.js, the very module /verify bundles) under node, without a
// browser, over many files: crates/server/tests/web_verify.rs compares every verdict with custodia_bundle::verify.
//
//   node tests/verify-files.mjs <cases.json>     cases.json: [{ "name", "path", "trusted", "policy"?, "limits"? }]
// `trusted` is one key (a string, empty for none) or several (an array: a bundle carrying a provider's chain needs
// the key of every gateway in it).
// Prints one JSON object per case: { name, verdict: "valid"|"unknown-signer"|"invalid"|"error"|"pin-malformed"|"policy-malformed",
// failed: [...parts], report, filesRead, peakKeptBytes }. `limits` ({ files, keptBytes }) lowers the verifier's.
import { readFile } from 'node:fs/promises';
import { BundleError, PinError, PolicyError, verifyBundle } from '../src/lib/bundle.js';

const cases = JSON.parse(await readFile(process.argv[2], 'utf8'));
for (const c of cases) {
  // A Blob of the whole file (fs.openAsBlob would stream it, but needs Node 20; Debian 12 has Node 18).
  const blob = new Blob([await readFile(c.path)]);
  let out;
  try {
    const trusted = (Array.isArray(c.trusted) ? c.trusted : [c.trusted]).filter(Boolean);
    const v = await verifyBundle(blob, { trusted, policy: c.policy, limits: c.limits });
    out = { verdict: v.verdict, failed: v.failedParts, report: v.toString(), filesRead: v.filesRead, peakKeptBytes: v.peakKeptBytes };
  } catch (err) {
    if (err instanceof PinError) {
      console.log(JSON.stringify({ name: c.name, verdict: 'pin-malformed', failed: [], report: err.message }));
      continue;
    }
    if (err instanceof PolicyError) {
      console.log(JSON.stringify({ name: c.name, verdict: 'policy-malformed', failed: [], report: err.message }));
      continue;
    }
    if (!(err instanceof BundleError)) throw err;
    out = { verdict: 'error', failed: ['bag'], report: err.message };
  }
  console.log(JSON.stringify({ name: c.name, ...out }));
}
