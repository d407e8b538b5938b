// The bundle checker page (/verify): a court bundle chosen or dropped here is verified in this browser by
// lib/bundle.js and never leaves the machine. The verdict, every check by part, the custody history and the full
// text report are shown in an aria-live region; the verdict takes focus when a check ends.

import { BundleError, PARTS, PinError, PolicyError, printable, verifyBundle } from './lib/bundle.js';
import { $, bytes as size, el, startLanguage } from './lib/dom.js';
import { t } from './lib/i18n.js';

const form = $('form');
const fileInput = $('file');
const keyInput = $('key');
const policyInput = $('policy');
const policyFile = $('policy-file');
const checkButton = $('check');
const drop = $('drop');
const progressBox = $('progress-box');
const progress = $('progress');
const progressText = $('progress-text');
const result = $('result');
const verdict = $('verdict');
const summary = $('summary');
const facts = $('facts');
const checksTitle = $('checks-title');
const checksList = $('checks');
const historyBox = $('history-box');
const historyBody = document.querySelector('#history tbody');
const reportBox = $('report-box');
const reportText = $('report');

let chosen = null;
let running = false;

const EVENT_WORDS = {
  artefact_registered: 'taken into custody, description signed',
  artefact_accessed: 'opened',
  artefact_exported: 'exported',
  artefact_transferred: 'custody transferred',
  derivative_made: 'derived copy made',
  hearing_event: 'hearing event',
  policy_changed: 'use restrictions changed',
  wider_use_requested: 'wider use requested',
  outcome_reported: 'outcome reported',
  access_refused: 'access refused',
  membership_changed: 'case membership changed',
  case_exported: 'case exported',
  transfer_evidence: 'transfer receipt (evidence)',
  received_from: 'received from a partner gateway',
};

/** What a failed part means, in plain words. */
const MEANING = {
  bag: 'files in the bundle were changed, added or removed after it was made',
  payload_hash: 'the evidence is not the file the gateway signed for',
  manifest_signature: "the evidence's signed description is not the gateway's",
  trusted_key: 'it, or the custody chain of a partner gateway that it carries, was signed by a key that is not among the keys you trust',
  checkpoint: "the log checkpoint is not signed by the gateway",
  witnesses: "the witnesses' cosignatures on the log checkpoint are forged, duplicated, under another key, or fewer than the witness policy you trust asks for",
  inclusion_proof: "a custody record is not in the gateway's public log",
  custody_history: 'the custody history is incomplete, out of order or not about this evidence',
  openings: "a record's opened text (its case, purpose or other words) is missing or is not what the record committed to",
  case_contents: 'the case bundle does not hold exactly the artefact bundles the gateway exported: one was withheld, added or swapped',
  timestamp: "the timestamp token does not stamp this bundle's log, or is not in it",
  report: 'the certificate (REPORT.txt) says something the checked files do not: it is not evidence, and it was edited',
  provider_chain:
    'the custody chain of the partner gateway the evidence was received from is missing, is not the one the receiving gateway recorded when it received the evidence (its signed description, artefact or log checkpoint differ), or is signed by the receiving gateway itself',
};

/** A translated string, or the English one given here when the translation files lack it. */
function words(key, english, vars) {
  const text = t(key, vars);
  return text === key ? english : text;
}

function element(tag, text, className) {
  return el(tag, className ? { class: className } : {}, text);
}

function bytes(n) {
  return size(n, (small) => `${small} bytes`);
}

function clearResult() {
  result.dataset.verdict = 'none';
  delete result.dataset.failedParts;
  keyInput.removeAttribute('aria-invalid');
  policyInput.removeAttribute('aria-invalid');
  for (const node of [verdict, summary, facts, checksTitle, historyBox, reportBox]) node.hidden = true;
  facts.replaceChildren();
  checksList.replaceChildren();
  historyBody.replaceChildren();
  reportText.textContent = '';
}

function choose(file) {
  chosen = file || null;
  clearResult();
  if (chosen) void run();
}

async function run() {
  if (!chosen || running) return;
  running = true;
  const file = chosen;
  checkButton.disabled = true;
  result.setAttribute('aria-busy', 'true');
  progressBox.hidden = false;
  progress.value = 0;
  progressText.textContent = words('verify.progress', `0 of ${bytes(file.size)}`, { done: bytes(0), total: bytes(file.size) });
  const started = performance.now();
  let lastPaint = 0;
  const onProgress = (done, total) => {
    const now = performance.now();
    if (now - lastPaint < 100 && done < total) return;
    lastPaint = now;
    progress.value = total ? Math.floor((done / total) * 100) : 100;
    progressText.textContent = words('verify.progress', `${bytes(done)} of ${bytes(total)}`, { done: bytes(done), total: bytes(total) });
  };
  await addressKeyChecked;
  // One key a line: evidence received from a partner gateway carries that gateway's chain, signed with its key.
  const trusted = trustedKeys(keyInput.value);
  const policy = policyInput.value;
  try {
    const verification = await verifyBundle(file, { trusted, policy, onProgress });
    const seconds = (performance.now() - started) / 1000;
    showVerification(file, verification, seconds);
  } catch (err) {
    if (err instanceof PinError) showMalformedPin(err);
    else if (err instanceof PolicyError) showMalformedPolicy(err);
    else showUnreadable(file, err);
  } finally {
    progressBox.hidden = true;
    result.removeAttribute('aria-busy');
    checkButton.disabled = false;
    running = false;
    verdict.focus();
  }
}

