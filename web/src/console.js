// The court console, /: sign in, cases, evidence (upload with progress, custody timeline, requests to widen use,
// outcome reports), hearings (schedule, invite, open), and the hearing room itself for the judge or the clerk.

import { api, ApiError } from './lib/api.js';
import { $, bytes, el, say, signInPage, startLanguage, when } from './lib/dom.js';
import { language, languageName, t, translate } from './lib/i18n.js';
import { Room, ROLE_ORDER, openMedia } from './lib/room.js';

const ROLE_NAMES = {
  judge: 'Judge', clerk: 'Court clerk', prosecutor: 'Prosecutor', defence: 'Defence lawyer',
  accused: 'Accused', interpreter: 'Interpreter', witness: 'Witness', remote_site_officer: 'Officer at the remote site',
  observer: 'Observer', auditor: 'Auditor',
};
const PHASES = { scheduled: 'Scheduled', open: 'Lobby open', in_session: 'In session', ended: 'Ended' };
const COURT = new Set(['judge', 'clerk']);

// A court officer's invite link (/?room#<secret>) opens the hearing room here, once signed in. The secret leaves
// the address bar at once, before the module waits for anything (the page's load event does not wait for a
// module's top-level await), and waits in this tab only.
const ROOM_INVITE_KEY = 'custodia.court.invite';
if (new URLSearchParams(location.search).has('room') && location.hash.length > 1) {
  sessionStorage.setItem(ROOM_INVITE_KEY, decodeURIComponent(location.hash.slice(1)));
  history.replaceState(null, '', '/');
}

const view = { me: null, cases: [], case: null, artefact: null, hearing: null, room: null, roomState: null, slots: [] };

// Small helpers.

function announce(text) {
  $('status').textContent = text;
}

function role(name) {
  const key = `role.${name}`;
  const words = t(key);
  return words === key ? ROLE_NAMES[name] ?? name : words;
}

/** A hearing's phase in words. */
function phase(name) {
  const key = `console.phase.${name}`;
  const words = t(key);
  return words === key ? PHASES[name] ?? name : words;
}

/** An invite's state in words: pending, used, revoked, expired. */
function inviteState(name) {
  const key = `console.invite.${name}`;
  const words = t(key);
  return words === key ? humanize(name) : words;
}

/** Roles a protective order may let see and hear the original besides the court (never a witness or an observer). */
const PRIVILEGEABLE = ['prosecutor', 'defence', 'accused', 'interpreter', 'remote_site_officer'];

/**
 * A participant as the court reads them: their name (from the invite) and role, or the role alone; a protected
 * witness with the pseudonym everyone else reads beside the name, so that the court does not say the name aloud.
 */
function who(person) {
  const pseudonym = protectionOf(person)?.pseudonym;
  // Isolated: a Latin name or pseudonym inside Arabic text keeps its own direction.
  const named = pseudonym
    ? t(person.name ? 'console.protection.named' : 'console.protection.unnamed', { name: person.name, pseudonym: `\u2068${pseudonym}\u2069` })
    : person.name;
  return named ? `${named} (${role(person.role)})` : role(person.role);
}

/**
 * The protective order for a person: an invite of the court's hearing view carries its own (`protection`). The
 * room's state names a witness but not their invite, so a participant is matched to the used witness invites of
 * the same name in the hearing view the room last read; where that is not one order, none is shown.
 */
function protectionOf(person) {
  if (!person) return null;
  if ('protection' in person) return person.protection ?? null;
  if (person.role !== 'witness' || !view.roomHearing) return null;
  const invites = (view.roomHearing.invites ?? []).filter((invite) =>
    invite.role === 'witness' && invite.state === 'used' && (invite.name ?? null) === (person.name ?? null));
  const orders = new Set(invites.map((invite) => JSON.stringify(invite.protection ?? null)));
  return orders.size === 1 ? invites[0].protection ?? null : null;
}

/** A protective order in words: "pseudonym “Witness A”; face masked; voice altered; the original also …". */
function protectionWords(protection) {
  const parts = [t('console.protection.pseudonym', { pseudonym: `\u2068${protection.pseudonym}\u2069` })];
  if (protection.mask_face) parts.push(t('console.protection.face'));
  if (protection.alter_voice) parts.push(t('console.protection.voice'));
  const privileged = protection.privileged ?? [];
  parts.push(privileged.length
    ? t('console.protection.privileged', { roles: privileged.map(role).join(', ') })
    : t('console.protection.courtOnly'));
  return t('console.protection.state', { measures: parts.join('; ') });
}

/** The end of a button's name that acts on a participant: "the Witness, Amina Haddad". */
function whom(person) {
  return ` ${t('console.room.whom', { role: role(person.role), name: person.name ? `, ${person.name}` : '' })}`;
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
      showSignIn(t('console.sessionEnded'));
    } else {
      say(errorElement, error.message);
    }
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

const enc = encodeURIComponent;

// The page speaks the reader's language before anything is shown; a switch writes the case and hearing again.
await startLanguage($('language'), () => {
  translate(document);
  if (view.case) {
    $('case-role').textContent = role(view.case.role);
    loadArtefacts();
    loadHearings();
    if (view.hearing) showHearing(view.hearing);
  }
  if (view.me) loadCases();
});

// Signing in.


const showSignIn = signInPage({
  signedOut() {
    view.me = null;
    $('room').hidden = true;
    $('admin-link').hidden = true;
  },
  async signedIn(me) {
    view.me = me;
    $('admin-link').hidden = !me.is_admin;
    await loadCases();
    const invite = sessionStorage.getItem(ROOM_INVITE_KEY);
    if (invite) {
      sessionStorage.removeItem(ROOM_INVITE_KEY);
      await enterRoom(invite);
    }
  },
  afterSignIn() {
    // An administrator who is a member of no case has nothing to do here: they land on the administration page.
    if (view.me?.is_admin && !view.cases.length) location.assign('/admin');
    else $('main').focus();
  },
});

$('sign-out').addEventListener('click', async () => {
  view.room?.leave();
  await api('DELETE', '/api/v1/session').catch(() => {});
  showSignIn(t('console.signedOut'));
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
        el('td', {}, t(item.restricted ? 'console.restricted' : 'console.unrestricted')),
        el('td', {}, el('button', { type: 'button', onclick: () => openArtefact(item) }, t('console.timeline'),
          el('span', { class: 'visually-hidden' }, t('console.ofArtefact', { id: item.id })))),
      ),
    ),
  );
}

