// The court console, /: sign in, cases, evidence (upload with progress, custody timeline, requests to widen use,
// outcome reports), hearings (schedule, invite, open), and the hearing room itself for the judge or the clerk.

import { api, ApiError } from './lib/api.js';
import { $, bytes, el, say, signInPage, when } from './lib/dom.js';
import { Room, ROLE_ORDER, openMedia } from './lib/room.js';

const ROLE_NAMES = {
  judge: 'Judge', clerk: 'Court clerk', prosecutor: 'Prosecutor', defence: 'Defence lawyer',
  interpreter: 'Interpreter', witness: 'Witness', remote_site_officer: 'Officer at the remote site', auditor: 'Auditor',
};
const PHASES = { scheduled: 'Scheduled', open: 'Lobby open', in_session: 'In session', ended: 'Ended' };
const PLACES = { lobby: 'lobby', main_room: 'main room', consultation: 'consultation room', away: 'away' };
const COURT = new Set(['judge', 'clerk']);

const view = { me: null, cases: [], case: null, artefact: null, hearing: null, room: null, roomState: null, slots: [] };

// Small helpers.

function announce(text) {
  $('status').textContent = text;
}

function role(name) {
  return ROLE_NAMES[name] ?? name;
}

/**
 * Whether the signed-in member may perform `action` on the open case, as the gateway says (`may` in the case's
 * detail). The console calls nothing else: a refused call is a public custody record, and which calls a member is
 * refused would tell anyone reading the log which role they hold.
 */
function may(action) {
  return Boolean(view.case?.may?.includes(action));
}

function humanize(text) {
  const words = String(text ?? '').replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** Runs an action, shows its error in plain words next to it, and keeps a double click from running it twice. */
async function attempt(errorElement, action, button) {
  say(errorElement, '');
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      showSignIn('Your session has ended. Please sign in again.');
    } else {
      say(errorElement, error.message);
    }
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

const enc = encodeURIComponent;

// Signing in.

const showSignIn = signInPage({
  signedOut() {
    view.me = null;
    $('room').hidden = true;
  },
  async signedIn(me) {
    view.me = me;
    await loadCases();
  },
  afterSignIn: () => $('main').focus(),
});

$('sign-out').addEventListener('click', async () => {
  view.room?.leave();
  await api('DELETE', '/api/v1/session').catch(() => {});
  showSignIn('You have signed out.');
});

// Cases.

async function loadCases() {
  const cases = await attempt($('sign-in-error'), () => api('GET', '/api/v1/cases'));
  if (!cases) return;
  view.cases = Array.isArray(cases) ? cases : cases.cases ?? [];
  $('cases-empty').hidden = view.cases.length > 0;
  $('cases').replaceChildren(
    ...view.cases.map((item) =>
      el('li', {}, el('button', { type: 'button', data: { case: item.id }, onclick: () => openCase(item.id) },
        `${item.title} `, el('span', { class: 'visually-hidden' }, `(${role(item.role)})`))),
    ),
  );
}

async function openCase(id) {
  const detail = await attempt($('sign-in-error'), () => api('GET', `/api/v1/cases/${enc(id)}`));
  if (!detail) return;
  view.case = detail;
  view.artefact = null;
  view.hearing = null;
  for (const button of $('cases').querySelectorAll('button')) {
    button.setAttribute('aria-current', String(button.dataset.case === id));
  }
  $('case-none').hidden = true;
  $('case-body').hidden = false;
  $('case-title').textContent = `${detail.title} (${detail.id})`;
  $('case-role').textContent = role(detail.role);
  $('artefact').hidden = true;
  $('hearing').hidden = true;
  $('schedule-form').hidden = !may('run_hearings');
  $('upload-form').hidden = !may('upload_artefact');
  $('invite-made').hidden = true;
  await Promise.all([loadArtefacts(), loadHearings()]);
  $('case-title').tabIndex = -1;
  $('case-title').focus();
}

// Tabs: arrow keys move between them, as the ARIA tabs pattern asks.

const tabs = [$('tab-evidence'), $('tab-hearings')];
function selectTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute('aria-selected', String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute('aria-controls')).hidden = !selected;
  }
}
for (const tab of tabs) {
  tab.addEventListener('click', () => selectTab(tab));
  tab.addEventListener('keydown', (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const rtl = document.documentElement.dir === 'rtl';
    const next = tabs[(tabs.indexOf(tab) + (rtl ? -step : step) + tabs.length) % tabs.length];
    selectTab(next);
    next.focus();
  });
}

