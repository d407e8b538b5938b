// Builds the browser pages into web/dist, which crates/server embeds in the custodia binary (crates/server/src/web.rs).
//
// Every top-level web/src/*.js is an entry point, bundled with its imports (web/src/lib/, @noble/*) into one ES
// module, minified, with a source map beside it. Everything under web/static/ (HTML, CSS, i18n JSON, images) is
// copied as it is, keeping its path. Nothing is fetched from elsewhere at run time: the pages load only their own
// files, under a Content-Security-Policy that forbids anything else.
//
// The output is built in a fresh folder and swapped in whole, so a failed build leaves the previous dist in place.
import { cp, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = dirname(fileURLToPath(import.meta.url));
const src = join(root, 'src');
const staticDir = join(root, 'static');
const dist = join(root, 'dist');
const next = join(root, 'dist.next');

const entryPoints = (await readdir(src, { withFileTypes: true }))
  .filter((entry) => entry.isFile() && entry.name.endsWith('.js'))
  .map((entry) => join(src, entry.name))
  .sort();

await rm(next, { recursive: true, force: true });
await mkdir(next, { recursive: true });
await esbuild.build({
  entryPoints,
  outdir: next,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  minify: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  logLevel: 'warning',
});
await cp(staticDir, next, { recursive: true, errorOnExist: false });
await rm(dist, { recursive: true, force: true });
await rename(next, dist);

const built = await readdir(dist, { recursive: true });
console.log(`web: built ${entryPoints.length} scripts and ${built.length} files into ${dist}`);