async function openArtefact(item) {
  view.artefact = item;
  $('artefact').hidden = false;
  $('artefact-title').textContent = t('console.artefactTitle', { id: item.id });
  $('artefact-facts').replaceChildren(
    el('dt', {}, 'SHA-256'), el('dd', { class: 'mono' }, item.sha256),
    el('dt', {}, t('portal.size')), el('dd', {}, `${bytes(item.size)} (${t('portal.bytes', { count: item.size })})`),
    el('dt', {}, t('portal.type')), el('dd', {}, item.media_type),
    el('dt', {}, t('portal.registered')), el('dd', {}, t('portal.registeredAt', { when: when(item.registered_at, { seconds: true }), index: item.ledger_index })),
  );
  $('widen-form').hidden = !may('request_wider_use');
  $('outcome-form').hidden = !may('file_outcome');
  await Promise.all([loadTimeline(), loadWiden(), loadOutcomes(), loadTransfers()]);
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
        t('console.recordLine', {
          when: when(entry.record.at, { seconds: true }), actor: entry.record.actor,
          purpose: entry.openings?.purpose?.text ?? t('console.notOpened'), index: entry.ledger_index,
        }),
        entry.record.repeated ? t('console.repeated', { count: entry.record.repeated.count, since: when(entry.record.repeated.since, { seconds: true }) }) : '',
        entry.record.prior != null ? t('console.follows', { prior: entry.record.prior }) : '',
        entry.proof ? el('span', { class: 'ok' }, t('console.proof')) : el('span', { class: 'bad' }, t('console.noProof')),
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
      if (!request) return el('li', { class: 'note' }, t('console.noRequests'));
      const asked = [
        ...(request.request.purposes ?? []).map((p) => t('console.askPurpose', { purpose: p })),
        ...(request.request.recipients ?? []).map((r) => t('console.askRecipient', { recipient: r })),
        ...(request.request.jurisdictions ?? []).map((j) => t('console.askJurisdiction', { jurisdiction: j })),
        ...(request.request.transfers ?? []).map(() => t('console.askTransfer')),
      ].join(', ') || t('console.askWider');
      const item = el('li', {}, t('console.asks', { who: request.requested_by, what: asked }), ' ',
        el('strong', {}, t(`console.request.${request.status}`)));
      if (request.status === 'pending' && may('decide_wider_use')) {
        for (const approve of [true, false]) {
          item.append(' ', el('button', {
            type: 'button',
            onclick: (event) => attempt($('artefact-error'), async () => {
              await api('POST', `/api/v1/widen-requests/${enc(request.id)}/decision`, { approve });
              announce(t(approve ? 'console.approved' : 'console.refused'));
              await loadWiden();
            }, event.currentTarget),
          }, t(approve ? 'console.approve' : 'console.refuse')));
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
    say($('artefact-error'), t('console.purposeMissing'));
    return;
  }
  attempt($('artefact-error'), async () => {
    await api('POST', `/api/v1/artefacts/${enc(view.artefact.id)}/widen-requests`, { purposes: [purpose] });
    $('widen-purpose').value = '';
    announce(t('console.requestSent'));
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
        ? el('li', {}, el('strong', {}, t(`console.outcome.${outcome.outcome}`)),
          t('console.outcomeLine', { when: when(outcome.filed_at), who: outcome.filed_by }),
          outcome.note ? ` · “${outcome.note}”` : '')
        : el('li', { class: 'note' }, t('console.noOutcomes')),
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
    announce(t('console.outcomeReported'));
    await loadOutcomes();
  }, event.submitter);
});

// Transfers to and from partner gateways: each with its ladder of evidences (e-CODEX), each evidence kept on
// both gateways' logs; a receipt (the transfer with every evidence and both logs' proofs) downloads as JSON.

async function loadTransfers() {
  if (!may('view_timeline')) {
    $('transfers').replaceChildren();
    $('transfer-form').hidden = true;
    return;
  }
  const list = await attempt($('artefact-error'), () => api('GET', `/api/v1/artefacts/${enc(view.artefact.id)}/transfers`));
  if (!list) return;
  $('transfers').replaceChildren(
    ...(list.length ? list : [null]).map((transfer) => (transfer ? transferItem(transfer) : el('li', { class: 'note' }, t('console.noTransfers')))),
  );
  const sending = may('transfer_artefact');
  $('transfer-form').hidden = !sending;
  if (sending && !$('transfer-partner').options.length) {
    const partners = await attempt($('artefact-error'), () => api('GET', '/api/v1/partners'));
    for (const partner of partners ?? []) {
      $('transfer-partner').append(el('option', { value: partner.name }, `${partner.name} (${partner.jurisdiction})`));
    }
    $('transfer-form').hidden = !$('transfer-partner').options.length;
  }
}

function transferItem(transfer) {
  const direction = transfer.direction === 'out' ? t('console.transferTo', { partner: transfer.partner }) : t('console.transferFrom', { partner: transfer.partner });
  const ladder = el('ol', { class: 'ladder' },
    ...transfer.evidences.map((evidence) => el('li', { data: { event: evidence.event } }, evidence.event,
      el('span', { class: 'note' }, ` · ${t(evidence.pending ? 'console.evidencePending'
        : evidence.own && evidence.partner ? 'console.onBothLogs' : 'console.onOneLog')}`))));
  const receipt = new Blob([JSON.stringify(transfer, null, 2)], { type: 'application/json' });
  const link = el('a', { href: URL.createObjectURL(receipt), download: `receipt-${transfer.id}.json` }, t('console.receipt'));
  return el('li', { data: { transfer: transfer.id, stage: transfer.stage } },
    el('strong', {}, direction), ` · ${t(`console.stage.${transfer.stage}`)} · ${when(transfer.created_at)} · `, link, ladder);
}

$('transfer-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const purpose = $('transfer-purpose').value.trim();
  if (!purpose) {
    $('transfer-purpose').focus();
    return;
  }
  attempt($('artefact-error'), async () => {
    await api('POST', `/api/v1/artefacts/${enc(view.artefact.id)}/transfers`, { partner: $('transfer-partner').value, purpose });
    $('transfer-purpose').value = '';
    announce(t('console.transferSubmitted'));
    await loadTransfers();
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
  return xhr.status ? t('console.uploadRefused', { status: xhr.status }) : t('portal.unreachable');
}

$('upload-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const file = $('upload-file').files[0];
  const purpose = $('upload-purpose').value.trim();
  say($('upload-done'), '');
  if (!file || !purpose) {
    say($('upload-error'), t(file ? 'console.uploadWhy' : 'console.uploadChoose'));
    return;
  }
  const button = event.submitter;
  button.disabled = true;
  $('upload-progress-box').hidden = false;
  $('upload-progress').value = 0;
  $('upload-progress-text').textContent = t('console.hashing');
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
        $('upload-progress-text').textContent = t('portal.progressOf', { percent, received: bytes(progress.loaded), total: bytes(progress.total) });
      });
      xhr.addEventListener('load', () => {
        if (xhr.status === 201) resolve(JSON.parse(xhr.responseText));
        else reject(new ApiError(problemWords(xhr), { status: xhr.status }));
      });
      xhr.addEventListener('error', () => reject(new ApiError(t('console.uploadCut'))));
      xhr.send(file);
    });
    $('upload-progress').value = 100;
    $('upload-progress-text').textContent = '100%';
    say($('upload-error'), '');
    say($('upload-done'), t('console.uploaded', { id: registered.artefact, index: registered.ledger_index }));
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

/** The case's hearings, by date (the earliest first), each with its phase. */
async function loadHearings() {
  let list;
  try {
    list = await api('GET', `/api/v1/cases/${enc(view.case.id)}/hearings`);
  } catch (error) {
    $('hearings').replaceChildren(el('li', { class: 'note' }, t('console.hearingsUnavailable', { problem: error.message })));
    return;
  }
  const hearings = [...(list?.hearings ?? [])].sort((a, b) =>
    String(a.scheduled_for).localeCompare(String(b.scheduled_for)) || String(a.id).localeCompare(String(b.id)));
  $('hearings-empty').hidden = hearings.length > 0;
  const focused = document.activeElement?.closest?.('#hearings button')?.dataset.hearing;
  $('hearings').replaceChildren(
    ...hearings.map((hearing) =>
      el('li', {},
        el('button', {
          type: 'button', data: { hearing: hearing.id }, onclick: () => showHearing(hearing),
          'aria-current': String(view.hearing?.id === hearing.id),
        },
          `${when(hearing.scheduled_for)}, ${hearing.place}`),
        ` ${phase(hearing.phase)}`),
    ),
  );
  // A list written again keeps the focus where it was.
  if (focused) $('hearings').querySelector(`button[data-hearing="${CSS.escape(focused)}"]`)?.focus();
}