// Evidence.

async function loadArtefacts() {
  $('artefacts-table').hidden = !may('list_artefacts');
  $('artefacts-closed').hidden = may('list_artefacts');
  if (!may('list_artefacts')) {
    $('artefacts').replaceChildren();
    $('artefacts-empty').hidden = true;
    return;
  }
  const list = await attempt($('upload-error'), () => api('GET', `/api/v1/cases/${enc(view.case.id)}/artefacts`));
  if (!list) return;
  const artefacts = Array.isArray(list) ? list : list.artefacts ?? [];
  $('artefacts-empty').hidden = artefacts.length > 0;
  $('artefacts').replaceChildren(
    ...artefacts.map((item) =>
      el('tr', { data: { artefact: item.id } },
        el('td', {}, el('code', {}, item.id), el('br'), el('span', { class: 'note mono', title: 'SHA-256' }, `${item.sha256.slice(0, 16)}…`)),
        el('td', {}, item.media_type),
        el('td', {}, bytes(item.size)),
        el('td', {}, when(item.registered_at)),
        el('td', {}, item.restricted ? 'Restricted' : 'Unrestricted'),
        el('td', {}, el('button', { type: 'button', onclick: () => openArtefact(item) }, 'Custody timeline',
          el('span', { class: 'visually-hidden' }, ` of ${item.id}`))),
      ),
    ),
  );
}

async function openArtefact(item) {
  view.artefact = item;
  $('artefact').hidden = false;
  $('artefact-title').textContent = `Artefact ${item.id}`;
  $('artefact-facts').replaceChildren(
    el('dt', {}, 'SHA-256'), el('dd', { class: 'mono' }, item.sha256),
    el('dt', {}, 'Size'), el('dd', {}, `${bytes(item.size)} (${item.size} bytes)`),
    el('dt', {}, 'Type'), el('dd', {}, item.media_type),
    el('dt', {}, 'Registered'), el('dd', {}, `${when(item.registered_at)}, custody record ${item.ledger_index}`),
  );
  $('widen-form').hidden = !may('request_wider_use');
  $('outcome-form').hidden = !may('file_outcome');
  await Promise.all([loadTimeline(), loadWiden(), loadOutcomes()]);
  $('artefact-title').tabIndex = -1;
  $('artefact-title').focus();
}

/** A record in words, with its committed fields opened (the timeline carries the openings for members). */
function describeEvent(event, openings) {
  const parts = [humanize(event?.type)];
  for (const key of ['access', 'code', 'change', 'kind', 'format', 'hearing', 'member']) {
    if (event?.[key] != null && typeof event[key] !== 'object') parts.push(`${humanize(key)}: ${event[key]}`);
  }
  for (const key of ['action', 'subject', 'site', 'outcome', 'role', 'operation', 'jurisdiction']) {
    if (openings?.[key]) parts.push(`${humanize(key)}: ${openings[key].text}`);
  }
  if (event?.sha256) parts.push(`SHA-256 ${event.sha256.slice(0, 16)}…`);
  return parts.join(' · ');
}

