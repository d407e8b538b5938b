// Drives the /verify page in headless Chromium (playwright-core, no bundled browser) over a list of bundle files
// and prints what the page concluded for each, one JSON object per line. crates/server/tests/web_verify.rs runs
// it and compares every verdict with custodia_bundle::verify's on the same file.
//
//   node tests/verify.mjs <base-url> <cases.json> [screenshot-dir]
//
// cases.json: [{ "name": "...", "path": "/abs/bundle.tar", "trusted": "vkey or empty", "policy": "witness policy or empty", "screenshot": true }]
// `trusted` is one key (a string, empty for none) or several (an array: a bundle carrying a provider's chain needs the
// key of every gateway in it), typed into the page's key field one a line.
// Output per case: { name, verdict: "valid"|"unknown-signer"|"invalid"|"error"|"pin-malformed"|"policy-malformed", failed: ["payload_hash", ...], seconds, report,
//                    history: [[cell text, ...] per custody history row], requests: [urls requested after the file was chosen], problems: [console errors, CSP] }
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, casesPath, screenshots] = process.argv.slice(2);
if (!base || !casesPath) {
  console.error('usage: node tests/verify.mjs <base-url> <cases.json> [screenshot-dir]');
  process.exit(2);
}
const cases = JSON.parse(await readFile(casesPath, 'utf8'));
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--headless=new',
    '--no-sandbox',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  for (const c of cases) {
    const page = await context.newPage();
    const problems = [];
    page.on('console', (message) => {
      if (message.type() === 'error' || /Content.Security.Policy/i.test(message.text())) problems.push(message.text());
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('response', (response) => {
      if (response.status() >= 400) problems.push(`${response.status()} for ${response.url()}`);
    });
    page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()}`));
    const requests = [];
    let chosen = false;
    page.on('request', (request) => {
      if (chosen) requests.push(`${request.method()} ${request.url()}`);
    });
    const response = await page.goto(`${base}/verify`, { waitUntil: 'load' });
    if (!response || response.status() !== 200) throw new Error(`/verify answered ${response && response.status()}`);
    await page.waitForSelector('html[data-ready="true"]');
    const trusted = (Array.isArray(c.trusted) ? c.trusted : [c.trusted]).filter(Boolean).join('\n');
    if (trusted) await page.fill('#key', trusted);
    if (c.policy) await page.fill('#policy', c.policy);
    chosen = true;
    await page.setInputFiles('#file', c.path);
    await page.waitForSelector('#result:not([data-verdict="none"])', { timeout: 600_000 });
    const found = await page.evaluate(() => {
      const result = document.getElementById('result');
      return {
        verdict: result.dataset.verdict,
        failed: (result.dataset.failedParts || '').split(' ').filter(Boolean),
        seconds: Number(result.dataset.seconds || 'NaN'),
        heading: document.getElementById('verdict').textContent,
        summary: document.getElementById('summary').textContent,
        report: document.getElementById('report').textContent,
        focused: document.activeElement && document.activeElement.id,
        history: [...document.querySelectorAll('#history tbody tr')].map((row) =>
          [...row.cells].map((cell) => cell.textContent),
        ),
      };
    });
    if (c.screenshot && screenshots) {
      await page.screenshot({ path: join(screenshots, `${c.name}.png`), fullPage: true });
    }
    console.log(JSON.stringify({ name: c.name, ...found, requests, problems }));
    await page.close();
  }
} finally {
  await browser.close();
}