function showHearing(hearing) {
  view.hearing = hearing;
  for (const button of $('hearings').querySelectorAll('button')) {
    button.setAttribute('aria-current', String(button.dataset.hearing === hearing.id));
  }
  $('hearing').hidden = false;
  $('hearing-title').textContent = t('console.hearingTitle', { id: hearing.id });
  const segments = hearing.segments ?? [];
  $('hearing-facts').replaceChildren(
    el('dt', {}, t('console.when')), el('dd', {}, when(hearing.scheduled_for)),
    el('dt', {}, t('console.place')), el('dd', {}, hearing.place),
    ...(hearing.contact ? [el('dt', {}, t('console.contactShort')), el('dd', {}, hearing.contact)] : []),
    el('dt', {}, t('console.phase')), el('dd', {}, phase(hearing.phase)),
    el('dt', {}, t('console.recording')), el('dd', {}, t(hearing.recording ? 'console.yes' : 'console.no')),
    el('dt', {}, t('console.segments')),
    el('dd', {}, segments.length ? t('console.segmentsCount', { count: segments.length }) : t('console.none')),
    el('dt', {}, t('console.minutes')), el('dd', {}, hearing.minutes_artefact ?? t('console.notYet')),
  );
  // A protective order's form being filled in (or its disclosure left open) stays as it was when the invites are
  // written again (a live update, another invite's step), as does the focus inside it.
  const kept = new Map([...$('invites').querySelectorAll('details.protect-form')].map((details) => [details.dataset.invite, {
    open: details.open,
    values: details.querySelector('form').dataset.dirty ? formValues(details.querySelector('form')) : null,
    error: details.querySelector('.error').textContent,
  }]));
  const focused = document.activeElement?.closest?.('#invites .protect-form') ? document.activeElement.id : null;
  const clerk = may('run_hearings');
  $('hearing-open').hidden = !clerk || hearing.phase !== 'scheduled';
  $('hearing-close').hidden = !clerk || hearing.phase === 'ended';
  $('invite-form').hidden = !clerk || hearing.phase === 'ended';
  $('enter-form').hidden = hearing.phase === 'ended';
  $('invites').replaceChildren(
    ...(hearing.invites?.length ? hearing.invites : [null]).map((invite) => {
      if (!invite) return el('li', { class: 'note' }, t('console.noInvites'));
      const validity = invite.state === 'pending' ? t('console.validUntil', { when: when(invite.expires_at) }) : '';
      const item = el('li', { data: { invite: invite.id, state: invite.state } },
        `${who(invite)}: ${inviteState(invite.state)}${validity} `);
      if (invite.state === 'pending' && may('run_hearings')) {
        item.append(el('button', {
          type: 'button', class: 'danger',
          onclick: (event) => attempt($('hearing-error'), async () => {
            await api('DELETE', `${hearingPath()}/invites/${enc(invite.id)}`);
            announce(t('console.inviteRevoked'));
            await refreshHearing();
            // The button went with the invite: the focus stays on that invite's line, which now says "revoked".
            focusInvite(invite.id);
          }, event.currentTarget),
        }, t('console.revoke'), el('span', { class: 'visually-hidden' }, t('console.revokeWhich', { role: role(invite.role) }))));
      }
      if (invite.role === 'witness') {
        // The court (judge and clerk) sees the order in force; the judge alone orders, changes or lifts it.
        if (invite.protection) item.append(el('p', { class: 'protection-state' }, protectionWords(invite.protection)));
        if (may('order_protection') && hearing.phase !== 'ended' && ['pending', 'used'].includes(invite.state)) {
          item.append(protectionForm(invite, kept.get(invite.id)));
        }
      }
      return item;
    }),
  );
  if (focused && $(focused)) $(focused).focus();
}

/** What a protective order's form says now. */
function formValues(form) {
  return {
    pseudonym: form.elements.pseudonym.value.trim(),
    mask_face: form.elements.mask_face.checked,
    alter_voice: form.elements.alter_voice.checked,
    privileged: PRIVILEGEABLE.filter((name) => form.elements[`privileged-${name}`].checked),
  };
}

/** Whether two orders are the same (the gateway refuses an order that changes nothing). */
function sameOrder(a, b) {
  const roles = (order) => [...(order.privileged ?? [])].sort().join(',');
  return a.pseudonym === b.pseudonym && Boolean(a.mask_face) === Boolean(b.mask_face)
    && Boolean(a.alter_voice) === Boolean(b.alter_voice) && roles(a) === roles(b);
}

/**
 * The judge's form for a witness's protective measures: the pseudonym, the face and the voice masked, and which
 * roles besides the court get the original; Lift where an order is in force. `kept` is what the form held before
 * the invites were written again.
 */
function protectionForm(invite, kept) {
  const id = `protect-${invite.id}`;
  const current = invite.protection;
  // A new order masks both by default: the judge unticks what the witness does not need.
  const values = kept?.values ?? current ?? { pseudonym: '', mask_face: true, alter_voice: true, privileged: [] };
  const error = el('p', { class: 'error', role: 'alert', id: `${id}-error`, hidden: !kept?.error }, kept?.error ?? '');
  const box = (name, checked, text) => el('label', { class: 'choice' },
    el('input', { type: 'checkbox', name, id: `${id}-${name}`, checked }), ' ', el('span', {}, text));
  const form = el('form', { novalidate: true, 'aria-describedby': `${id}-error` },
    el('label', { for: `${id}-pseudonym` }, t('console.protection.pseudonymLabel')),
    el('input', { id: `${id}-pseudonym`, name: 'pseudonym', class: 'wide', maxLength: 80, autocomplete: 'off', value: values.pseudonym }),
    box('mask_face', Boolean(values.mask_face), t('console.protection.maskFace')),
    box('alter_voice', Boolean(values.alter_voice), t('console.protection.alterVoice')),
    el('fieldset', {},
      el('legend', {}, t('console.protection.privilegedLegend')),
      ...PRIVILEGEABLE.map((name) => box(`privileged-${name}`, (values.privileged ?? []).includes(name), role(name)))),
    el('button', { type: 'submit', class: 'primary', id: `${id}-submit` },
      t(current ? 'console.protection.submitChange' : 'console.protection.submitOrder')),
    current ? el('button', { type: 'button', class: 'danger', id: `${id}-lift`, onclick: (event) => {
      if (!window.confirm(t('console.protection.confirmLift', { who: who(invite) }))) return;
      attempt(error, async () => {
        const named = who({ ...invite, protection: null });
        showHearing(await api('DELETE', `${hearingPath()}/invites/${enc(invite.id)}/protection`));
        announce(t('console.protection.liftedFor', { who: named }));
        focusInvite(invite.id);
        await loadHearings();
      }, event.currentTarget);
    } }, t('console.protection.lift')) : null,
    error);
  form.addEventListener('input', () => { form.dataset.dirty = 'true'; });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const order = formValues(form);
    if (!order.pseudonym) {
      say(error, t('console.protection.missingPseudonym'));
      form.elements.pseudonym.focus();
      return;
    }
    // Nothing to ask the gateway: it would refuse, and a refusal is on the record.
    if (current && sameOrder(current, order)) {
      say(error, t('console.protection.unchanged'));
      return;
    }
    attempt(error, async () => {
      const hearing = await api('PUT', `${hearingPath()}/invites/${enc(invite.id)}/protection`, order);
      delete form.dataset.dirty;
      showHearing(hearing);
      const now = hearing.invites?.find((other) => other.id === invite.id) ?? { ...invite, protection: order };
      announce(t('console.protection.ordered', { who: who(now) }));
      $(`${id}-summary`)?.focus();
      await loadHearings();
    }, event.submitter);
  });
  return el('details', { class: 'protect-form', data: { invite: invite.id }, open: Boolean(kept?.open) },
    el('summary', { id: `${id}-summary` }, t('console.protection.formTitle', { who: who(invite) })),
    form);
}