async function loadTimeline() {
  if (!may('view_timeline')) {
    $('timeline').replaceChildren(el('li', { class: 'note' }, 'Your role in this case does not see the custody timeline.'));
    return;
  }
  const timeline = await attempt($('artefact-error'), () => api('GET', `/api/v1/artefacts/${enc(view.artefact.id)}/timeline`));
  if (!timeline) return;
  $('timeline').replaceChildren(
    ...timeline.records.map((entry) =>
      el('li', {},
        el('strong', {}, describeEvent(entry.record.event, entry.openings)),
        el('br'),
        `${when(entry.record.at)} · by ${entry.record.actor} · purpose “${entry.openings?.purpose?.text ?? '(not opened)'}” · record ${entry.ledger_index}`,
        entry.record.repeated ? ` · stands for ${entry.record.repeated.count} more since ${when(entry.record.repeated.since)}` : '',
        entry.record.prior != null ? ` (follows ${entry.record.prior})` : '',
        entry.proof ? el('span', { class: 'ok' }, ' · proof included') : el('span', { class: 'bad' }, ' · no proof'),
      ),
    ),
  );
}

async function loadWiden() {
  if (!may('view_artefact')) {
    $('widen').replaceChildren();
    return;
  }
  const list = await attempt($('artefact-error'), () => api('GET', `/api/v1/artefacts/${enc(view.artefact.id)}/widen-requests`));
  if (!list) return;
  const requests = Array.isArray(list) ? list : list.requests ?? [];
  $('widen').replaceChildren(
    ...(requests.length ? requests : [null]).map((request) => {
      if (!request) return el('li', { class: 'note' }, 'No requests.');
      const asked = [
        ...(request.request.purposes ?? []).map((p) => `purpose “${p}”`),
        ...(request.request.recipients ?? []).map((r) => `recipient ${r}`),
        ...(request.request.jurisdictions ?? []).map((j) => `jurisdiction ${j}`),
        ...(request.request.transfers ?? []).map(() => 'an onward transfer'),
      ].join(', ') || 'wider use';
      const item = el('li', {}, `${request.requested_by} asks for ${asked}: `, el('strong', {}, humanize(request.status)));
      if (request.status === 'pending' && may('decide_wider_use')) {
        for (const approve of [true, false]) {
          item.append(' ', el('button', {
            type: 'button',
            onclick: (event) => attempt($('artefact-error'), async () => {
              await api('POST', `/api/v1/widen-requests/${enc(request.id)}/decision`, { approve });
              announce(approve ? 'Request approved.' : 'Request refused.');
              await loadWiden();
            }, event.currentTarget),
          }, approve ? 'Approve' : 'Refuse'));
        }
      }
      return item;
    }),
  );
}

$('widen-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const purpose = $('widen-purpose').value.trim();
  if (!purpose) {
    say($('artefact-error'), 'Say which purpose you are asking for.');
    return;
  }
  attempt($('artefact-error'), async () => {
    await api('POST', `/api/v1/artefacts/${enc(view.artefact.id)}/widen-requests`, { purposes: [purpose] });
    $('widen-purpose').value = '';
    announce('Request sent to the provider.');
    await loadWiden();
  }, event.submitter);
});

async function loadOutcomes() {
  if (!may('view_outcomes')) {
    $('outcomes').replaceChildren(el('li', { class: 'note' }, 'Your role in this case does not see outcome reports.'));
    return;
  }
  const list = await attempt($('artefact-error'), () => api('GET', `/api/v1/artefacts/${enc(view.artefact.id)}/outcomes`));
  if (!list) return;
  const outcomes = Array.isArray(list) ? list : list.outcomes ?? [];
  $('outcomes').replaceChildren(
    ...(outcomes.length ? outcomes : [null]).map((outcome) =>
      outcome
        ? el('li', {}, el('strong', {}, humanize(outcome.outcome)), ` · ${when(outcome.filed_at)} · by ${outcome.filed_by}`,
          outcome.note ? ` · “${outcome.note}”` : '')
        : el('li', { class: 'note' }, 'No outcomes reported.'),
    ),
  );
}

$('outcome-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const body = { outcome: $('outcome-kind').value };
  const note = $('outcome-note').value.trim();
  if (note) body.note = note;
  attempt($('artefact-error'), async () => {
    await api('POST', `/api/v1/artefacts/${enc(view.artefact.id)}/outcomes`, body);
    $('outcome-note').value = '';
    announce('Outcome reported.');
    await loadOutcomes();
  }, event.submitter);
});

// Upload, with progress: XMLHttpRequest reports upload progress, fetch does not.

