// The key page (/key): the gateway's public key, as a court pins it. It shows the C2SP verifier key, its
// fingerprint (SHA-256 of the 32 key bytes, in groups of four to read aloud), the PEM form, and links to the
// bundle checker with the key filled in.

import { $, startLanguage } from './lib/dom.js';
import { t } from './lib/i18n.js';

const facts = $('key-facts');
const copy = $('copy');
const copied = $('copied');

/** The fingerprint in groups of four hex digits, as people compare it by eye or read it out. */
function grouped(hex) {
  return hex.match(/.{1,4}/g).join(' ');
}

async function load() {
  try {
    const response = await fetch('/api/v1/verifier-key', { headers: { accept: 'application/json' } });
    if (!response.ok) throw new Error(`the gateway answered ${response.status}`);
    const key = await response.json();
    $('vkey').textContent = key.vkey;
    $('fingerprint').textContent = grouped(key.fingerprint);
    $('key-name').textContent = key.name;
    $('key-id').textContent = key.key_id;
    $('algorithm').textContent = key.algorithm;
    $('pem').textContent = key.public_key_pem;
    $('check-with').href = `/verify?key=${encodeURIComponent(key.vkey)}`;
    copy.disabled = false;
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(key.vkey);
        copied.textContent = t('console.copied');
      } catch {
        copied.textContent = t('verify.keyPage.noCopy');
      }
    });
  } catch (err) {
    const box = $('key-error');
    box.textContent = t('verify.keyPage.failed', { problem: err.message });
    box.hidden = false;
  } finally {
    facts.removeAttribute('aria-busy');
    document.documentElement.dataset.ready = 'true';
  }
}

await startLanguage($('language'));
void load();
