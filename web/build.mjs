// Builds the browser pages into web/dist, which crates/server embeds in the custodia binary (crates/server/src/web.rs).
//
// Every top-level web/src/*.js is an entry point, bundled with its imports (web/src/lib/, @noble/*) into one ES
// module, minified, with a source map beside it. Everything under web/static/ (HTML, CSS, i18n JSON, images) is
// copied as it is, keeping its path, except web/static/partials/: pieces of HTML that pages share, written into a
// page where it says `<!-- include NAME -->` on a line of its own (indented as the marker is), and not copied
// themselves. Nothing is fetched from elsewhere at run time: the pages load only their own
// files, under a Content-Security-Policy that forbids anything else.
//
// The output is built in a fresh folder and swapped in whole, so a failed build leaves the previous dist in place.
import { cp, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = dirname(fileURLToPath(import.meta.url));
const src = join(root, 'src');
const staticDir = join(root, 'static');
const partials = join(staticDir, 'partials');
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
await cp(staticDir, next, { recursive: true, errorOnExist: false, filter: (path) => path !== partials });
for (const name of await readdir(next, { recursive: true })) {
  if (!name.endsWith('.html')) continue;
  const page = await readFile(join(next, name), 'utf8');
  const pieces = [];
  const pattern = /^([ \t]*)<!-- include ([\w.-]+) -->\n/gm;
  for (const [, , partial] of page.matchAll(pattern)) pieces.push(await readFile(join(partials, partial), 'utf8'));
  if (!pieces.length) continue;
  await writeFile(join(next, name), page.replace(pattern, (_, indent) => pieces.shift().replace(/^(?=.)/gm, indent)));
}
await rm(dist, { recursive: true, force: true });
await rename(next, dist);

const built = await readdir(dist, { recursive: true });
console.log(`web: built ${entryPoints.length} scripts and ${built.length} files into ${dist}`);