async function sha256Hex(file) {
  const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function problemWords(xhr) {
  try {
    const problem = JSON.parse(xhr.responseText);
    if (problem.detail || problem.title) return String(problem.detail || problem.title);
  } catch {
    /* not a problem document */
  }
  return xhr.status ? `The gateway refused the upload (HTTP ${xhr.status}).` : 'The gateway could not be reached.';
}

$('upload-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const file = $('upload-file').files[0];
  const purpose = $('upload-purpose').value.trim();
  say($('upload-done'), '');
  if (!file || !purpose) {
    say($('upload-error'), file ? 'Say why you are uploading this file.' : 'Choose a file to upload.');
    return;
  }
  const button = event.submitter;
  button.disabled = true;
  $('upload-progress-box').hidden = false;
  $('upload-progress').value = 0;
  $('upload-progress-text').textContent = 'Computing the file’s SHA-256…';
  try {
    // The gateway checks the digest we state, so a file damaged on the way is refused, not registered.
    const query = new URLSearchParams({ purpose, filename: file.name });
    if (file.size <= 512 * 1024 * 1024) query.set('sha256', await sha256Hex(file));
    const registered = await new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', `/api/v1/cases/${enc(view.case.id)}/artefacts?${query}`);
      xhr.setRequestHeader('content-type', file.type || 'application/octet-stream');
      xhr.upload.addEventListener('progress', (progress) => {
        if (!progress.lengthComputable) return;
        const percent = Math.floor((progress.loaded / progress.total) * 100);
        $('upload-progress').value = percent;
        $('upload-progress-text').textContent = `${percent}% · ${bytes(progress.loaded)} of ${bytes(progress.total)}`;
      });
      xhr.addEventListener('load', () => {
        if (xhr.status === 201) resolve(JSON.parse(xhr.responseText));
        else reject(new ApiError(problemWords(xhr), { status: xhr.status }));
      });
      xhr.addEventListener('error', () => reject(new ApiError('The upload was cut off. Check the connection and try again.')));
      xhr.send(file);
    });
    $('upload-progress').value = 100;
    $('upload-progress-text').textContent = '100%';
    say($('upload-error'), '');
    say($('upload-done'), `Uploaded and registered as ${registered.artefact} (custody record ${registered.ledger_index}).`);
    $('upload-file').value = '';
    await loadArtefacts();
  } catch (error) {
    say($('upload-error'), error.message);
  } finally {
    button.disabled = false;
  }
});

// Hearings.

function hearingPath(hearing = view.hearing) {
  return `/api/v1/cases/${enc(view.case.id)}/hearings/${enc(hearing.id)}`;
}

async function loadHearings() {
  let list;
  try {
    list = await api('GET', `/api/v1/cases/${enc(view.case.id)}/hearings`);
  } catch (error) {
    $('hearings').replaceChildren(el('li', { class: 'note' }, `Hearings are not available: ${error.message}`));
    return;
  }
  const hearings = list?.hearings ?? [];
  $('hearings-empty').hidden = hearings.length > 0;
  $('hearings').replaceChildren(
    ...hearings.map((hearing) =>
      el('li', {},
        el('button', {
          type: 'button', data: { hearing: hearing.id }, onclick: () => showHearing(hearing),
          'aria-current': String(view.hearing?.id === hearing.id),
        },
          `${when(hearing.scheduled_for)}, ${hearing.place}`),
        ` ${PHASES[hearing.phase] ?? hearing.phase}`),
    ),
  );
}