/** Puts the focus on an invite's line (or its button, if `button` and it still has one), else on the list's title. */
function focusInvite(id, button = false) {
  const line = $('invites').querySelector(`li[data-invite="${CSS.escape(id)}"]`);
  // The line's own button (Revoke), not one inside its protective order's form.
  const target = (button && line?.querySelector(':scope > button')) || line || $('invites-title');
  if (target.tagName !== 'BUTTON') target.tabIndex = -1;
  target.focus();
}

async function refreshHearing() {
  const hearing = await attempt($('hearing-error'), () => api('GET', hearingPath()));
  if (hearing) showHearing(hearing);
  await loadHearings();
}

// Live updates: while a hearing is shown on the console (not from inside the room, which has its own socket), it
// is read again every few seconds, so an invite that was used stops saying "pending" and a new phase shows. The
// page is written again only when something changed, keeping the focus where it was.
const LIVE_SECONDS = 4;
let liveSeen = '';
let listSeen = '';
setInterval(async () => {
  if (!view.case || !$('room').hidden || document.hidden || $('app').hidden) return;
  if (!view.hearing) {
    // No hearing open: the list alone, written again when a hearing was added or changed its phase.
    if ($('panel-hearings').hidden) return;
    const list = await api('GET', `/api/v1/cases/${enc(view.case.id)}/hearings`).catch(() => null);
    const seen = JSON.stringify([view.case.id, (list?.hearings ?? []).map((h) => [h.id, h.phase])]);
    if (list && listSeen && seen !== listSeen) await loadHearings();
    listSeen = seen;
    return;
  }
  const path = hearingPath();
  const hearing = await api('GET', path).catch(() => null);
  if (!hearing || !view.hearing || hearingPath() !== path) return;
  const seen = JSON.stringify([path, hearing.phase, hearing.recording, hearing.invites, hearing.segments?.length, hearing.minutes_artefact]);
  if (seen === liveSeen) return;
  const known = liveSeen.startsWith(JSON.stringify([path]).slice(0, -1));
  liveSeen = seen;
  if (!known) return;
  const focusedInvite = document.activeElement?.closest?.('#invites li')?.dataset.invite;
  const onButton = document.activeElement?.tagName === 'BUTTON';
  showHearing(hearing);
  // showHearing keeps the focus inside a protective order's form; anywhere else on the invite, it follows the line.
  const lost = !document.activeElement || document.activeElement === document.body;
  if (focusedInvite && lost) focusInvite(focusedInvite, onButton);
  await loadHearings();
}, LIVE_SECONDS * 1000);

// Focus in the room's lists. The lobby and the people in the hearing are written again with every state the room
// sends, so a focused button (Admit, Mute, Remove) would be lost each time, and Admit's own button goes away with
// the person it admitted. The focus follows the person instead: to the same button on their new line, or, once
// admitted, to their line among the people in the hearing; failing both, to the next person waiting.
const roomFocus = { participant: null, button: -1 };
for (const list of [$('lobby'), $('people')]) {
  list.addEventListener('focusin', (event) => {
    const line = event.target.closest('li[data-participant]');
    roomFocus.participant = line?.dataset.participant ?? null;
    roomFocus.button = line ? [...line.querySelectorAll('button')].indexOf(event.target) : -1;
  });
  new MutationObserver(() => {
    const lost = !document.activeElement || document.activeElement === document.body;
    if (!lost || !roomFocus.participant || $('room').hidden) return;
    const selector = `li[data-participant="${CSS.escape(roomFocus.participant)}"]`;
    const waiting = $('lobby').querySelector(selector);
    const present = $('people').querySelector(selector);
    let target = null;
    if (waiting) target = waiting.querySelectorAll('button')[roomFocus.button] ?? waiting;
    else if (present && list === $('people')) target = present.querySelectorAll('button')[roomFocus.button] ?? present;
    else if (present) target = present;
    else target = $('lobby').querySelector('button') ?? $('room-title');
    if (target.tagName !== 'BUTTON') target.tabIndex = -1;
    target.focus();
  }).observe(list, { childList: true });
}

/** After the end, the gateway closes the recordings and signs the minutes: show them when they are in custody. */
async function awaitMinutes() {
  // Closing the recordings can take minutes on a busy gateway: looked for every 2 s for up to 5 minutes.
  for (let tries = 0; tries < 150 && view.hearing?.phase === 'ended' && !view.hearing.minutes_artefact; tries += 1) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const hearing = await api('GET', hearingPath()).catch(() => null);
    if (hearing && view.hearing?.id === hearing.id) showHearing(hearing);
  }
  if (view.hearing?.minutes_artefact) {
    say($('hearing-notice'), t('console.minutesInCustody', { id: view.hearing.minutes_artefact }));
    await loadArtefacts();
  }
}

// The date and time are the clerk's local time: the label names the zone, and the gateway gets UTC.
$('schedule-zone').textContent = Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'UTC';

$('schedule-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const local = $('schedule-when').value;
  const place = $('schedule-place').value.trim();
  if (!local || !place) {
    say($('schedule-error'), t('console.scheduleMissing'));
    return;
  }
  attempt($('schedule-error'), async () => {
    const hearing = await api('POST', `/api/v1/cases/${enc(view.case.id)}/hearings`, {
      scheduled_for: new Date(local).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      place,
      identity_check_before_oath: $('schedule-identity').checked,
      ...($('schedule-contact').value.trim() ? { contact: $('schedule-contact').value.trim() } : {}),
    });
    announce(t('console.scheduled'));
    await loadHearings();
    showHearing(hearing);
    $('hearing-title').tabIndex = -1;
    $('hearing-title').focus();
  }, event.submitter);
});

$('hearing-open').addEventListener('click', (event) =>
  attempt($('hearing-error'), async () => {
    showHearing(await api('POST', `${hearingPath()}/open`));
    // The button is hidden once the lobby is open: the focus goes on to the invites, the next thing to do.
    $('invite-role').focus();
    announce(t('console.lobbyOpen'));
    await loadHearings();
  }, event.currentTarget));

$('hearing-close').addEventListener('click', (event) => {
  if (!window.confirm(t('console.confirmEnd'))) return;
  attempt($('hearing-error'), async () => {
    showHearing(await api('POST', `${hearingPath()}/close`));
    announce(t('console.hearingEnded'));
    await loadHearings();
    $('hearing-title').tabIndex = -1;
    $('hearing-title').focus();
  }, event.currentTarget);
});

$('invite-role').addEventListener('change', () => {
  const court = COURT.has($('invite-role').value);
  $('invite-admit').disabled = !court;
  if (!court) $('invite-admit').checked = false;
});
$('invite-admit').disabled = true;

/** How long an invite may be valid, in seconds, as the gateway bounds it: five minutes to thirty days. */
const INVITE_SECONDS = { least: 300, most: 30 * 86_400 };
const UNIT_SECONDS = { minutes: 60, hours: 3600, days: 86_400 };

/** The validity asked for in the form, in seconds, or null (with the reason shown) when it is out of bounds. */
function inviteValidity() {
  const input = $('invite-valid');
  const text = input.value.trim();
  const amount = Number(text);
  const seconds = Math.round(amount * UNIT_SECONDS[$('invite-unit').value]);
  const ok = text !== '' && Number.isFinite(amount) && amount > 0 && seconds >= INVITE_SECONDS.least && seconds <= INVITE_SECONDS.most;
  input.setAttribute('aria-invalid', String(!ok));
  say($('invite-valid-error'), ok ? '' : t('console.validityBounds'));
  return ok ? seconds : null;
}
$('invite-valid').addEventListener('change', inviteValidity);
$('invite-unit').addEventListener('change', inviteValidity);

