// The prosecutor portal, /portal: a case's hearings with their recordings grouped by participant (each played
// whole, its segments back to back), the hearing's bundle in one click and its minutes as a document; then every
// item of evidence with its verification state (checked in the browser from the custody timeline and its inclusion
// proofs), playback in the browser (ranges), and court bundle downloads with progress.

import { api, ApiError, failure } from './lib/api.js';
import { canonicalize, commitment, leafHash, readProof, verifyInclusion } from './lib/bundle.js';
import { t, translate } from './lib/i18n.js';
import { $, bytes, el, say, signInPage, startLanguage, when } from './lib/dom.js';
import { playWhole } from './lib/playback.js';

const enc = encodeURIComponent;
const view = { cases: [], artefacts: [], hearings: [] };

// The page speaks the reader's language before anything is shown.
await startLanguage($('language'), () => {
  translate(document);
  render();
});

/**
 * What the signed-in member may do in the shown case, as the gateway says (`may` in the case's detail). The portal
 * calls nothing else: a refused call is a public custody record, and which calls a member is refused would tell
 * anyone reading the log which role they hold.
 */
let allowed = [];
const may = (action) => allowed.includes(action);

// Signing in.

const showSignIn = signInPage({
  signedOut() {
    $('admin-link').hidden = true;
  },
  async signedIn(me) {
    $('admin-link').hidden = !me.is_admin;
    const cases = await api('GET', '/api/v1/cases');
    view.cases = Array.isArray(cases) ? cases : cases?.cases ?? [];
    $('case').replaceChildren(...view.cases.map((item) => new Option(`${item.title} (${item.id})`, item.id)));
    const wanted = new URLSearchParams(location.search).get('case');
    if (wanted && view.cases.some((item) => item.id === wanted)) $('case').value = wanted;
    if (view.cases.length) await showCase();
    else say($('find-error'), t(me.is_admin ? 'portal.noCasesAdmin' : 'portal.noCases'));
  },
  afterSignIn() {
    $('app-title').tabIndex = -1;
    $('app-title').focus();
  },
});

$('sign-out').addEventListener('click', async () => {
  await api('DELETE', '/api/v1/session').catch(() => {});
  $('artefacts').replaceChildren();
  $('hearings').replaceChildren();
  showSignIn(t('console.signedOut'));
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
  let hearings;
  try {
    allowed = (await api('GET', `/api/v1/cases/${enc(id)}`))?.may ?? [];
    if (!may('list_artefacts')) {
      $('artefacts').replaceChildren();
      $('artefacts-empty').hidden = true;
      say($('find-error'), t('portal.noListing'));
      return;
    }
    const list = await api('GET', `/api/v1/cases/${enc(id)}/artefacts`);
    artefacts = Array.isArray(list) ? list : list?.artefacts ?? [];
    // The evidence is shown even if the hearings cannot be (a role that may not see them, say).
    const listed = await api('GET', `/api/v1/cases/${enc(id)}/hearings`).catch((error) => {
      if (error instanceof ApiError && error.status === 401) throw error;
      return null;
    });
    hearings = listed?.hearings ?? [];
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) showSignIn(t('console.sessionEnded'));
    else say($('find-error'), error.message);
    return;
  }
  view.caseId = id;
  view.artefacts = artefacts;
  view.hearings = [...hearings].sort((a, b) => String(a.scheduled_for).localeCompare(String(b.scheduled_for)));
  render();
}

/** Writes the case's hearings and evidence (again, after a change of language). */
function render() {
  if (!view.caseId) return;
  const byId = new Map(view.artefacts.map((item) => [item.id, item]));
  const titles = new Map();
  for (const hearing of view.hearings) {
    for (const segment of hearing.segments ?? []) {
      const person = (hearing.participants ?? []).find((p) => p.id === segment.participant);
      titles.set(segment.artefact, t('portal.segmentTitle', { who: personName(person), number: segmentNumber(hearing, segment) }));
    }
    if (hearing.minutes_artefact) titles.set(hearing.minutes_artefact, t('portal.minutesTitle', { when: when(hearing.scheduled_for) }));
  }
  $('hearings-empty').hidden = view.hearings.length > 0;
  $('hearings').replaceChildren(...view.hearings.map((hearing) => hearingSection(hearing, byId)));
  $('artefacts-empty').hidden = view.artefacts.length > 0;
  $('artefacts').replaceChildren(...view.artefacts.map((item) => card(item, titles.get(item.id))));
}

/** "Witness · Amina K." when the hearing knows a display name, else the role alone. */
function personName(person) {
  if (!person) return t('portal.unknownPerson');
  const role = t(`role.${person.role}`);
  return person.name ? `${role} · ${person.name}` : role;
}