function showHearing(hearing) {
  view.hearing = hearing;
  for (const button of $('hearings').querySelectorAll('button')) {
    button.setAttribute('aria-current', String(button.dataset.hearing === hearing.id));
  }
  $('hearing').hidden = false;
  $('hearing-title').textContent = `Hearing ${hearing.id}`;
  const segments = hearing.segments ?? [];
  $('hearing-facts').replaceChildren(
    el('dt', {}, 'When'), el('dd', {}, when(hearing.scheduled_for)),
    el('dt', {}, 'Place'), el('dd', {}, hearing.place),
    el('dt', {}, 'Phase'), el('dd', {}, PHASES[hearing.phase] ?? hearing.phase),
    el('dt', {}, 'Recording'), el('dd', {}, hearing.recording ? 'Yes' : 'No'),
    el('dt', {}, 'Recorded segments'),
    el('dd', {}, segments.length ? `${segments.length}: ${segments.map((segment) => segment.artefact).join(', ')}` : 'None'),
    el('dt', {}, 'Minutes'), el('dd', {}, hearing.minutes_artefact ?? 'Not yet'),
  );
  const clerk = may('run_hearings');
  $('hearing-open').hidden = !clerk || hearing.phase !== 'scheduled';
  $('hearing-close').hidden = !clerk || hearing.phase === 'ended';
  $('invite-form').hidden = !clerk || hearing.phase === 'ended';
  $('enter-form').hidden = hearing.phase === 'ended';
  $('invites').replaceChildren(
    ...(hearing.invites?.length ? hearing.invites : [null]).map((invite) => {
      if (!invite) return el('li', { class: 'note' }, 'No invites yet.');
      const validity = invite.state === 'pending' ? `, valid until ${when(invite.expires_at)} ` : ' ';
      const item = el('li', { data: { invite: invite.id } }, `${role(invite.role)}: ${humanize(invite.state)}${validity}`);
      if (invite.state === 'pending' && may('run_hearings')) {
        item.append(el('button', {
          type: 'button', class: 'danger',
          onclick: (event) => attempt($('hearing-error'), async () => {
            await api('DELETE', `${hearingPath()}/invites/${enc(invite.id)}`);
            announce('Invite revoked.');
            await refreshHearing();
          }, event.currentTarget),
        }, 'Revoke', el('span', { class: 'visually-hidden' }, ` the ${role(invite.role)} invite`)));
      }
      return item;
    }),
  );
}

async function refreshHearing() {
  const hearing = await attempt($('hearing-error'), () => api('GET', hearingPath()));
  if (hearing) showHearing(hearing);
  await loadHearings();
}

/** After the end, the gateway closes the recordings and signs the minutes: show them when they are in custody. */
async function awaitMinutes() {
  for (let tries = 0; tries < 30 && view.hearing?.phase === 'ended' && !view.hearing.minutes_artefact; tries += 1) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const hearing = await api('GET', hearingPath()).catch(() => null);
    if (hearing && view.hearing?.id === hearing.id) showHearing(hearing);
  }
  if (view.hearing?.minutes_artefact) {
    say($('hearing-notice'), `The hearing has ended. The signed minutes are in custody as ${view.hearing.minutes_artefact}.`);
    await loadArtefacts();
  }
}

$('schedule-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const local = $('schedule-when').value;
  const place = $('schedule-place').value.trim();
  if (!local || !place) {
    say($('schedule-error'), 'Give the date, the time and the place.');
    return;
  }
  attempt($('schedule-error'), async () => {
    const hearing = await api('POST', `/api/v1/cases/${enc(view.case.id)}/hearings`, {
      scheduled_for: new Date(local).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      place,
      identity_check_before_oath: $('schedule-identity').checked,
    });
    announce('Hearing scheduled.');
    await loadHearings();
    showHearing(hearing);
    $('hearing-title').tabIndex = -1;
    $('hearing-title').focus();
  }, event.submitter);
});

$('hearing-open').addEventListener('click', (event) =>
  attempt($('hearing-error'), async () => {
    showHearing(await api('POST', `${hearingPath()}/open`));
    announce('The lobby is open.');
    await loadHearings();
  }, event.currentTarget));

$('hearing-close').addEventListener('click', (event) => {
  if (!window.confirm('End this hearing for everyone?')) return;
  attempt($('hearing-error'), async () => {
    showHearing(await api('POST', `${hearingPath()}/close`));
    announce('The hearing has ended.');
    await loadHearings();
  }, event.currentTarget);
});

$('invite-role').addEventListener('change', () => {
  const court = COURT.has($('invite-role').value);
  $('invite-admit').disabled = !court;
  if (!court) $('invite-admit').checked = false;
});
$('invite-admit').disabled = true;

