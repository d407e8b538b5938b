// The prosecutor portal, /portal: a case's evidence, each item's verification state (checked in the browser from
// the custody timeline and its inclusion proofs), playback in the browser (ranges), and court bundle downloads
// with progress.

import { api, ApiError } from './lib/api.js';

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else if (key === 'data') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

function say(element, text) {
  element.textContent = text ?? '';
  element.hidden = !text;
}

function bytes(size) {
  if (size < 1024) return `${size} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = size;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

// Signing in.

function showSignIn(message) {
  $('app').hidden = true;
  $('who').hidden = true;
  $('sign-in').hidden = false;
  say($('sign-in-error'), message);
  $('username').focus();
}

async function signedIn(me) {
  $('sign-in').hidden = true;
  $('who').hidden = false;
  $('who-name').textContent = `${me.display_name} (${me.jurisdiction})`;
  $('app').hidden = false;
  const cases = await api('GET', '/api/v1/cases');
  const list = Array.isArray(cases) ? cases : cases?.cases ?? [];
  $('case').replaceChildren(...list.map((item) => new Option(`${item.title} (${item.id})`, item.id)));
  const wanted = new URLSearchParams(location.search).get('case');
  if (wanted && list.some((item) => item.id === wanted)) $('case').value = wanted;
  if (list.length) await showCase();
  else say($('find-error'), 'You are not a member of any case yet.');
}

$('sign-in-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const username = $('username').value.trim();
  const password = $('password').value;
  if (!username || !password) {
    say($('sign-in-error'), 'Enter your username and your password.');
    return;
  }
  try {
    const me = await api('POST', '/api/v1/session', { username, password });
    $('password').value = '';
    await signedIn(me);
    $('app-title').tabIndex = -1;
    $('app-title').focus();
  } catch (error) {
    say($('sign-in-error'), error.message);
  }
});

$('sign-out').addEventListener('click', async () => {
  await api('DELETE', '/api/v1/session').catch(() => {});
  $('artefacts').replaceChildren();
  showSignIn('You have signed out.');
});

// The case's evidence.

function purpose() {
  return $('purpose').value.trim();
}

$('find-form').addEventListener('submit', (event) => {
  event.preventDefault();
  showCase();
});

async function showCase() {
  say($('find-error'), '');
  const id = $('case').value;
  if (!id) return;
  let artefacts;
  try {
    const list = await api('GET', `/api/v1/cases/${enc(id)}/artefacts`);
    artefacts = Array.isArray(list) ? list : list?.artefacts ?? [];
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) showSignIn('Your session has ended. Please sign in again.');
    else say($('find-error'), error.message);
    return;
  }
  $('artefacts-empty').hidden = artefacts.length > 0;
  $('artefacts').replaceChildren(...artefacts.map(card));
}

function card(item) {
  const verdict = el('p', { class: 'verdict', role: 'status' }, 'Checking the custody log…');
  const details = el('ul', { class: 'note' });
  const player = el('div');
  const progress = el('progress', { max: 100, value: 0, id: `progress-${item.id}` });
  const progressText = el('span', { 'aria-live': 'polite' });
  const progressBox = el('div', { hidden: true },
    el('label', { htmlFor: `progress-${item.id}` }, 'Bundle download'), progress, progressText);
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  const playable = /^(video|audio)\//.test(item.media_type);
  const titleId = `title-${item.id}`;
  const section = el('section', { class: 'artefact', 'aria-labelledby': titleId, data: { artefact: item.id } },
    el('h2', { id: titleId }, item.id),
    el('dl', { class: 'facts' },
      el('dt', {}, 'Type'), el('dd', {}, item.media_type),
      el('dt', {}, 'Size'), el('dd', {}, `${bytes(item.size)} (${item.size} bytes)`),
      el('dt', {}, 'Registered'), el('dd', {}, `${when(item.registered_at)}, custody record ${item.ledger_index}`),
      el('dt', {}, 'SHA-256'), el('dd', { class: 'mono' }, item.sha256),
      el('dt', {}, 'Use'), el('dd', {}, item.restricted ? 'Restricted by the provider’s use policy' : 'Unrestricted'),
    ),
    verdict,
    details,
    playable
      ? el('button', { type: 'button', onclick: (event) => play(item, player, error, event.currentTarget) }, 'Play',
        el('span', { class: 'visually-hidden' }, ` ${item.id}`))
      : null,
    el('button', { type: 'button', class: 'primary', onclick: (event) => download(item, progressBox, progress, progressText, error, event.currentTarget) },
      'Download the court bundle', el('span', { class: 'visually-hidden' }, ` of ${item.id}`)),
    progressBox,
    error,
    player,
  );
  const check = () => verify(item).then(
    (result) => {
      verdict.className = `verdict ${result.ok ? 'ok' : 'bad'}`;
      verdict.textContent = result.ok ? 'Verified against the custody log' : `Not verified: ${result.problem}`;
      details.replaceChildren(...result.checks.map((text) => el('li', {}, text)));
    },
    (err) => {
      verdict.className = 'verdict bad';
      verdict.textContent = `Could not check: ${err.message}`;
    },
  );
  // Playing and exporting are custody records too: check again afterwards, with them.
  section.addEventListener('custodia:accessed', check);
  check();
  return section;
}

// Verification from the timeline: the registration record names this SHA-256, the records form an unbroken chain,
// and each record's inclusion proof leads to the root of a checkpoint of the log.

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function fromBase64(text) {
  const binary = atob(text);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function equal(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** RFC 8785: keys sorted by UTF-16 code units, ECMAScript number and string forms. */
function canonical(value) {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`).join(',')}}`;
}

function parseProof(text) {
  const [head, ...rest] = text.split('\n\n');
  const lines = head.split('\n');
  if (lines[0] !== 'c2sp.org/tlog-proof@v1') throw new Error('a proof is not in the c2sp.org/tlog-proof@v1 format');
  let i = 1;
  if (lines[i]?.startsWith('extra ')) i += 1;
  const index = Number(lines[i]?.replace(/^index /, ''));
  const path = lines.slice(i + 1).filter(Boolean).map(fromBase64);
  const note = rest.join('\n\n');
  const [origin, size, root] = note.split('\n');
  return { index, path, origin, size: Number(size), root: fromBase64(root) };
}

/** RFC 9162 section 2.1.3.2. */
async function inclusionRoot(index, size, leaf, path) {
  if (index >= size) return null;
  let fn = index;
  let sn = size - 1;
  let hash = leaf;
  const one = Uint8Array.of(1);
  for (const node of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      hash = await sha256(concat(one, node, hash));
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      hash = await sha256(concat(one, hash, node));
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? hash : null;
}

async function verify(item) {
  const timeline = await api('GET', `/api/v1/artefacts/${enc(item.id)}/timeline`);
  const records = timeline.records ?? [];
  const checks = [];
  const fail = (problem) => ({ ok: false, problem, checks });
  if (!records.length) return fail('the custody log holds no record of it');
  const first = records[0].record;
  if (first.event?.type !== 'artefact_registered') return fail('its first custody record is not its registration');
  if (first.event.sha256 !== item.sha256 || first.event.size !== item.size) {
    return fail('the SHA-256 or size registered in the log differs from what the gateway holds');
  }
  checks.push(`Registered with SHA-256 ${item.sha256.slice(0, 16)}… and a signed manifest (record ${records[0].ledger_index}).`);
  for (let i = 1; i < records.length; i += 1) {
    if (records[i].record.prior !== records[i - 1].ledger_index) {
      return fail(`custody record ${records[i].ledger_index} does not follow record ${records[i - 1].ledger_index}: a record is missing`);
    }
  }
  checks.push(`${records.length} custody record${records.length === 1 ? '' : 's'}, each naming the one before: no gap.`);
  const encoder = new TextEncoder();
  let largest = 0;
  for (const entry of records) {
    const proof = parseProof(entry.proof);
    if (proof.index !== entry.ledger_index) return fail(`the proof for record ${entry.ledger_index} is for another entry`);
    const leaf = await sha256(concat(Uint8Array.of(0), encoder.encode(canonical(entry.record))));
    const root = await inclusionRoot(proof.index, proof.size, leaf, proof.path);
    if (!root || !equal(root, proof.root)) return fail(`the inclusion proof of record ${entry.ledger_index} does not lead to the log's root`);
    largest = Math.max(largest, proof.size);
  }
  checks.push(`Every record is proven to be in the custody log (checkpoint of ${largest} ${largest === 1 ? 'entry' : 'entries'}).`);
  return { ok: true, checks };
}

