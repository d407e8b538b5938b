// The minutes of a hearing as a document, /minutes?case=…&hearing=…&artefact=…: the signed minutes (canonical
// JSON, an artefact in custody) fetched through the content route (a read, on the record with its purpose),
// laid out as headed sections and tables that print on paper (court.css's print rules). People are named
// by their role in the hearing, numbered when a role has several, and by their display name where the hearing
// knows one; the JSON itself is the evidence, and its SHA-256 is printed at the foot.

import { api } from './lib/api.js';
import { t } from './lib/i18n.js';
import { $, el, say, startLanguage, when } from './lib/dom.js';

const enc = encodeURIComponent;
const query = new URLSearchParams(location.search);
const state = { minutes: null, hearing: null, artefact: null };

await startLanguage($('language'), () => render());

$('print').addEventListener('click', () => window.print());

/**
 * The purpose of this read is the reader's own: the one they gave on the portal (handed over in this tab's session
 * storage, which no link from elsewhere can set), or else the one they state here. A purpose in the address would
 * let anyone's link put words in the reader's custody record.
 */
const HANDOVER = 'custodia.minutesPurpose';

function start() {
  if (!query.get('artefact') || !query.get('case') || !query.get('hearing')) {
    fail(t('minutes.missing'));
    return;
  }
  let handed = null;
  try {
    handed = sessionStorage.getItem(HANDOVER);
    sessionStorage.removeItem(HANDOVER);
  } catch {
    handed = null;
  }
  if (handed?.trim()) {
    load(handed.trim());
    return;
  }
  $('minutes-status').hidden = true;
  $('purpose-form').hidden = false;
  $('purpose').focus();
}

$('purpose-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const purpose = $('purpose').value.trim();
  if (!purpose) {
    say($('minutes-error'), t('portal.purposeFirst'));
    return;
  }
  say($('minutes-error'), '');
  $('purpose-form').hidden = true;
  $('minutes-status').hidden = false;
  load(purpose);
});

async function load(purpose) {
  const artefact = query.get('artefact');
  try {
    state.minutes = await api('GET', `/api/v1/artefacts/${enc(artefact)}/content?purpose=${enc(purpose)}&access=download`);
    if (typeof state.minutes === 'string') state.minutes = JSON.parse(state.minutes);
    // Its SHA-256 and custody record, from the case's list (which is no access to evidence, so records nothing).
    const listed = await api('GET', `/api/v1/cases/${enc(query.get('case'))}/artefacts`).catch(() => []);
    state.artefact = (Array.isArray(listed) ? listed : []).find((item) => item.id === artefact) ?? null;
    state.hearing = await api('GET', `/api/v1/cases/${enc(query.get('case'))}/hearings/${enc(query.get('hearing'))}`).catch(() => null);
  } catch (error) {
    fail(error.status === 401 ? t('minutes.signIn') : error.message);
    return;
  }
  render();
  $('minutes-status').hidden = true;
  $('minutes-actions').hidden = false;
  $('minutes').hidden = false;
  $('minutes-title').tabIndex = -1;
  $('minutes-title').focus();
}

function fail(message) {
  $('minutes-status').hidden = true;
  say($('minutes-error'), message);
}

/** How each participant is called: "Witness 2 · Amina K." */
function namer(minutes) {
  const names = new Map();
  const everyone = [...(minutes.present ?? []), ...(minutes.not_admitted ?? [])];
  const count = {};
  for (const person of everyone) count[person.role] = (count[person.role] ?? 0) + 1;
  const seen = {};
  for (const person of everyone) {
    seen[person.role] = (seen[person.role] ?? 0) + 1;
    let name = t(`role.${person.role}`);
    if (count[person.role] > 1) name += ` ${seen[person.role]}`;
    const known = state.hearing?.participants?.find((p) => p.id === person.participant)?.name;
    if (known) name += ` · ${known}`;
    names.set(person.participant, name);
  }
  return (id) => names.get(id) ?? id;
}

function actor(by, name) {
  if (!by) return '';
  if (typeof by === 'string') return by.startsWith('p-') ? name(by) : t('minutes.courtAccount', { id: by });
  if (by.by === 'invite') return t('minutes.admittedByInvite');
  if (by.by === 'participant') return name(by.participant);
  return JSON.stringify(by);
}