let madeSecret = null;
$('invite-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const hours = Number($('invite-hours').value) || 24;
  const body = { role: $('invite-role').value, expires_in_seconds: Math.round(hours * 3600), admit_on_join: $('invite-admit').checked };
  attempt($('hearing-error'), async () => {
    const invite = await api('POST', `${hearingPath()}/invites`, body);
    madeSecret = invite.secret;
    $('invite-made').hidden = false;
    $('invite-made-role').textContent = role(invite.role);
    $('invite-link').value = new URL(invite.link, location.origin).href;
    $('invite-copied').textContent = '';
    $('invite-enter').hidden = !(COURT.has(invite.role) && body.admit_on_join);
    $('invite-link').focus();
    $('invite-link').select();
    await refreshHearing();
  }, event.submitter);
});

$('invite-copy').addEventListener('click', async () => {
  const link = $('invite-link').value;
  try {
    await navigator.clipboard.writeText(link);
  } catch {
    $('invite-link').select();
    document.execCommand?.('copy');
  }
  $('invite-copied').textContent = 'Copied.';
});

$('invite-enter').addEventListener('click', () => madeSecret && enterRoom(madeSecret));

$('enter-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('enter-invite').value.trim();
  const secret = text.includes('#') ? text.slice(text.indexOf('#') + 1) : text;
  if (!secret) {
    say($('hearing-error'), 'Paste the invite link you were sent.');
    return;
  }
  $('enter-invite').value = '';
  enterRoom(decodeURIComponent(secret));
});

// The hearing room.

async function enterRoom(secret) {
  say($('hearing-error'), '');
  say($('hearing-notice'), '');
  const { stream, error } = await openMedia({ video: true });
  if (!stream) {
    say($('hearing-error'), error === 'denied'
      ? 'The browser may not use your camera and microphone. Allow them, then try again.'
      : 'No microphone was found. Connect one, then try again.');
    return;
  }
  view.media = stream;
  view.roomState = null;
  $('app').hidden = true;
  $('room').hidden = false;
  $('videos').replaceChildren();
  view.room = new Room(stream, {
    onConnection(status) {
      const text = { connecting: 'Connecting to the room…', reconnecting: 'The connection was lost. Reconnecting…' }[status];
      say($('room-connection'), text);
    },
    onWelcome(welcome) {
      $('room-title').textContent = `Hearing room · ${welcome.hearing?.place ?? ''}`;
      $('room-you').textContent = role(welcome.role);
      view.welcome = welcome;
    },
    onState(state) {
      view.roomState = state;
      if (view.pending) {
        say($('room-done'), `Done: ${view.pending}.`);
        view.pending = null;
      }
      renderRoom();
    },
    onSlots(slots) {
      view.slots = slots;
      $('videos').replaceChildren();
      renderRoom();
    },
    onRefused(refusal) {
      view.pending = null;
      if (refusal.action) say($('room-error'), `${humanize(refusal.action)} was refused: ${refusal.reason}`);
      else leaveRoom(`You could not enter the room: ${refusal.reason}`);
    },
    onEnded: () => leaveRoom('The hearing has ended.'),
    onRemoved: () => leaveRoom('You were removed from the hearing.'),
    onReplaced: () => leaveRoom('You entered this hearing from another window, so this one has left the room.'),
    onError: (err) => say($('room-error'), err.message),
  });
  window.custodiaRoom = view.room; // for the browser test and for support staff
  view.room.join(secret);
  $('room-title').tabIndex = -1;
  $('room-title').focus();
}

function leaveRoom(message) {
  view.room = null;
  view.media?.getTracks().forEach((track) => track.stop());
  $('room').hidden = true;
  $('app').hidden = false;
  if (view.hearing) refreshHearing().then(awaitMinutes);
  say($('hearing-error'), '');
  announce(message);
  $('invite-made').hidden = true;
  say($('hearing-notice'), message);
}