/** The keys typed or pasted in the key field: one a line, blank lines and surrounding spaces left out. */
function trustedKeys(text) {
  return text
    .split(/\r\n|\r|\n/)
    .map((line) => line.trim())
    .filter(Boolean);
}

function fact(term, value) {
  facts.append(element('dt', term), element('dd', value));
}

function showVerification(file, v, seconds) {
  const outcome = v.verdict;
  result.dataset.verdict = outcome;
  result.dataset.failedParts = v.failedParts.join(' ');
  result.dataset.seconds = seconds.toFixed(3);
  const headings = { valid: 'VALID', 'unknown-signer': 'NOT VERIFIED: unknown signer' };
  verdict.textContent = words(`verify.verdict.${outcome in headings ? outcome : 'invalid'}`, headings[outcome] ?? 'NOT VALID');
  verdict.hidden = false;
  const what = v.kind === 'case' ? 'case bundle' : 'bundle';
  const kind = v.kind === 'case' ? 'Case' : '';
  if (outcome === 'valid') {
    summary.textContent =
      v.kind === 'case'
        ? words('verify.validCase', `This case bundle holds exactly the artefacts the gateway exported, and each, with its custody history, is exactly what the gateway recorded under the key you trust.`)
        : words('verify.valid', `The evidence and its custody history are exactly what the gateway recorded under the key you trust.`);
    if (v.witnesses && !v.witnesses.pinned) {
      summary.textContent += ` ${words('verify.witnessesUnpinned', "Its witnesses were judged by the policy the bundle carries, not one you pinned: enter the witness policy from a source you trust to check them.")}`;
    }
  } else if (outcome === 'unknown-signer') {
    summary.textContent = words(`verify.unknownSigner${kind}`,
      `This ${what} is consistent, but it is signed by a key you have not confirmed, and anyone can make a ` +
      'consistent bundle with a key of their own. Enter the gateway\'s key from a source you trust (the court\'s ' +
      'records, the providing authority\'s letter, or the gateway\'s key page) and check again.');
  } else {
    const meanings = v.failedParts.map((p) => words(`verify.meaning.${p}`, MEANING[p]));
    summary.textContent = words(`verify.doNotRely${kind}`, `Do not rely on this ${what} as it is: ${joinWords(meanings)}.`, { reasons: meanings.join('; ') });
  }
  summary.hidden = false;

  fact(words('verify.fact.file', 'File'), `${file.name} (${bytes(file.size)})`);
  if (v.artefact) fact(words('verify.fact.artefact', 'Artefact'), v.artefact);
  if (v.sha256) fact(words('verify.fact.sha256', 'Evidence SHA-256'), v.sha256);
  if (v.scope) fact(words('verify.fact.scope', 'Scope'), `This is the bundle of ${printable(v.scope)}.`);
  if (v.bundles) fact(words('verify.fact.bundles', 'Artefact bundles'), String(v.bundles.length));
  fact(words('verify.fact.records', 'Custody records'), String(v.records));
  if (v.witnesses) fact(words('verify.fact.witnesses', 'Witnesses'), printable(v.witnesses.summary));
  if (v.timestamp) {
    // A token that passed what the browser checks: its signature is left to a verifier with the authority's root.
    const unchecked = v.timestampClaim !== null && !v.failedParts.includes('timestamp');
    fact(
      words('verify.fact.timestamp', 'Trusted time'),
      unchecked
        ? `${printable(v.timestampClaim)}. ${words('verify.timestampUnchecked', "The token's signature is not checked in the browser, which holds no Time-Stamp Authority certificate: check it with custodia verify --tsa-anchor, or openssl ts -verify (docs/verify-by-hand.md, step 3b).")}`
        : printable(v.timestamp),
    );
  }
  if (v.log) fact(words('verify.fact.log', 'Log'), words('verify.logSize', `${v.log.origin}, size ${v.log.size}`, { origin: v.log.origin, size: v.log.size }));
  fact(words('verify.fact.checkedIn', 'Checked in'), words('verify.seconds', `${seconds.toFixed(1)} s, in this browser`, { seconds: seconds.toFixed(1) }));
  facts.hidden = false;

  checksTitle.hidden = false;
  // Failures first, so that a screen reader user hears what went wrong before what went right.
  const ordered = [...v.checks.filter((c) => !c.passed), ...v.checks.filter((c) => c.passed)];
  for (const check of ordered) {
    const item = element('li', undefined, check.passed ? 'passed' : 'failed');
    item.dataset.part = check.part;
    const head = element('span', undefined, 'head');
    head.append(element('span', check.passed ? words('verify.passed', '✓ passed') : words('verify.failed', '✗ FAILED'), 'mark'));
    const body = element('span');
    body.append(element('span', `${capitalise(words(`verify.part.${check.part}`, PARTS[check.part]))}: `, 'part'), element('span', printable(check.detail), 'detail'));
    item.append(head, body);
    checksList.append(item);
  }

  if (v.history && v.history.length) {
    for (const record of v.history) {
      const row = element('tr');
      row.append(
        element('td', `#${record.index}`),
        // What a record and its openings say is shown through printable: a purpose typed with a line separator or
        // a right-to-left override, before the gateway refused them, shows as its escapes.
        element('td', record.at ? printable(record.at) : words('verify.unreadable', 'unreadable')),
        element('td', record.type ? words(`verify.event.${record.type}`, EVENT_WORDS[record.type] ?? printable(record.type)) : words('verify.unreadableRecord', 'unreadable record')),
        element('td', printable(record.actor ?? '')),
        element('td', printable(record.purpose ?? '')),
      );
      historyBody.append(row);
    }
    historyBox.hidden = false;
  }
  reportText.textContent = v.toString();
  reportBox.hidden = false;
}