let madeSecret = null;
$('invite-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const seconds = inviteValidity();
  if (seconds == null) {
    $('invite-valid').focus();
    return;
  }
  const body = { role: $('invite-role').value, expires_in_seconds: seconds, admit_on_join: $('invite-admit').checked };
  const name = $('invite-name').value.trim();
  if (name) body.display_name = name;
  if ($('invite-language').value) body.language = $('invite-language').value;
  attempt($('hearing-error'), async () => {
    const invite = await api('POST', `${hearingPath()}/invites`, body);
    madeSecret = invite.secret;
    $('invite-made').hidden = false;
    $('invite-made-role').textContent = name ? `${name} (${role(invite.role)})` : role(invite.role);
    $('invite-name').value = '';
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
  $('invite-copied').textContent = t('console.copied');
});

$('invite-enter').addEventListener('click', () => madeSecret && enterRoom(madeSecret));

$('enter-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('enter-invite').value.trim();
  const secret = text.includes('#') ? text.slice(text.indexOf('#') + 1) : text;
  if (!secret) {
    say($('hearing-error'), t('console.pasteInvite'));
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
    say($('hearing-error'), t(error === 'denied' ? 'console.room.noCameraAllowed' : 'console.room.noMicrophone'));
    return;
  }
  view.media = stream;
  view.roomState = null;
  $('app').hidden = true;
  $('room').hidden = false;
  $('videos').replaceChildren();
  view.room = new Room(stream, {
    onConnection(status) {
      const key = { connecting: 'console.room.connecting', reconnecting: 'console.room.reconnecting' }[status];
      say($('room-connection'), key ? t(key) : '');
    },
    onMedia(status) {
      const key = {
        interrupted: 'console.room.mediaInterrupted',
        reconnecting: 'console.room.mediaReconnecting',
        not_received: 'console.room.mediaNotReceived',
      }[status];
      say($('room-connection'), key ? t(key) : '');
    },
    onWelcome(welcome) {
      $('room-title').textContent = t('console.room.titleAt', { place: `\u2068${welcome.hearing?.place ?? ''}\u2069` });
      $('room-you').textContent = role(welcome.role);
      view.welcome = welcome;
      view.roomHearing = null;
      view.roomHearingPath = null;
      readRoomHearing();
      // The languages the court has texts in; without a choice, the witness's page language (else English).
      const chosen = $('text-language').value;
      $('text-language').replaceChildren($('text-language').options[0],
        ...(welcome.text_languages ?? []).map((code) => new Option(languageName(code), code)));
      $('text-language').value = chosen;
    },
    onText(text) {
      // What the witness was just shown, word for word, as the minutes record it (by its SHA-256).
      const person = view.roomState?.participants?.find((p) => p.id === view.lastTextFor);
      $('room-text').hidden = false;
      $('room-text-title').textContent = t(`text.${text.kind}`);
      $('room-text-words').textContent = text.words;
      $('room-text-words').lang = text.language;
      $('room-text-words').dir = text.language === 'ar' ? 'rtl' : 'ltr';
      $('room-text-note').textContent = t('console.textShown', {
        who: person ? who(person) : role('witness'), language: languageName(text.language), sha256: text.sha256,
      });
    },
    onState(state) {
      announceRoomChanges(view.roomState, state);
      view.roomState = state;
      // A witness came or went, or a while has passed: the protective orders are read again.
      const witnesses = JSON.stringify((state.participants ?? []).filter((p) => p.role === 'witness').map((p) => [p.id, p.name]));
      if (witnesses !== view.roomWitnesses || Date.now() - (view.roomHearingRead ?? 0) > 15_000) {
        view.roomWitnesses = witnesses;
        readRoomHearing();
      }
      if (view.pending) {
        say($('room-done'), t('console.room.done', { what: view.pending }));
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
      if (refusal.problem === 'no_media' && refusal.action === 'oath' && view.lastOath) {
        // The witness's media stopped after the oath was asked for: the same warning, then the court decides.
        if (confirmOathWithoutMedia()) send({ ...view.lastOath, despite_no_media: true });
        return;
      }
      // In the reader's language, by the rule's key; the gateway's English reason goes to the browser's console.
      if (refusal.reason) console.info('hearing room:', refusal.reason);
      if (refusal.action) say($('room-error'), t('console.room.refused', { problem: roomProblem(refusal.problem) }));
      else leaveRoom(t('console.room.couldNotEnter', { problem: words(`enter.${refusal.problem}`, 'enter.other') }));
    },
    onEnded: () => leaveRoom(t('console.room.ended')),
    onRemoved: () => leaveRoom(t('console.room.removed')),
    onReplaced: () => leaveRoom(t('console.room.replaced')),
    onError: (err) => {
      console.warn('hearing room:', err.message);
      say($('room-error'), language() === 'en' ? err.message : t('console.room.failed'));
    },
  });
  window.custodiaRoom = view.room; // for the browser test and for support staff
  view.room.join(secret);
  $('room-title').tabIndex = -1;
  $('room-title').focus();
}

/**
 * The court's view of the room's hearing (its invites carry the protective orders: see protectionOf), found among
 * the caller's cases the first time, for a judge who came in by their link; the room is written again with it.
 */
async function readRoomHearing() {
  const id = view.welcome?.hearing?.id;
  if (!id) return;
  view.roomHearingRead = Date.now();
  if (!view.roomHearingPath) {
    if (view.case && view.hearing?.id === id) {
      view.roomHearingPath = hearingPath();
    } else {
      for (const item of view.cases ?? []) {
        const list = await api('GET', `/api/v1/cases/${enc(item.id)}/hearings`).catch(() => null);
        if (!list?.hearings?.some((hearing) => hearing.id === id)) continue;
        view.roomHearingPath = `/api/v1/cases/${enc(item.id)}/hearings/${enc(id)}`;
        break;
      }
    }
  }
  if (!view.roomHearingPath) return;
  const hearing = await api('GET', view.roomHearingPath).catch(() => null);
  if (!hearing || !view.room || hearing.id !== view.welcome?.hearing?.id) return;
  const before = JSON.stringify(view.roomHearing?.invites ?? null);
  view.roomHearing = hearing;
  if (JSON.stringify(hearing.invites) !== before) renderRoom();
}

function leaveRoom(message) {
  view.room = null;
  view.media?.getTracks().forEach((track) => track.stop());
  $('room').hidden = true;
  $('app').hidden = false;
  say($('hearing-error'), '');
  announce(message);
  $('invite-made').hidden = true;
  say($('hearing-notice'), message);
  const hearing = view.welcome?.hearing?.id;
  // A judge who came in by their invite link has not opened the hearing here: it is found among their cases.
  const shown = view.hearing?.id === hearing || !hearing ? Promise.resolve(Boolean(view.hearing)) : openHearingOf(hearing, message);
  shown.then((found) => found && refreshHearing().then(awaitMinutes));
}

/** Opens the case and the hearing `id` belongs to, among the caller's cases; false if none holds it. */
async function openHearingOf(id, message) {
  for (const item of view.cases ?? []) {
    const list = await api('GET', `/api/v1/cases/${enc(item.id)}/hearings`).catch(() => null);
    const hearing = list?.hearings?.find((candidate) => candidate.id === id);
    if (!hearing) continue;
    await openCase(item.id);
    selectTab($('tab-hearings'));
    showHearing(hearing);
    say($('hearing-notice'), message);
    return true;
  }
  return false;
}

/** What a step did, said once the room's new state comes: `console.room.done.<step>`. */
function done(step) {
  const key = `console.room.done.${step}`;
  return t(key) === key ? null : t(key);
}

/** `key` translated, or `fallback`'s translation where the language files have no such key. */
function words(key, fallback) {
  return t(key) === key ? t(fallback) : t(key);
}

/** A refused room step in the reader's language, from the rule's key: the court's wording, else the join page's. */
function roomProblem(problem) {
  const key = `console.problem.${problem}`;
  return t(key) === key ? words(`problem.${problem}`, 'console.problem.other') : t(key);
}

function send(message, button) {
  say($('room-error'), '');
  say($('room-done'), '');
  view.pending = done(message.type);
  view.room?.send(message);
  if (button) {
    // The answer is a new state (or a refusal); keep the button from being pressed twice meanwhile.
    button.disabled = true;
    setTimeout(() => { button.disabled = false; }, 800);
  }
}

/** Removing is for good: the person cannot come back with their invite. */
function confirmRemove(person) {
  return window.confirm(t('console.room.confirmRemove', { who: who(person) }));
}

/** Why someone is not connected: they left, or their connection was lost. */
function absent(person) {
  return t(person.left ? 'console.room.left.short' : 'console.room.lost');
}

/** Who in our room the gateway receives nothing from: nobody sees or hears them. */
function withoutMedia(state) {
  return (state.participants ?? []).filter((p) => p.media_stopped && p.place !== 'lobby' && p.connected !== false);
}

function confirmOathWithoutMedia() {
  return window.confirm(t('console.room.confirmOath'));
}

/** Says to screen readers who was let in or muted, and when recording starts or stops. */
function announceRoomChanges(before, now) {
  if (!before) return;
  const said = [];
  const earlier = new Map((before.participants ?? []).map((p) => [p.id, p]));
  for (const person of now.participants ?? []) {
    const was = earlier.get(person.id);
    if (was?.place === 'lobby' && person.place === 'main_room') said.push(t('console.room.announceAdmitted', { who: who(person) }));
    if (was && !was.muted && person.muted) said.push(t('console.room.announceMuted', { who: who(person) }));
    if (was?.muted && !person.muted) said.push(t('console.room.announceUnmuted', { who: who(person) }));
  }
  if (!before.recording && now.recording) said.push(t('console.room.announceRecording'));
  if (before.recording && !now.recording) said.push(t('console.room.announceStopped'));
  const open = new Set((now.channels ?? []).map((channel) => channel.language));
  const wasOpen = new Set((before.channels ?? []).map((channel) => channel.language));
  for (const channel of now.channels ?? []) {
    if (!wasOpen.has(channel.language)) said.push(t('console.room.announceChannelOpened', { channel: channelWords(channel, now) }));
  }
  for (const code of wasOpen) if (!open.has(code)) said.push(t('console.room.announceChannelClosed', { language: languageName(code) }));
  // A channel's interpreter left the main room (its listeners hear the original at full level), or came back.
  const earlierChannels = new Map((before.channels ?? []).map((channel) => [channel.language, channel]));
  for (const channel of now.channels ?? []) {
    const was = earlierChannels.get(channel.language);
    if (!was) continue;
    const language = languageName(channel.language);
    if (was.interpreting !== false && channel.interpreting === false) said.push(t('console.room.announceInterpreterAway', { language }));
    if (was.interpreting === false && channel.interpreting === true) said.push(t('console.room.announceInterpreterBack', { language }));
  }
  if (said.length) announce(said.join(' '));
}

/** A time in the room, with its time zone: the people of a cross-border hearing are not in the same one. */
function whenWithZone(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso ?? '');
  return date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', timeZoneName: 'short' });
}

/** An identity document's kind in the reader's language (a kind the court typed itself is shown as typed). */
function documentName(document) {
  const key = `document.${document?.other ? 'other' : document}`;
  return document?.other ?? (t(key) === key ? String(document) : t(key).toLowerCase());
}

/** The last of `wordings` the judge put on `person`'s screen, as the hearing recorded it. */
function lastShown(list, person, wordings) {
  return (list.texts_presented ?? []).filter((s) => s.person === person.id && wordings.includes(s.wording)).at(-1);
}

/** The judge's checklist: for each witness and accused, identity, the rights notice's words shown and the notice
 * given, the oath's words shown and the oath; for each interpreter, their oath's words shown and their oath. */
function renderChecklist(state) {
  const list = state.checklist;
  $('checklist-panel').hidden = !list;
  if (!list) return;
  const named = (p) => who(p);
  const item = (finished, text) =>
    el('li', { class: finished ? 'done' : 'to-do' }, t(finished ? 'console.room.checkDone' : 'console.room.checkToDo', { what: text }));
  const heard = (state.participants ?? []).filter((p) => ['witness', 'accused'].includes(p.role));
  const interpreters = (state.participants ?? []).filter((p) => p.role === 'interpreter');
  const entries = [];
  for (const person of heard) {
    const check = list.identity_checks.find((c) => c.person === person.id);
    const notice = list.rights_notices.find((n) => n.person === person.id);
    const oath = list.oaths.find((o) => o.witness === person.id);
    const noticeShown = lastShown(list, person, ['rights_notice']);
    entries.push(
      item(check, check
        ? t('console.room.checkIdentityDone', { who: named(person), document: documentName(check.document), site: check.site, when: whenWithZone(check.at) })
        : t('console.room.checkIdentity', { who: named(person) })),
      item(noticeShown, noticeShown
        ? t('console.room.checkRightsShownDone', { who: named(person), language: languageName(noticeShown.text.language), when: whenWithZone(noticeShown.at) })
        : t('console.room.checkRightsShown', { who: named(person) })),
      item(notice, notice
        ? t('console.room.checkRightsDone', { who: named(person), when: whenWithZone(notice.at) })
        : t('console.room.checkRights', { who: named(person) })),
    );
    if (person.role === 'witness') {
      const oathShown = lastShown(list, person, ['oath', 'affirmation']);
      const shownKey = oathShown?.wording === 'affirmation' ? 'console.room.checkAffirmationShownDone' : 'console.room.checkOathShownDone';
      entries.push(item(oathShown, oathShown
        ? t(shownKey, { who: named(person), language: languageName(oathShown.text.language), when: whenWithZone(oathShown.at) })
        : t('console.room.checkOathShown', { who: named(person) })));
      const sworn = oath?.form === 'affirmation' ? 'console.room.checkAffirmationDone' : 'console.room.checkOathDone';
      entries.push(item(oath, oath
        ? t(sworn, { who: named(person), when: whenWithZone(oath.at) })
        : t('console.room.checkOath', { who: named(person) })));
    }
  }
  for (const person of interpreters) {
    const sworn = list.interpreters.find((i) => i.interpreter === person.id);
    const shown = lastShown(list, person, ['interpreter_oath']);
    entries.push(item(shown, shown
      ? t('console.room.checkInterpreterShownDone', { who: who(person), language: languageName(shown.text.language), when: whenWithZone(shown.at) })
      : t('console.room.checkInterpreterShown', { who: who(person) })));
    entries.push(item(sworn, sworn
      ? t('console.room.checkInterpreterDone', { who: who(person), languages: sworn.languages, when: whenWithZone(sworn.at) })
      : t('console.room.checkInterpreter', { who: who(person) })));
  }
  $('checklist').replaceChildren(...(entries.length ? entries : [el('li', { class: 'note' }, t('console.room.checkNobody'))]));
}

function renderRoom() {
  const state = view.roomState;
  if (!state) return;
  renderChecklist(state);
  const stopped = withoutMedia(state);
  say($('room-media'), stopped.map((p) => t('console.room.mediaStopped', { role: role(p.role).toLowerCase() })).join(' '));
  const you = state.you ?? {};
  const mine = you.role;
  $('room-phase').textContent = phase(state.phase);
  $('rec').hidden = !state.recording;
  $('not-rec').hidden = state.recording;
  $('act-record').textContent = t(state.recording ? 'console.room.stopRecording' : 'console.room.startRecording');
  $('act-record').setAttribute('aria-pressed', String(Boolean(state.recording)));
  $('act-start-session').hidden = mine !== 'judge' || state.phase !== 'open';
  $('act-record').hidden = !COURT.has(mine);
  $('act-end').hidden = !COURT.has(mine);
  $('act-mute-self').textContent = t(you.muted ? 'console.room.unmuteSelf' : 'console.room.muteSelf');
  $('act-mute-self').setAttribute('aria-pressed', String(Boolean(you.muted)));

  const people = [...(state.participants ?? [])].sort((a, b) => ROLE_ORDER.indexOf(a.role) - ROLE_ORDER.indexOf(b.role));
  const waiting = people.filter((p) => p.place === 'lobby' && p.id !== you.participant);
  $('lobby-empty').hidden = waiting.length > 0;
  $('lobby').replaceChildren(
    ...waiting.map((person) =>
      el('li', { data: { participant: person.id } },
        el('span', {}, `${who(person)}${person.connected === false ? ` (${absent(person)})` : ''}`),
        el('span', {},
          COURT.has(mine) ? el('button', { type: 'button', class: 'primary', onclick: (e) => send({ type: 'admit', participant: person.id }, e.currentTarget) },
            t('console.room.admit'), el('span', { class: 'visually-hidden' }, whom(person))) : null,
          COURT.has(mine) ? el('button', { type: 'button', class: 'danger', onclick: (e) => confirmRemove(person) && send({ type: 'remove', participant: person.id }, e.currentTarget) },
            t('console.room.remove'), el('span', { class: 'visually-hidden' }, whom(person))) : null),
      ),
    ),
  );

  const present = people.filter((p) => p.place !== 'lobby');
  $('people').replaceChildren(
    ...present.map((person) => {
      const isYou = person.id === you.participant;
      const item = el('li', { data: { participant: person.id } },
        el('span', { class: 'who' }, `${who(person)}${isYou ? ` ${t('console.room.you')}` : ''} · ${words(`console.room.place.${person.place}`, person.place)}`
          + `${person.muted ? ` · ${t('console.room.muted')}` : ''}${person.connected === false ? ` · ${absent(person)}` : ''}`
          + `${person.connected !== false && person.media_stopped ? ` · ${t('console.room.mediaStoppedShort')}` : ''}`));
      if (COURT.has(mine) && !isYou) {
        item.append(
          el('button', { type: 'button', onclick: (e) => send({ type: person.muted ? 'unmute' : 'mute', participant: person.id }, e.currentTarget) },
            t(person.muted ? 'console.room.unmute' : 'console.room.mute'), el('span', { class: 'visually-hidden' }, whom(person))),
          el('button', { type: 'button', class: 'danger', onclick: (e) => confirmRemove(person) && send({ type: 'remove', participant: person.id }, e.currentTarget) },
            t('console.room.remove'), el('span', { class: 'visually-hidden' }, whom(person))),
        );
      }
      return item;
    }),
  );

  // Private consultations going on: who is in each, and (for the court) a way to bring it back to the hearing.
  const consultations = [...new Set(present.filter((p) => p.place === 'consultation').map((p) => p.consultation))];
  $('consultations').replaceChildren(...consultations.map((number) => {
    const members = present.filter((p) => p.consultation === number).map((p) => who(p)).join(', ');
    return el('p', { class: 'notice' }, `${t('console.room.consultation', { number, members })} `,
      COURT.has(mine) && you.place === 'main_room'
        ? el('button', { type: 'button', onclick: (e) => send({ type: 'end_consultation', consultation: number }, e.currentTarget) },
          t('console.room.endConsultation', { number }))
        : null);
  }));

  for (const select of document.querySelectorAll('.person-select')) {
    const chosen = select.value;
    const wanted = select.id === 'interpreter-person' ? ['interpreter'] : select.id === 'oath-witness' ? ['witness'] : null;
    const options = people.filter((p) => p.id !== you.participant && (!wanted || wanted.includes(p.role)));
    select.replaceChildren(...options.map((p) => new Option(p.name ? who(p) : `${role(p.role)} (${p.id})`, p.id)));
    if (options.some((p) => p.id === chosen)) select.value = chosen;
  }
  const interpreters = people.some((p) => p.role === 'interpreter');
  for (const id of ['interpreter-person', 'interpreter-languages', 'present-interpreter-oath', 'swear-interpreter']) $(id).disabled = !interpreters;
  $('identity-form').hidden = mine !== 'remote_site_officer';
  $('identity-note').hidden = mine === 'remote_site_officer';
  $('room-waiting').hidden = you.place !== 'lobby';
  $('oath-form').hidden = mine !== 'judge';
  renderChannels(state, people, you);
  renderVideos(present, you);
}

/** Languages suggested for a channel: those of the pages of people present, then the ones most often needed. */
const CHANNEL_LANGUAGES = ['ar', 'ti', 'so', 'fa', 'ps', 'ur', 'bn', 'fr', 'en', 'it', 'es', 'de'];

/** A channel in words: "Italian (it), simultaneous, by Sara Conti (Interpreter)". */
function channelWords(channel, state = view.roomState) {
  const interpreter = (state?.participants ?? []).find((p) => p.id === channel.interpreter);
  return t('console.room.channel', {
    language: languageName(channel.language, { capital: true }),
    code: channel.language,
    mode: words(`console.room.mode.${channel.mode}`, 'console.room.mode.other'),
    who: interpreter ? who(interpreter) : role('interpreter'),
  });
}

/**
 * The interpretation channels: each open one (with, for the court in the main room, a button that closes it), what
 * this officer hears, and for the court the form that opens one with an interpreter present in the main room.
 */
function renderChannels(state, people, you) {
  const channels = state.channels ?? [];
  const court = COURT.has(you.role);
  // The channel this officer just opened is open: the form is ready for the next one.
  if (view.openingChannel && channels.some((channel) => channel.language === view.openingChannel)) {
    view.openingChannel = null;
    $('channel-language').value = '';
  }
  $('channels-panel').hidden = !court && !channels.length;
  if ($('channels-panel').hidden) return;
  $('channels-none').hidden = channels.length > 0;
  const closable = court && you.place === 'main_room';
  $('channels').replaceChildren(...channels.map((channel) => el('li', { data: { language: channel.language } },
    el('span', {}, channelWords(channel, state)), ' ',
    // Its interpreter is not in the main room: the gateway gives the channel's listeners the floor at full level.
    // (`interpreting` absent: not known to this officer, out of the main room; nothing said.)
    channel.interpreting === false ? el('strong', {}, t('console.room.channelInterpreterAway')) : null,
    channel.interpreting === false ? ' ' : null,
    closable ? el('button', { type: 'button', onclick: (e) => send({ type: 'close_channel', language: channel.language }, e.currentTarget) },
      t('console.room.closeChannel'), el('span', { class: 'visually-hidden' },
        ` ${t('console.room.closeChannelInto', { language: languageName(channel.language) })}`)) : null)));

  // What this officer hears: the floor, or a channel (not their own, if they interpret).
  const choices = channels.filter((channel) => channel.interpreter !== you.participant);
  $('channel-listen-row').hidden = !choices.length;
  const listen = $('channel-listen');
  const listenFor = JSON.stringify([language(), choices.map((channel) => channel.language)]);
  if (listen.dataset.builtFor !== listenFor) {
    listen.dataset.builtFor = listenFor;
    listen.replaceChildren(new Option(t('console.room.floor'), ''),
      ...choices.map((channel) => new Option(languageName(channel.language, { capital: true }), channel.language)));
  }
  listen.value = you.listening ?? '';

  $('channel-form').hidden = !court;
  if (!court) return;
  // Interpreters sworn in this hearing, in the main room, who interpret on no open channel: anyone else would be
  // refused, on the record (`interpreter_not_sworn`, `not_present`, `already_interpreting`).
  const busy = new Set(channels.map((channel) => channel.interpreter));
  const free = people.filter((p) => p.role === 'interpreter' && p.place === 'main_room' && !busy.has(p.id));
  const sworn = free.filter((p) => isSworn(state, p.id));
  const unsworn = free.filter((p) => !isSworn(state, p.id));
  const select = $('channel-interpreter');
  const chosen = select.value;
  select.replaceChildren(...(sworn.length
    ? sworn.map((p) => new Option(who(p), p.id))
    : [new Option(t(unsworn.length ? 'console.room.noInterpreterSworn' : 'console.room.noInterpreterFree'), '')]));
  if (sworn.some((p) => p.id === chosen)) select.value = chosen;
  // Why an interpreter who is there is not offered: the judge swears them in first (the clerk cannot).
  const why = unsworn.length
    ? t(you.role === 'judge' ? 'console.room.swearFirst' : 'console.room.swearFirstJudge', { who: unsworn.map((p) => who(p)).join(', ') })
    : '';
  $('channel-unsworn').textContent = why;
  $('channel-unsworn').hidden = !why;
  $('open-channel').disabled = !sworn.length || you.place !== 'main_room';
  // Suggestions, named in the reader's language.
  const codes = [...new Set([...people.map((p) => p.language).filter(Boolean), ...CHANNEL_LANGUAGES])];
  const suggestions = $('channel-languages');
  const suggestFor = JSON.stringify([language(), codes]);
  if (suggestions.dataset.builtFor !== suggestFor) {
    suggestions.dataset.builtFor = suggestFor;
    suggestions.replaceChildren(...codes.map((code) => new Option(languageName(code, { capital: true }), code)));
  }
}

/** Whether `interpreter` has been sworn in this hearing (the court's checklist says so): a channel opens only then. */
function isSworn(state, interpreter) {
  return (state.checklist?.interpreters ?? []).some((sworn) => sworn.interpreter === interpreter);
}

/**
 * The language code the court typed: a code (`it`, `pt-BR`), canonical; or a suggestion's name in the reader's
 * language or in English ("Italian", "italiano"); `null` for anything else.
 */
function channelLanguage(text) {
  const typed = text.trim();
  if (!typed) return null;
  const english = (code) => {
    try {
      return new Intl.DisplayNames(['en'], { type: 'language' }).of(code);
    } catch {
      return null;
    }
  };
  const named = [...$('channel-languages').options].find((option) =>
    [option.label, english(option.value)].some((name) => name && name.toLocaleLowerCase() === typed.toLocaleLowerCase()));
  if (named) return named.value;
  if (!/^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(typed)) return null;
  try {
    return Intl.getCanonicalLocales(typed)[0];
  } catch {
    return null;
  }
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
    const label = `${who(person)}${isYou ? ` ${t('console.room.you')}` : ''}${person.muted ? ` · ${t('console.room.muted')}` : ''}`
      + `${person.media_stopped ? ` · ${t('console.room.videoStopped')}` : ''}`;
    tile.classList.toggle('stalled', Boolean(person.media_stopped));
    tile.querySelector('figcaption').textContent = label;
    tile.querySelector('video').setAttribute('aria-label', t('console.room.videoOf', { who: label }));
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
  if (window.confirm(t('console.room.confirmEnd'))) {
    send({ type: 'end' }, e.currentTarget);
  }
});
$('act-leave').addEventListener('click', () => {
  view.room?.leave();
  leaveRoom(t('console.room.left'));
});