const DONE = {
  admit: 'admitted', remove: 'removed', mute: 'muted', unmute: 'microphone on', start_session: 'the session has started',
  start_recording: 'recording started', stop_recording: 'recording stopped', verify_identity: 'identity check recorded',
  rights_notice: 'rights notice recorded', oath: 'oath recorded', swear_interpreter: 'interpreter sworn',
};

function send(message, button) {
  say($('room-error'), '');
  say($('room-done'), '');
  view.pending = DONE[message.type] ?? null;
  view.room?.send(message);
  if (button) {
    // The answer is a new state (or a refusal); keep the button from being pressed twice meanwhile.
    button.disabled = true;
    setTimeout(() => { button.disabled = false; }, 800);
  }
}

function renderRoom() {
  const state = view.roomState;
  if (!state) return;
  const you = state.you ?? {};
  const mine = you.role;
  $('room-phase').textContent = PHASES[state.phase] ?? state.phase;
  $('rec').hidden = !state.recording;
  $('not-rec').hidden = state.recording;
  $('act-record').textContent = state.recording ? 'Stop recording' : 'Start recording';
  $('act-record').setAttribute('aria-pressed', String(Boolean(state.recording)));
  $('act-start-session').hidden = mine !== 'judge' || state.phase !== 'open';
  $('act-record').hidden = !COURT.has(mine);
  $('act-end').hidden = !COURT.has(mine);
  $('act-mute-self').textContent = you.muted ? 'Turn my microphone on' : 'Mute my microphone';
  $('act-mute-self').setAttribute('aria-pressed', String(Boolean(you.muted)));

  const people = [...(state.participants ?? [])].sort((a, b) => ROLE_ORDER.indexOf(a.role) - ROLE_ORDER.indexOf(b.role));
  const waiting = people.filter((p) => p.place === 'lobby' && p.id !== you.participant);
  $('lobby-empty').hidden = waiting.length > 0;
  $('lobby').replaceChildren(
    ...waiting.map((person) =>
      el('li', { data: { participant: person.id } },
        el('span', {}, `${role(person.role)}${person.connected === false ? ' (connection lost)' : ''}`),
        el('span', {},
          COURT.has(mine) ? el('button', { type: 'button', class: 'primary', onclick: (e) => send({ type: 'admit', participant: person.id }, e.currentTarget) },
            'Admit', el('span', { class: 'visually-hidden' }, ` the ${role(person.role)}`)) : null,
          COURT.has(mine) ? el('button', { type: 'button', class: 'danger', onclick: (e) => send({ type: 'remove', participant: person.id }, e.currentTarget) },
            'Remove', el('span', { class: 'visually-hidden' }, ` the ${role(person.role)}`)) : null),
      ),
    ),
  );

  const present = people.filter((p) => p.place !== 'lobby');
  $('people').replaceChildren(
    ...present.map((person) => {
      const isYou = person.id === you.participant;
      const item = el('li', { data: { participant: person.id } },
        el('span', { class: 'who' }, `${role(person.role)}${isYou ? ' (you)' : ''} · ${PLACES[person.place] ?? person.place}`
          + `${person.muted ? ' · muted' : ''}${person.connected === false ? ' · connection lost' : ''}`));
      if (COURT.has(mine) && !isYou) {
        item.append(
          el('button', { type: 'button', onclick: (e) => send({ type: person.muted ? 'unmute' : 'mute', participant: person.id }, e.currentTarget) },
            person.muted ? 'Unmute' : 'Mute', el('span', { class: 'visually-hidden' }, ` the ${role(person.role)}`)),
          el('button', { type: 'button', class: 'danger', onclick: (e) => send({ type: 'remove', participant: person.id }, e.currentTarget) },
            'Remove', el('span', { class: 'visually-hidden' }, ` the ${role(person.role)}`)),
        );
      }
      return item;
    }),
  );

  for (const select of document.querySelectorAll('.person-select')) {
    const chosen = select.value;
    const wanted = select.id === 'interpreter-person' ? ['interpreter'] : select.id === 'oath-witness' ? ['witness'] : null;
    const options = people.filter((p) => p.id !== you.participant && (!wanted || wanted.includes(p.role)));
    select.replaceChildren(...options.map((p) => new Option(`${role(p.role)} (${p.id})`, p.id)));
    if (options.some((p) => p.id === chosen)) select.value = chosen;
  }
  const interpreters = people.some((p) => p.role === 'interpreter');
  for (const id of ['interpreter-person', 'interpreter-languages', 'swear-interpreter']) $(id).disabled = !interpreters;
  $('identity-form').hidden = mine !== 'remote_site_officer';
  $('identity-note').hidden = mine === 'remote_site_officer';
  $('room-waiting').hidden = you.place !== 'lobby';
  $('oath-form').hidden = mine !== 'judge';
  renderVideos(present, you);
}