// Playback: the browser asks for ranges as it plays; each play is a custody record.

function play(item, player, error, button) {
  if (!purpose()) {
    say(error, 'State the purpose of access first.');
    return;
  }
  say(error, '');
  const video = el('video', { controls: true, preload: 'metadata', playsInline: true });
  video.setAttribute('aria-label', `Recording ${item.id}`);
  video.addEventListener('error', () => say(error, 'The recording could not be played in this browser. Download the bundle instead.'));
  video.src = `/api/v1/artefacts/${enc(item.id)}/content?purpose=${enc(purpose())}&access=play`;
  player.replaceChildren(video);
  button.textContent = 'Play again';
  video.focus();
  video.play().catch(() => {});
}

// Court bundle download, streamed with progress, then saved under the gateway's file name.

async function download(item, box, progress, text, error, button) {
  if (!purpose()) {
    say(error, 'State the purpose of access first.');
    return;
  }
  say(error, '');
  button.disabled = true;
  box.hidden = false;
  progress.value = 0;
  text.textContent = 'Preparing the bundle…';
  try {
    let response;
    try {
      response = await fetch(`/api/v1/artefacts/${enc(item.id)}/exports?purpose=${enc(purpose())}`, {
        method: 'POST', credentials: 'same-origin',
      });
    } catch {
      throw new Error('The gateway could not be reached. Check your connection and try again.');
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => null);
      throw new Error(problem?.detail || problem?.title || `The gateway refused the export (HTTP ${response.status}).`);
    }
    const total = Number(response.headers.get('content-length')) || 0;
    const reader = response.body.getReader();
    const chunks = [];
    let received = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      received += value.length;
      if (total) {
        progress.value = Math.floor((received / total) * 100);
        text.textContent = `${progress.value}% · ${bytes(received)} of ${bytes(total)}`;
      } else {
        progress.removeAttribute('value');
        text.textContent = bytes(received);
      }
    }
    if (total && received !== total) throw new Error('The download was cut off. Please try again.');
    progress.value = 100;
    const disposition = response.headers.get('content-disposition') ?? '';
    const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? `${item.id}.bundle.tar`;
    const url = URL.createObjectURL(new Blob(chunks, { type: 'application/x-tar' }));
    const link = el('a', { href: url, download: name }, 'Save the bundle again');
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    text.textContent = `Downloaded ${name} (${bytes(received)}). Check it on the verification page.`;
    button.closest('section').dispatchEvent(new Event('custodia:accessed'));
  } catch (err) {
    say(error, err.message);
    box.hidden = true;
  } finally {
    button.disabled = false;
  }
}

(async () => {
  try {
    await signedIn(await api('GET', '/api/v1/me'));
  } catch (error) {
    showSignIn(error instanceof ApiError && error.status === 401 ? '' : error.message);
  }
})();