$('identity-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const person = $('identity-person').value;
  const officer = $('identity-officer').value.trim();
  const site = $('identity-site').value.trim();
  if (!person || !officer || !site) {
    say($('room-error'), t('console.room.identityMissing'));
    return;
  }
  send({ type: 'verify_identity', person, document: $('identity-document').value, officer_name: officer, site }, event.submitter);
});
/** Puts the court's words of `wording` on `person`'s screen (and ours), before they are asked to listen or swear. */
function present(person, wording, button) {
  view.lastTextFor = person;
  send({ type: 'present_text', person, wording, ...textLanguage() }, button);
}
$('present-rights').addEventListener('click', (e) => {
  const person = $('oath-witness').value;
  if (person) present(person, 'rights_notice', e.currentTarget);
  else say($('room-error'), t('console.room.chooseWitness'));
});
$('rights-notice').addEventListener('click', (e) => {
  const person = $('oath-witness').value;
  if (person) send({ type: 'rights_notice', person }, e.currentTarget);
  else say($('room-error'), t('console.room.chooseWitness'));
});
$('present-oath').addEventListener('click', (e) => {
  const witness = $('oath-witness').value;
  if (witness) present(witness, $('oath-kind').value, e.currentTarget);
  else say($('room-error'), t('console.room.chooseWitness'));
});
$('oath-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const witness = $('oath-witness').value;
  if (!witness) {
    say($('room-error'), t('console.room.chooseWitness'));
    return;
  }
  const oath = { type: 'oath', witness, form: $('oath-kind').value };
  view.lastOath = oath;
  const stopped = withoutMedia(view.roomState ?? {}).some((p) => p.id === witness);
  if (stopped) {
    if (confirmOathWithoutMedia()) send({ ...oath, despite_no_media: true }, event.submitter);
    return;
  }
  send(oath, event.submitter);
});
/** The language the judge chose for the court's texts, if any (else the gateway takes the person's page's). */
function textLanguage() {
  const code = $('text-language').value;
  return code ? { language: code } : {};
}