/** A segment's place in its participant's recording, from 1. */
function segmentNumber(hearing, segment) {
  return (hearing.segments ?? []).filter((s) => s.participant === segment.participant && s.index <= segment.index).length;
}

const PHASE_KEYS = { scheduled: 'console.phase.scheduled', open: 'console.phase.open', in_session: 'console.phase.in_session', ended: 'console.phase.ended' };

// A hearing: its recordings by participant, its bundle and its minutes.

function hearingSection(hearing, byId) {
  const titleId = `hearing-${hearing.id}`;
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  const progress = progressBox(`hearing-progress-${hearing.id}`, t('portal.hearingBundleProgress'));
  const segments = hearing.segments ?? [];
  const people = (hearing.participants ?? []).filter((person) => segments.some((s) => s.participant === person.id));
  const ended = Boolean(hearing.minutes_artefact);
  const actions = el('div', { class: 'actions' });
  if (ended) {
    const red = segments.some((s) => byId.get(s.artefact)?.tlp === 'TLP:RED') || byId.get(hearing.minutes_artefact)?.tlp === 'TLP:RED';
    if (!red) {
      actions.append(el('button', {
        type: 'button', class: 'primary',
        onclick: (event) => download(
          `/api/v1/cases/${enc(view.caseId)}/hearings/${enc(hearing.id)}/exports`, `custodia-hearing-${hearing.id}.tar`,
          progress, error, event.currentTarget,
        ),
      }, t('portal.hearingBundle'), el('span', { class: 'visually-hidden' }, ` ${when(hearing.scheduled_for)}`)));
    } else {
      actions.append(el('p', { class: 'note' }, t('portal.hearingBundleRed')));
    }
    const minutes = new URLSearchParams({ case: view.caseId, hearing: hearing.id, artefact: hearing.minutes_artefact });
    actions.append(el('a', {
      class: 'button', href: `/minutes?${minutes}`,
      onclick: () => {
        // Reading the minutes is an access like any other, on the record with its purpose: the one given here,
        // handed over in this tab's session storage (never in the address, where any link could put one).
        try {
          if (purpose()) sessionStorage.setItem('custodia.minutesPurpose', purpose());
        } catch {
          /* the minutes page asks for it instead */
        }
      },
    }, t('portal.readMinutes'), el('span', { class: 'visually-hidden' }, ` ${when(hearing.scheduled_for)}`)));
  } else {
    actions.append(el('p', { class: 'note' }, t('portal.notEnded')));
  }
  return el('section', { class: 'hearing-box', 'aria-labelledby': titleId, data: { hearing: hearing.id } },
    el('h3', { id: titleId }, t('portal.hearingTitle', { when: when(hearing.scheduled_for), place: hearing.place })),
    el('p', { class: 'note' }, `${t(PHASE_KEYS[hearing.phase] ?? hearing.phase)} · ${t('portal.segmentsCount', { count: segments.length })}`),
    actions, progress.box, error,
    el('h4', {}, t('portal.recordings')),
    people.length
      ? el('ul', { class: 'plain recordings' }, ...people.map((person) => recording(hearing, person, byId)))
      : el('p', { class: 'note' }, t('portal.noRecordings')),
  );
}

/** One participant's whole recording: a title, its times, and one player for all its segments. */
function recording(hearing, person, byId) {
  const segments = (hearing.segments ?? []).filter((s) => s.participant === person.id).sort((a, b) => a.index - b.index);
  const rows = segments.map((s) => byId.get(s.artefact)).filter(Boolean);
  const times = rows.map((row) => row.registered_at).sort();
  const size = rows.reduce((sum, row) => sum + row.size, 0);
  const red = rows.some((row) => row.tlp === 'TLP:RED');
  const player = el('div', { class: 'player' });
  const status = el('p', { class: 'note', 'aria-live': 'polite' });
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  const titleId = `recording-${hearing.id}-${person.id}`;
  const who = personName(person);
  return el('li', { class: 'recording', data: { participant: person.id, segments: String(segments.length) } },
    el('h5', { id: titleId }, t('portal.recordingOf', { who })),
    el('p', { class: 'note' },
      times.length
        ? t('portal.recordingTimes', { from: when(times[0], { seconds: true }), until: when(times[times.length - 1], { seconds: true, timeOnly: true }), count: segments.length, size: bytes(size) })
        : t('portal.segmentsCount', { count: segments.length })),
    red
      ? el('p', { class: 'note' }, t('portal.redRecording'))
      : el('button', {
        type: 'button',
        onclick: (event) => playRecording(segments, who, player, status, error, event.currentTarget),
      }, t('portal.playWhole'), el('span', { class: 'visually-hidden' }, ` ${who}`)),
    status, error, player,
  );
}

// The player itself, for the browser test (a hearing in the story is too short for two segments) and for support.
window.custodiaPlayWhole = playWhole;

