// Uploads a file with tus-js-client (the client Uppy is built on), as a phone or browser would: in chunks, and
// dropped on purpose after the first chunk and resumed by a fresh client, so that the resume path (HEAD for the
// offset, then PATCH from it) runs too. The file must be larger than one chunk.
//
// Usage: node upload.mjs ENDPOINT FILE [--header 'Name: value']... [--metadata key=value]... [--chunk-size BYTES]
// Prints one JSON line: {"url": the upload's URL, "artefact": the Custodia-Artefact header of the last response}.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Upload } from 'tus-js-client';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    header: { type: 'string', multiple: true, default: [] },
    metadata: { type: 'string', multiple: true, default: [] },
    'chunk-size': { type: 'string', default: String(64 * 1024) },
  },
});
const [endpoint, path] = positionals;
if (!endpoint || !path) {
  console.error('usage: node upload.mjs ENDPOINT FILE [--header "Name: value"]... [--metadata key=value]...');
  process.exit(2);
}

function pairs(items, separator) {
  return Object.fromEntries(
    items.map((item) => {
      const at = item.indexOf(separator);
      if (at < 0) throw new Error(`expected key${separator}value, got ${item}`);
      return [item.slice(0, at).trim(), item.slice(at + 1).trim()];
    }),
  );
}

const file = readFileSync(path);
const options = {
  endpoint,
  headers: pairs(values.header, ':'),
  metadata: pairs(values.metadata, '='),
  chunkSize: Number(values['chunk-size']),
  retryDelays: [0, 250, 1000],
  storeFingerprintForResuming: false,
};

// The first client stops once a chunk is in, as when the link drops.
const url = await new Promise((resolve, reject) => {
  const upload = new Upload(file, {
    ...options,
    onError: reject,
    onSuccess: () => reject(new Error('the upload finished in one chunk; use a larger file')),
    onChunkComplete: () => upload.abort().then(() => resolve(upload.url), reject),
  });
  upload.start();
});

// A fresh client, as after the app restarts, resumes from wherever the server says the upload stands.
const { lastResponse } = await new Promise((resolve, reject) => {
  new Upload(file, { ...options, uploadUrl: url, onError: reject, onSuccess: resolve }).start();
});
console.log(JSON.stringify({ url, artefact: lastResponse.getHeader('Custodia-Artefact') ?? null }));