$('channel-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const interpreter = $('channel-interpreter').value;
  const code = channelLanguage($('channel-language').value);
  if (!interpreter) {
    const unsworn = !$('channel-unsworn').hidden;
    say($('room-error'), t(unsworn ? 'console.problem.interpreter_not_sworn' : 'console.room.noInterpreterFree'));
    return;
  }
  // Refused by the rules, on the record: said here instead.
  if (view.roomState && !isSworn(view.roomState, interpreter)) {
    say($('room-error'), t('console.problem.interpreter_not_sworn'));
    return;
  }
  if (!code) {
    say($('room-error'), t('console.room.channelLanguageMissing'));
    $('channel-language').focus();
    return;
  }
  // Refused by the rules, on the record: said here instead.
  if ((view.roomState?.channels ?? []).some((channel) => channel.language === code)) {
    say($('room-error'), t('console.problem.channel_open'));
    return;
  }
  const mode = document.querySelector('input[name="channel-mode"]:checked')?.value ?? 'simultaneous';
  view.openingChannel = code;
  send({ type: 'open_channel', interpreter, language: code, mode }, event.submitter);
});
$('channel-listen').addEventListener('change', (e) => {
  send({ type: 'choose_channel', language: e.currentTarget.value || null });
});

$('present-interpreter-oath').addEventListener('click', (e) => {
  const interpreter = $('interpreter-person').value;
  if (interpreter) present(interpreter, 'interpreter_oath', e.currentTarget);
  else say($('room-error'), t('console.room.interpreterMissing'));
});
$('swear-interpreter').addEventListener('click', (e) => {
  const interpreter = $('interpreter-person').value;
  const languages = $('interpreter-languages').value.trim();
  if (interpreter && languages) send({ type: 'swear_interpreter', interpreter, languages }, e.currentTarget);
  else say($('room-error'), t('console.room.interpreterMissing'));
});