async function playRecording(segments, who, player, status, error, button) {
  if (!purpose()) {
    say(error, t('portal.purposeFirst'));
    return;
  }
  say(error, '');
  const video = el('video', { controls: true, preload: 'auto', playsInline: true });
  video.setAttribute('aria-label', t('portal.recordingOf', { who }));
  player.replaceChildren(video);
  button.textContent = t('portal.playAgain');
  video.focus();
  const urls = segments.map((s) => `/api/v1/artefacts/${enc(s.artefact)}/content?purpose=${enc(purpose())}&access=play`);
  // What the player skipped to get past a stall is said, never silent: this is evidence.
  const skips = el('p', { class: 'note', 'aria-live': 'polite' });
  player.append(skips);
  // The player keeps the seconds skipped in all (data-skipped); the page counts the skips.
  let count = 0;
  video.addEventListener('custodia-skipped', () => {
    count += 1;
    skips.textContent = t('portal.skipped', { count, seconds: Number(video.dataset.skipped).toFixed(2) });
  });
  try {
    await playWhole(video, urls, (loaded) => {
      player.dataset.loaded = String(loaded);
      status.textContent = t('portal.loadedSegments', { loaded, count: urls.length });
    });
  } catch (err) {
    say(error, err instanceof ApiError ? err.message : t('portal.cannotPlay'));
  }
}

function progressBox(id, label) {
  const progress = el('progress', { max: 100, value: 0, id });
  const text = el('span', { 'aria-live': 'polite' });
  const box = el('div', { hidden: true }, el('label', { htmlFor: id }, label), progress, text);
  return { box, progress, text };
}

function card(item, title) {
  const verdict = el('p', { class: 'verdict', role: 'status' }, t('portal.checking'));
  const details = el('ul', { class: 'note' });
  const player = el('div');
  const progress = progressBox(`progress-${item.id}`, t('portal.bundleProgress'));
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  // TLP:RED content never leaves the gateway, and a browser's player could keep what it plays: the gateway
  // sends neither a stream nor a bundle of it, so the portal offers neither.
  const red = item.tlp === 'TLP:RED';
  const playable = !red && may('download_artefact') && /^(video|audio)\//.test(item.media_type);
  const titleId = `title-${item.id}`;
  const section = el('section', { class: 'artefact', 'aria-labelledby': titleId, data: { artefact: item.id } },
    el('h3', { id: titleId }, title ?? item.id),
    el('dl', { class: 'facts' },
      title ? el('dt', {}, t('portal.artefact')) : null, title ? el('dd', { class: 'mono' }, item.id) : null,
      el('dt', {}, t('portal.type')), el('dd', {}, item.media_type),
      el('dt', {}, t('portal.size')), el('dd', {}, `${bytes(item.size)} (${t('portal.bytes', { count: item.size })})`),
      el('dt', {}, t('portal.registered')), el('dd', {}, t('portal.registeredAt', { when: when(item.registered_at, { seconds: true }), index: item.ledger_index })),
      el('dt', {}, 'SHA-256'), el('dd', { class: 'mono' }, item.sha256),
      el('dt', {}, t('portal.use')), el('dd', {}, t(item.restricted ? 'portal.restricted' : 'portal.unrestricted')),
    ),
    verdict,
    details,
    playable
      ? el('button', { type: 'button', onclick: (event) => play(item, player, error, event.currentTarget) }, t('portal.play'),
        el('span', { class: 'visually-hidden' }, ` ${title ?? item.id}`))
      : null,
    !may('export_artefact')
      ? null
      : red
      ? el('p', { class: 'note' }, t('portal.red'))
      : el('button', {
        type: 'button', class: 'primary',
        onclick: (event) => download(`/api/v1/artefacts/${enc(item.id)}/exports`, `${item.id}.bundle.tar`, progress, error, event.currentTarget),
      }, t('portal.download'), el('span', { class: 'visually-hidden' }, ` ${title ?? item.id}`)),
    progress.box,
    error,
    player,
  );
  const check = () => (may('view_timeline') ? verify(item) : Promise.reject(new Error(t('portal.noTimeline')))).then(
    (result) => {
      verdict.className = `verdict ${result.ok ? 'ok' : 'bad'}`;
      verdict.textContent = result.ok ? t('portal.verified') : t('portal.notVerified', { problem: result.problem });
      details.replaceChildren(...result.checks.map((text) => el('li', {}, text)));
    },
    (err) => {
      verdict.className = 'verdict bad';
      verdict.textContent = t('portal.couldNotCheck', { problem: err.message });
    },
  );
  // Playing and exporting are custody records too: check again afterwards, with them.
  section.addEventListener('custodia:accessed', check);
  check();
  return section;
}