function table(caption, headings, rows) {
  if (!rows.length) return el('p', { class: 'note' }, t('minutes.none'));
  return el('div', { class: 'table-scroll' },
    el('table', {},
      el('caption', { class: 'visually-hidden' }, caption),
      el('thead', {}, el('tr', {}, ...headings.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, ...rows.map((cells) => el('tr', {}, ...cells.map((cell) => el('td', {}, cell ?? ''))))),
    ));
}

function section(key, ...content) {
  const id = `minutes-${key}`;
  return el('section', { 'aria-labelledby': id }, el('h2', { id }, t(`minutes.section.${key}`)), ...content);
}

const at = (iso) => (iso ? when(iso, { seconds: true }) : '');

function render() {
  const m = state.minutes;
  if (!m) return;
  const name = namer(m);
  const final = m.phase === 'ended';
  const case_ = query.get('case');
  $('minutes-facts').replaceChildren(
    el('dt', {}, t('minutes.case')), el('dd', {}, m.case ?? case_),
    el('dt', {}, t('minutes.hearing')), el('dd', { class: 'mono' }, m.hearing),
    el('dt', {}, t('minutes.place')), el('dd', {}, m.place),
    el('dt', {}, t('minutes.scheduledFor')), el('dd', {}, at(m.scheduled_for)),
    el('dt', {}, t('minutes.opened')), el('dd', {}, at(m.opened_at) || t('minutes.never')),
    el('dt', {}, t('minutes.sessionStarted')), el('dd', {}, at(m.session_started_at) || t('minutes.never')),
    el('dt', {}, t('minutes.ended')), el('dd', {}, at(m.ended_at) || t('minutes.notEnded')),
    el('dt', {}, t('minutes.status')), el('dd', {}, t(final ? 'minutes.final' : 'minutes.draft')),
    el('dt', {}, t('minutes.identityRule')), el('dd', {}, t(m.rules?.identity_check_before_oath ? 'minutes.yes' : 'minutes.no')),
  );
  const periods = (person) => (person.periods ?? [])
    .map((p) => `${at(p.from)} – ${p.until ? at(p.until) : t('minutes.stillPresent')}${p.ended_by ? ` (${t(`minutes.end.${p.ended_by}`)})` : ''}`)
    .join('; ');
  const segments = m.segments ?? [];
  const tracks = m.technical?.tracks ?? [];
  // Which of the court's texts was shown: its language and the SHA-256 of the court's file (none in older minutes).
  const wording = (text) => (text ? t('minutes.wordingIs', { language: text.language, sha256: text.sha256 }) : '');
  $('minutes-body').replaceChildren(
    section('present', table(t('minutes.section.present'),
      [t('minutes.person'), t('minutes.arrived'), t('minutes.admitted'), t('minutes.periods'), t('minutes.reconnections'), t('minutes.removed')],
      (m.present ?? []).map((p) => [name(p.participant), at(p.arrived_at), `${at(p.admitted_at)} (${actor(p.admitted_by, name)})`, periods(p), String(p.reconnections ?? 0), at(p.removed_at)]))),
    section('notAdmitted', table(t('minutes.section.notAdmitted'),
      [t('minutes.person'), t('minutes.arrived'), t('minutes.removed')],
      (m.not_admitted ?? []).map((p) => [name(p.participant), at(p.arrived_at), at(p.removed_at)]))),
    section('identity', table(t('minutes.section.identity'),
      [t('minutes.at'), t('minutes.person'), t('minutes.officer'), t('minutes.document'), t('minutes.site')],
      (m.identity_checks ?? []).map((c) => [at(c.at), name(c.person), name(c.officer), typeof c.document === 'string' ? t(`minutes.document.${c.document}`) : c.document?.other ?? '', c.site]))),
    section('texts', table(t('minutes.section.texts'),
      [t('minutes.at'), t('minutes.person'), t('minutes.text'), t('minutes.by'), t('minutes.wording')],
      (m.texts_presented ?? []).map((p) => [at(p.at), name(p.person), t(`minutes.shown.${p.wording}`), name(p.by), wording(p.text)]))),
    section('rights', table(t('minutes.section.rights'),
      [t('minutes.at'), t('minutes.person'), t('minutes.by'), t('minutes.wording')],
      (m.rights_notices ?? []).map((r) => [at(r.at), name(r.person), name(r.by), wording(r.text)]))),
    section('oaths', table(t('minutes.section.oaths'),
      [t('minutes.at'), t('minutes.witness'), t('minutes.form'), t('minutes.by'), t('minutes.wording')],
      (m.oaths ?? []).map((o) => [at(o.at), name(o.witness), t(`minutes.oath.${o.form}`), name(o.by), wording(o.text)]))),
    section('interpreters', table(t('minutes.section.interpreters'),
      [t('minutes.at'), t('minutes.interpreter'), t('minutes.languages'), t('minutes.by'), t('minutes.wording')],
      (m.interpreters ?? []).map((i) => [at(i.at), name(i.interpreter), i.languages, name(i.by), wording(i.text)]))),
    section('consultations', el('p', { class: 'note' }, t('minutes.consultationsNote')), table(t('minutes.section.consultations'),
      [t('minutes.counsel'), t('minutes.members'), t('minutes.from'), t('minutes.until')],
      (m.consultations ?? []).map((c) => [name(c.counsel), (c.members ?? []).map(name).join(', '), at(c.started_at), at(c.ended_at)]))),
    section('recording', table(t('minutes.section.recording'),
      [t('minutes.from'), t('minutes.startedBy'), t('minutes.until'), t('minutes.stoppedBy')],
      (m.recording ?? []).map((r) => [at(r.started_at), actor(r.started_by, name), at(r.stopped_at), actor(r.stopped_by, name)])),
    el('p', {}, segments.length
      ? t('minutes.segments', { count: segments.length, from: at(segments[0].sealed_at), until: at(segments[segments.length - 1].sealed_at) })
      : t('minutes.noSegments'))),
    section('technical', el('p', {}, t('minutes.totalReconnections', { count: m.technical?.reconnections ?? 0 })), table(t('minutes.section.technical'),
      [t('minutes.person'), t('minutes.track'), t('minutes.codecs'), t('minutes.received'), t('minutes.lost')],
      tracks.map((k) => [name(k.participant), t(`minutes.trackKind.${k.track}`), (k.codecs ?? []).join(', '), String(k.packets_received), String(k.packets_lost)]))),
  );
  const artefact = state.artefact;
  $('minutes-footer').replaceChildren(...[
    el('p', {}, t('minutes.footer', { artefact: query.get('artefact'), index: artefact?.ledger_index ?? '?' })),
    artefact?.sha256 ? el('p', { class: 'mono' }, `SHA-256 ${artefact.sha256}`) : null,
    el('p', {}, t('minutes.printed', { when: when(new Date().toISOString()) })),
  ].filter(Boolean));
}

start();