/** One <video> per slot held by someone in our place; our own camera in our own tile. */
function renderVideos(present, you) {
  const container = $('videos');
  const keep = new Set();
  for (const person of present) {
    const isYou = person.id === you.participant;
    if (!isYou && (person.place !== you.place || person.slot == null || !view.slots[person.slot])) continue;
    const key = isYou ? 'self' : `slot-${person.slot}`;
    keep.add(key);
    let tile = container.querySelector(`[data-key="${key}"]`);
    if (!tile) {
      const video = el('video', { autoplay: true, playsInline: true, muted: isYou });
      video.srcObject = isYou ? view.media : view.slots[person.slot];
      if (!isYou) video.dataset.slot = String(person.slot);
      tile = el('figure', { class: isYou ? 'tile self' : 'tile', data: { key } }, video, el('figcaption'));
      container.append(tile);
      video.play().catch(() => {});
    }
    tile.dataset.participant = person.id;
    const label = `${role(person.role)}${isYou ? ' (you)' : ''}${person.muted ? ' · muted' : ''}`;
    tile.querySelector('figcaption').textContent = label;
    tile.querySelector('video').setAttribute('aria-label', `Video of the ${label}`);
  }
  for (const tile of [...container.children]) if (!keep.has(tile.dataset.key)) tile.remove();
}

$('act-start-session').addEventListener('click', (e) => send({ type: 'start_session' }, e.currentTarget));
$('act-record').addEventListener('click', (e) =>
  send({ type: view.roomState?.recording ? 'stop_recording' : 'start_recording' }, e.currentTarget));
$('act-mute-self').addEventListener('click', (e) => {
  const you = view.roomState?.you;
  if (you) send({ type: you.muted ? 'unmute' : 'mute', participant: you.participant }, e.currentTarget);
});
$('act-end').addEventListener('click', (e) => {
  if (window.confirm('End the hearing for everyone? The recording stops and the minutes are signed.')) {
    send({ type: 'end' }, e.currentTarget);
  }
});
$('act-leave').addEventListener('click', () => {
  view.room?.leave();
  leaveRoom('You left the room. The hearing goes on without you.');
});

$('identity-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const person = $('identity-person').value;
  const officer = $('identity-officer').value.trim();
  const site = $('identity-site').value.trim();
  if (!person || !officer || !site) {
    say($('room-error'), 'Choose the person and give the officer’s name and the site.');
    return;
  }
  send({ type: 'verify_identity', person, document: $('identity-document').value, officer_name: officer, site }, event.submitter);
});
$('rights-notice').addEventListener('click', (e) => {
  const person = $('oath-witness').value;
  if (person) send({ type: 'rights_notice', person }, e.currentTarget);
  else say($('room-error'), 'Choose the witness first.');
});
$('oath-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const witness = $('oath-witness').value;
  if (!witness) {
    say($('room-error'), 'Choose the witness first.');
    return;
  }
  send({ type: 'oath', witness, form: $('oath-kind').value }, event.submitter);
});
$('swear-interpreter').addEventListener('click', (e) => {
  const interpreter = $('interpreter-person').value;
  const languages = $('interpreter-languages').value.trim();
  if (interpreter && languages) send({ type: 'swear_interpreter', interpreter, languages }, e.currentTarget);
  else say($('room-error'), 'Choose the interpreter and give the languages.');
});