// Verification from the timeline: the registration record names this artefact, the records form an unbroken chain,
// and each record's inclusion proof leads to the root of a checkpoint of the log.

async function verify(item) {
  const timeline = await api('GET', `/api/v1/artefacts/${enc(item.id)}/timeline`);
  const records = timeline.records ?? [];
  const checks = [];
  const fail = (key, vars) => ({ ok: false, problem: t(key, vars), checks });
  if (!records.length) return fail('portal.check.noRecord');
  const first = records[0].record;
  if (first.event?.type !== 'artefact_registered') return fail('portal.check.firstNotRegistration');
  if (first.event.artefact !== item.id) return fail('portal.check.registersOther');
  // The log commits to the SHA-256 only through the signed manifest's digest (the manifest carries a random nonce,
  // so the public log confirms no guess); the court bundle's verifier checks the bytes against that manifest.
  checks.push(t('portal.check.registered', { sha: `${first.event.manifest_sha256.slice(0, 16)}…`, index: records[0].ledger_index }));
  for (let i = 1; i < records.length; i += 1) {
    if (records[i].record.prior !== records[i - 1].ledger_index) {
      return fail('portal.check.gap', { index: records[i].ledger_index, prior: records[i - 1].ledger_index });
    }
  }
  checks.push(t('portal.check.chain', { count: records.length }));
  const encoder = new TextEncoder();
  let largest = 0;
  for (const entry of records) {
    const { proof, error } = readProof(encoder.encode(entry.proof));
    if (error) throw new Error(error);
    if (proof.index !== BigInt(entry.ledger_index)) return fail('portal.check.proofOther', { index: entry.ledger_index });
    const leaf = leafHash(encoder.encode(canonicalize(entry.record)));
    if (verifyInclusion(proof.index, proof.size, leaf, proof.path, proof.root) !== null) {
      return fail('portal.check.proofBad', { index: entry.ledger_index });
    }
    largest = Math.max(largest, Number(proof.size));
  }
  checks.push(t('portal.check.proven', { size: largest }));
  for (const entry of records) {
    for (const [field, opening] of Object.entries(entry.openings ?? {})) {
      const committed = field === 'case' || field === 'purpose' ? entry.record[field] : entry.record.event?.[field];
      if (commitment(opening.salt, field, opening.text) !== committed) {
        return fail('portal.check.openingBad', { field, index: entry.ledger_index });
      }
    }
    if (!entry.openings?.case || !entry.openings?.purpose) return fail('portal.check.openingMissing', { index: entry.ledger_index });
  }
  checks.push(t('portal.check.openings'));
  return { ok: true, checks };
}

// Playback: the browser asks for ranges as it plays; each play is a custody record.

function play(item, player, error, button) {
  if (!purpose()) {
    say(error, t('portal.purposeFirst'));
    return;
  }
  say(error, '');
  const video = el('video', { controls: true, preload: 'metadata', playsInline: true });
  video.setAttribute('aria-label', t('portal.recordingLabel', { id: item.id }));
  video.addEventListener('error', () => say(error, t('portal.cannotPlay')));
  video.src = `/api/v1/artefacts/${enc(item.id)}/content?purpose=${enc(purpose())}&access=play`;
  player.replaceChildren(video);
  button.textContent = t('portal.playAgain');
  video.focus();
  video.play().catch(() => {});
}

// Court bundle download (one artefact's, or a hearing's), streamed with progress, then saved under the gateway's
// file name.

async function download(path, fallbackName, { box, progress, text }, error, button) {
  if (!purpose()) {
    say(error, t('portal.purposeFirst'));
    return;
  }
  say(error, '');
  button.disabled = true;
  box.hidden = false;
  progress.value = 0;
  text.textContent = t('portal.preparing');
  try {
    let response;
    try {
      response = await fetch(`${path}?purpose=${enc(purpose())}`, { method: 'POST', credentials: 'same-origin' });
    } catch {
      throw new Error(t('portal.unreachable'));
    }
    if (!response.ok) throw await failure(response);
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
        text.textContent = t('portal.progressOf', { percent: progress.value, received: bytes(received), total: bytes(total) });
      } else {
        progress.removeAttribute('value');
        text.textContent = bytes(received);
      }
    }
    if (total && received !== total) throw new Error(t('portal.cutOff'));
    progress.value = 100;
    const disposition = response.headers.get('content-disposition') ?? '';
    const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? fallbackName;
    const url = URL.createObjectURL(new Blob(chunks, { type: 'application/x-tar' }));
    const link = el('a', { href: url, download: name }, name);
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    text.textContent = t('portal.downloaded', { name, size: bytes(received) });
    button.closest('section').dispatchEvent(new Event('custodia:accessed'));
  } catch (err) {
    say(error, err.message);
    box.hidden = true;
  } finally {
    button.disabled = false;
  }
}

