// The prosecutor portal, /portal: a case's evidence, each item's verification state (checked in the browser from
// the custody timeline and its inclusion proofs), playback in the browser (ranges), and court bundle downloads
// with progress.

import { api, ApiError } from './lib/api.js';
import { canonicalize, commitment, leafHash, readProof, verifyInclusion } from './lib/bundle.js';
import { $, bytes, el, say, signInPage, when } from './lib/dom.js';

const enc = encodeURIComponent;

/**
 * What the signed-in member may do in the shown case, as the gateway says (`may` in the case's detail). The portal
 * calls nothing else: a refused call is a public custody record, and which calls a member is refused would tell
 * anyone reading the log which role they hold.
 */
let allowed = [];
const may = (action) => allowed.includes(action);

// Signing in.

const showSignIn = signInPage({
  async signedIn() {
    const cases = await api('GET', '/api/v1/cases');
    const list = Array.isArray(cases) ? cases : cases?.cases ?? [];
    $('case').replaceChildren(...list.map((item) => new Option(`${item.title} (${item.id})`, item.id)));
    const wanted = new URLSearchParams(location.search).get('case');
    if (wanted && list.some((item) => item.id === wanted)) $('case').value = wanted;
    if (list.length) await showCase();
    else say($('find-error'), 'You are not a member of any case yet.');
  },
  afterSignIn() {
    $('app-title').tabIndex = -1;
    $('app-title').focus();
  },
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
    allowed = (await api('GET', `/api/v1/cases/${enc(id)}`))?.may ?? [];
    if (!may('list_artefacts')) {
      $('artefacts').replaceChildren();
      $('artefacts-empty').hidden = true;
      say($('find-error'), 'Your role in this case does not list its evidence.');
      return;
    }
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
  // TLP:RED content never leaves the gateway, and a browser's player could keep what it plays: the gateway
  // sends neither a stream nor a bundle of it, so the portal offers neither.
  const red = item.tlp === 'TLP:RED';
  const playable = !red && may('download_artefact') && /^(video|audio)\//.test(item.media_type);
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
    !may('export_artefact')
      ? null
      : red
      ? el('p', { class: 'note' }, 'TLP:RED: for the eyes and ears of its recipients only. Its description and custody ' +
        'history are shown here; its content is not played, downloaded or put into a bundle, since any copy sent to a ' +
        'browser could be kept. Ask the providing authority to relabel it if the proceedings need the content.')
      : el('button', { type: 'button', class: 'primary', onclick: (event) => download(item, progressBox, progress, progressText, error, event.currentTarget) },
        'Download the court bundle', el('span', { class: 'visually-hidden' }, ` of ${item.id}`)),
    progressBox,
    error,
    player,
  );
  const check = () => (may('view_timeline') ? verify(item) : Promise.reject(new Error('your role in this case does not see its custody log'))).then(
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
    const { proof, error } = readProof(encoder.encode(entry.proof));
    if (error) throw new Error(error);
    if (proof.index !== BigInt(entry.ledger_index)) return fail(`the proof for record ${entry.ledger_index} is for another entry`);
    const leaf = leafHash(encoder.encode(canonicalize(entry.record)));
    if (verifyInclusion(proof.index, proof.size, leaf, proof.path, proof.root) !== null) {
      return fail(`the inclusion proof of record ${entry.ledger_index} does not lead to the log's root`);
    }
    largest = Math.max(largest, Number(proof.size));
  }
  checks.push(`Every record is proven to be in the custody log (checkpoint of ${largest} ${largest === 1 ? 'entry' : 'entries'}).`);
  for (const entry of records) {
    for (const [field, opening] of Object.entries(entry.openings ?? {})) {
      const committed = field === 'case' || field === 'purpose' ? entry.record[field] : entry.record.event?.[field];
      if (commitment(opening.salt, field, opening.text) !== committed) {
        return fail(`the ${field} shown for record ${entry.ledger_index} is not what the log committed to`);
      }
    }
    if (!entry.openings?.case || !entry.openings?.purpose) {
      return fail(`the openings of record ${entry.ledger_index} are missing`);
    }
  }
  checks.push('Every purpose, site and other word shown opens the commitment in the public log.');
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