function showMalformedPin(err) {
  result.dataset.verdict = 'pin-malformed';
  result.dataset.failedParts = '';
  verdict.textContent = words('verify.verdict.pin-malformed', 'NOT CHECKED: the key you entered is malformed');
  verdict.hidden = false;
  summary.textContent = words('verify.nothingChecked', `Nothing was checked: ${err.message}`, { reason: err.message });
  summary.hidden = false;
  keyInput.setAttribute('aria-invalid', 'true');
}

function showMalformedPolicy(err) {
  result.dataset.verdict = 'policy-malformed';
  result.dataset.failedParts = '';
  verdict.textContent = words('verify.verdict.policy-malformed', 'NOT CHECKED: the witness policy you entered is malformed');
  verdict.hidden = false;
  summary.textContent = words('verify.nothingChecked', `Nothing was checked: ${err.message}`, { reason: err.message });
  summary.hidden = false;
  policyInput.setAttribute('aria-invalid', 'true');
}

function showUnreadable(file, err) {
  result.dataset.verdict = 'error';
  result.dataset.failedParts = 'bag';
  verdict.textContent = words('verify.verdict.invalid', 'NOT VALID');
  verdict.hidden = false;
  const reason = printable(err instanceof BundleError ? err.message : `the file could not be read (${err && err.message})`);
  const name = printable(file.name);
  summary.textContent = words('verify.unreadableFile', `${name} could not be read as a court bundle: ${reason}.`, { name, reason });
  summary.hidden = false;
  if (!(err instanceof BundleError)) console.error(err);
}

function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function joinWords(words) {
  if (words.length <= 1) return words.join('');
  return `${words.slice(0, -1).join('; ')}; and ${words[words.length - 1]}`;
}

// A key handed over in the address (/verify?key=..., as the gateway's key page links here) fills the field only
// when it is this gateway's own key: a link is not a source anyone chose to trust, and on this gateway's address a
// forger's key would make the forger's bundle look vouched for. Any other key must be typed or pasted by hand.
const keyFromAddress = new URLSearchParams(window.location.search).get('key');
const addressKeyChecked = keyFromAddress ? adoptAddressKey(keyFromAddress.trim()) : Promise.resolve();

async function adoptAddressKey(key) {
  let own = null;
  try {
    const response = await fetch('/api/v1/verifier-key', { headers: { accept: 'application/json' } });
    if (response.ok) own = (await response.json()).vkey;
  } catch {
    own = null;
  }
  if (own && key === own) {
    keyInput.value = key;
    return;
  }
  const notice = el('p', { class: 'error', role: 'alert', id: 'key-refused' }, t('verify.addressKeyRefused'));
  document.getElementById('key-hint')?.after(notice);
}

fileInput.addEventListener('change', () => choose(fileInput.files && fileInput.files[0]));
// A policy file is read here, into the field, where the reader sees what will be pinned.
policyFile.addEventListener('change', async () => {
  const file = policyFile.files && policyFile.files[0];
  if (file) policyInput.value = await file.text();
});
form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (!chosen) {
    fileInput.focus();
    fileInput.click();
    return;
  }
  clearResult();
  void run();
});
for (const type of ['dragenter', 'dragover']) {
  drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
}
for (const type of ['dragleave', 'dragend']) drop.addEventListener(type, () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  drop.classList.remove('over');
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) choose(file);
});
// A file dropped anywhere else would make the browser open it in place of the page.
window.addEventListener('dragover', (event) => event.preventDefault());
window.addEventListener('drop', (event) => event.preventDefault());
// Ready once the page speaks the reader's language (the translations are this origin's files, fetched before any
// bundle is chosen; nothing is fetched while checking).
await startLanguage($('language'), () => {
  if (chosen && !running && result.dataset.verdict !== 'none') void run();
});
document.documentElement.dataset.ready = 'true';
