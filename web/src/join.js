// The witness page, /join#<secret>: phone first, in the witness's language. Checks the camera and the
// microphone, joins the room with the invite (or rejoins with the credential after a reload or a dropped
// network), waits in the lobby, then shows the court.

import { audioLevel, openMedia, Room, ROLE_ORDER } from './lib/room.js';
import { $ } from './lib/dom.js';
import { formatDateTime, language, languageName, languagePicker, preferredLanguage, setLanguage, t } from './lib/i18n.js';

const CREDENTIAL_KEY = 'custodia.room.credential';
/** The invite of this tab, kept over a reload before Join (the address bar no longer has it). */
const INVITE_KEY = 'custodia.room.invite';
/** The language the court's invite named, kept beside it. */
const LANGUAGE_HINT_KEY = 'custodia.room.lang';
/** localStorage: the SHA-256 of each invite used on this device → the credential it gave, so that the same link
 *  opened again (a new tab, from a messaging app) lets the same person back in instead of saying "already used". */
const CREDENTIALS_KEY = 'custodia.room.credentials';

function storage(kind) {
  try {
    return window[kind];
  } catch {
    return null;
  }
}

async function inviteDigest(secret) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(secret));
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, '0')).join('');
}

function storedCredentials() {
  try {
    return JSON.parse(storage('localStorage')?.getItem(CREDENTIALS_KEY) ?? '{}') ?? {};
  } catch {
    return {};
  }
}

function rememberCredential(digest, credential) {
  const all = storedCredentials();
  if (credential) all[digest] = credential;
  else delete all[digest];
  storage('localStorage')?.setItem(CREDENTIALS_KEY, JSON.stringify(all));
}

let inviteKey = null;

let media = null;
let stopLevel = () => {};
let room = null;
let welcome = null;
let lastState = null;
let slotStreams = [];

function show(section) {
  for (const id of ['check', 'hearing', 'done']) $(id).hidden = id !== section;
}

function showError(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

/**
 * The invite from the link's fragment, taken out of the address bar at once: `#<secret>`, or
 * `#lang=<code>&invite=<secret>` where the court gave the person's language, for the page to speak it at once.
 */
function takeInvite() {
  const fragment = decodeURIComponent(location.hash.replace(/^#/, '')).trim();
  if (fragment) history.replaceState(null, '', location.pathname);
  const fields = new URLSearchParams(fragment);
  if (!fields.has('invite')) return { secret: fragment, lang: null };
  return { secret: fields.get('invite').trim(), lang: fields.get('lang') };
}

async function startPreview() {
  stopLevel();
  media?.getTracks().forEach((track) => track.stop());
  const audioOnly = $('audio-only').checked;
  const { stream, error } = await openMedia({ video: !audioOnly });
  media = stream;
  $('preview').srcObject = stream;
  const hasVideo = Boolean(stream?.getVideoTracks().length);
  $('preview').hidden = !hasVideo;
  const status = {
    'no-camera': 'check.noCamera',
    'camera-blocked': 'check.cameraBlocked',
    denied: 'check.denied',
    'no-device': 'check.noDevice',
    unsupported: 'check.unsupported',
  }[error];
  // Marked with its key, so that a change of language translates it too.
  $('preview-status').dataset.i18n = status ?? (hasVideo ? 'check.ready' : 'check.audioReady');
  $('preview-status').textContent = t($('preview-status').dataset.i18n);
  if (error === 'no-camera' || error === 'camera-blocked') $('audio-only').checked = true;
  stopLevel = audioLevel(stream, $('level'));
}

function roleName(role) {
  return t(`role.${role}`);
}

/** Someone in the hearing: the name the court gave them on their invite, with their role; or the role alone. */
function personName(person) {
  return person.name ? `${person.name} (${roleName(person.role)})` : roleName(person.role);
}

/** Whom to call if the link fails, as the court gave it for this hearing: kept for this tab, so that a page that
 * can no longer reach the gateway still shows it. */
const CONTACT_KEY = 'custodia.room.contact';

function renderContact() {
  const contact = welcome?.contact ?? sessionStorage.getItem(CONTACT_KEY);
  for (const id of ['contact', 'check-contact']) {
    $(id).hidden = !contact;
    // Isolated: a phone number or an address inside Arabic text keeps its own direction.
    if (contact) $(id).textContent = t('hearing.contact', { contact: `\u2068${contact}\u2069` });
  }
}

/** The court's words shown to us (a rights notice, an oath, an affirmation), in the language they were given in. */
let courtText = null;

function renderCourtText() {
  $('court-text').hidden = !courtText;
  if (!courtText) return;
  $('court-text-title').textContent = t(`text.${courtText.kind}`);
  const words = $('court-text-words');
  words.textContent = courtText.words;
  words.lang = courtText.language;
  words.dir = courtText.language === 'ar' ? 'rtl' : 'ltr';
}

/**
 * What this person chose to hear while the choice is on its way to the gateway (`null`: the floor), and when it was
 * sent: shown chosen until the gateway's state says it (or refuses it), so that another change meanwhile does not
 * put the old choice back under their finger. `undefined`: nothing on its way.
 */
let listenPending;
let listenPendingSince = 0;
/** The channel whose end this person was told of (shown until they choose again or another channel opens). */
let listenEnded = null;
/** The channels and page language the choices were last built for: rebuilt only when they change (keeps the focus). */
let listenBuiltFor = '';

/** Interpretation: each channel the court opened (`state.channels`), named in the page's language, and the floor. */
function renderListening(state, you) {
  const channels = state.channels ?? [];
  const inLobby = you.place === 'lobby' || !you.admitted;
  $('listen-ended').hidden = !listenEnded;
  if (listenEnded) $('listen-ended').textContent = t('listen.ended', { language: languageName(listenEnded) });
  $('listen').hidden = !channels.length || inLobby;
  if ($('listen').hidden) return;
  // An interpreter is told what their own channel does; they may still listen to another (relay interpretation).
  const mine = channels.find((channel) => channel.interpreter === you.participant);
  $('listen-interpreting').hidden = !mine;
  if (mine) {
    $('listen-interpreting').textContent = t(mine.mode === 'simultaneous' ? 'listen.interpretingSimultaneous' : 'listen.interpretingConsecutive',
      { language: languageName(mine.language) });
  }
  // The channel into the page's own language first: the one this person is most likely to want.
  const choices = channels.filter((channel) => channel !== mine)
    .sort((a, b) => Number(b.language === language()) - Number(a.language === language()));
  const builtFor = JSON.stringify([language(), choices.map((channel) => [channel.language, channel.mode])]);
  if (builtFor !== listenBuiltFor) {
    listenBuiltFor = builtFor;
    const option = (value, name, mode) => {
      const label = document.createElement('label');
      label.className = 'choice';
      const input = document.createElement('input');
      input.type = 'radio';
      input.name = 'listen';
      input.value = value;
      input.addEventListener('change', () => input.checked && chooseChannel(value || null));
      const text = document.createElement('span');
      text.textContent = name;
      if (mode) {
        const note = document.createElement('span');
        note.className = 'mode';
        note.textContent = ` · ${t(`listen.${mode}`)}`;
        text.append(note);
      }
      label.append(input, text);
      return label;
    };
    $('listen-choices').replaceChildren(
      option('', t('listen.floor')),
      ...choices.map((channel) => option(channel.language, languageName(channel.language, { capital: true }), channel.mode)),
    );
  }
  $('listen-choices').hidden = !choices.length;
  $('listen-now').hidden = !choices.length;
  const listening = you.listening ?? null;
  const shown = listenPending !== undefined ? listenPending : listening;
  for (const input of $('listen-choices').querySelectorAll('input')) input.checked = input.value === (shown ?? '');
  // What the gateway says this person hears, not what they just clicked; a notice while the interpreter is away.
  $('listen-now').textContent = heardWords(state, listening);
  $('listen-now').classList.toggle('notice', interpreterAway(state, listening));
}

/**
 * Whether the simultaneous channel this person listens to has no interpreter in the main room (`interpreting:
 * false`: they left, lost their connection or are in a consultation): the gateway then gives its listeners the floor
 * at full level until the interpreter is back. `interpreting` absent (a state for someone not in the main room) is
 * not known, and not said.
 */
function interpreterAway(state, listening) {
  if (!listening) return false;
  const channel = (state.channels ?? []).find((open) => open.language === listening);
  return channel?.mode === 'simultaneous' && channel.interpreting === false;
}

/** Whether the state says the interpreter of the channel into `listening` is in the main room. */
function interpretingNow(state, listening) {
  return (state.channels ?? []).some((open) => open.language === listening && open.interpreting === true);
}

/**
 * What this person hears, in words: the floor, or a channel; a simultaneous channel's listener hears the original
 * speech too, quietly beneath the interpretation (the gateway ducks the floor to a fifth of its level), or, while its
 * interpreter is away, the original speech at full volume.
 */
function heardWords(state, listening) {
  if (!listening) return t('listen.nowFloor');
  if (interpreterAway(state, listening)) return t('listen.interpreterAway', { language: languageName(listening) });
  const channel = (state.channels ?? []).find((open) => open.language === listening);
  const key = channel?.mode === 'simultaneous' ? 'listen.nowChannelSimultaneous' : 'listen.nowChannel';
  return t(key, { language: languageName(listening) });
}

function chooseChannel(choice) {
  listenPending = choice;
  listenPendingSince = Date.now();
  listenEnded = null;
  $('listen-ended').hidden = true;
  showError($('action-error'), '');
  room?.send({ type: 'choose_channel', language: choice });
}

function render() {
  renderContact();
  renderCourtText();
  if (!welcome) return;
  const hearing = welcome.hearing ?? {};
  $('hearing-place').textContent = t('hearing.where', {
    place: `\u2068${hearing.place ?? ''}\u2069`, // isolated: a Latin place name inside Arabic text
    when: formatDateTime(hearing.scheduled_for),
  });
  const state = lastState;
  if (!state) return;
  const you = state.you ?? {};
  // A private consultation is never recorded, whatever the hearing is doing meanwhile: its members are told so.
  const consulting = you.place === 'consultation';
  $('recording').hidden = !state.recording || consulting;
  $('not-recording').hidden = Boolean(state.recording) || consulting;
  $('consultation-banner').hidden = !consulting;
  const inLobby = you.place === 'lobby' || !you.admitted;
  $('lobby').hidden = !inLobby;
  $('videos').hidden = inLobby;

  const people = [...(state.participants ?? [])].sort(
    (a, b) => ROLE_ORDER.indexOf(a.role) - ROLE_ORDER.indexOf(b.role),
  );
  $('present').replaceChildren(
    ...people.map((person) => {
      const item = document.createElement('li');
      const isYou = person.id === you.participant;
      const where = person.place === 'lobby' ? t('place.lobby') : person.place === 'main_room' ? t('place.main_room') : t('place.other');
      item.textContent = `${personName(person)}${isYou ? ` (${t('hearing.you')})` : ''}: ${where}`;
      if (person.connected === false) item.textContent += ` (${t(person.left ? 'hearing.left' : 'hearing.disconnected')})`;
      else if (person.media_stopped) item.textContent += ` (${t(isYou ? 'hearing.yourMediaStopped' : 'hearing.mediaStopped')})`;
      return item;
    }),
  );

  renderProtection(you);
  renderListening(state, you);
  const muted = Boolean(you.muted);
  $('you-muted').hidden = !muted;
  $('mute').setAttribute('aria-pressed', String(muted));
  $('mute').textContent = t(muted ? 'controls.unmute' : 'controls.mute');
  renderVideos(people, you);
  renderCounsel(people, you);
  renderIdentity(people, you);
}

/**
 * The court's protective order, as the gateway tells this witness (`you.protection`): which of the face, the voice
 * and the name everyone but the privileged gets masked, in the page's language, for as long as it is in force.
 */
function renderProtection(you) {
  const protection = you.protection;
  $('protection').hidden = !protection;
  if (!protection) return;
  const measures = [];
  if (protection.mask_face) measures.push(t('protection.face'));
  if (protection.alter_voice) measures.push(t('protection.voice'));
  // Isolated: a Latin pseudonym inside Arabic text keeps its own direction.
  if (protection.pseudonym) measures.push(t('protection.pseudonym', { pseudonym: `\u2068${protection.pseudonym}\u2069` }));
  $('protection-measures').replaceChildren(...measures.map((text) => {
    const item = document.createElement('li');
    item.textContent = text;
    return item;
  }));
}

/** The remote-site officer checks the identity of the person heard, from the main room. */
function renderIdentity(people, you) {
  const form = $('identity-form');
  form.hidden = you.role !== 'remote_site_officer' || !you.admitted || you.place !== 'main_room';
  if (form.hidden) return;
  const select = $('identity-person');
  const chosen = select.value;
  const heard = people.filter((p) => ['witness', 'accused'].includes(p.role) && p.place === 'main_room');
  select.replaceChildren(...heard.map((p) => new Option(personName(p), p.id)));
  if (heard.some((p) => p.id === chosen)) select.value = chosen;
}

let identitySent = false;

/** Whom counsel may take into a private consultation (custodia-hearing's HearingRole::may_consult_with). */
const CONSULTABLE = { prosecutor: ['witness', 'interpreter'], defence: ['witness', 'accused', 'interpreter'] };

/** Counsel's own controls: start a private consultation from the hearing, or end the one they are in. */
function renderCounsel(people, you) {
  const consultable = CONSULTABLE[you.role];
  $('counsel').hidden = !consultable || !you.admitted || you.place === 'lobby';
  if ($('counsel').hidden) return;
  const consulting = you.place === 'consultation';
  $('consult-form').hidden = consulting;
  $('end-consultation').hidden = !consulting;
  if (consulting) return;
  const candidates = people.filter((p) => p.id !== you.participant && p.place === 'main_room' && consultable.includes(p.role));
  const chosen = new Set([...document.querySelectorAll('#consult-choices input:checked')].map((input) => input.value));
  $('consult-choices').replaceChildren(...candidates.map((person) => {
    const label = document.createElement('label');
    label.className = 'choice';
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.value = person.id;
    box.checked = chosen.has(person.id);
    const text = document.createElement('span');
    text.textContent = personName(person);
    label.append(box, text);
    return label;
  }));
  $('consult').disabled = !candidates.length;
}

/** The court's video large, ours small: one <video> per slot that someone in our place holds. */
function renderVideos(people, you) {
  const container = $('videos');
  const wanted = people.filter(
    (person) => person.id !== you.participant && person.place === you.place && person.slot != null && slotStreams[person.slot],
  );
  const keep = new Set();
  for (const person of wanted) {
    const key = `slot-${person.slot}`;
    keep.add(key);
    let figure = container.querySelector(`[data-key="${key}"]`);
    if (!figure) {
      figure = document.createElement('figure');
      figure.dataset.key = key;
      figure.dataset.order = String(person.slot);
      figure.className = 'tile';
      const video = document.createElement('video');
      video.autoplay = true;
      video.playsInline = true;
      video.dataset.slot = String(person.slot);
      video.srcObject = slotStreams[person.slot];
      // Someone whose video does not come (sound only, or a camera off) gets their name, not a black tile.
      const placeholder = document.createElement('p');
      placeholder.className = 'placeholder';
      placeholder.setAttribute('aria-hidden', 'true');
      figure.append(video, placeholder, document.createElement('figcaption'));
      const track = slotStreams[person.slot].getVideoTracks()[0];
      const soundOnly = () => figure.classList.toggle('sound-only', !track || track.muted);
      track?.addEventListener('mute', soundOnly);
      track?.addEventListener('unmute', soundOnly);
      soundOnly();
      // Tiles keep their places (by slot, which a participant keeps for the hearing): nobody jumps around when
      // someone else comes or goes.
      const after = [...container.children].find((other) => other.dataset.key !== 'self' && Number(other.dataset.order) > person.slot);
      container.insertBefore(figure, after ?? container.querySelector('[data-key="self"]'));
      video.play().catch(() => {});
    }
    figure.querySelector('.placeholder').textContent = `${personName(person)} · ${t('hearing.soundOnly')}`;
    figure.querySelector('video').setAttribute('aria-label', personName(person));
    figure.querySelector('figcaption').textContent = personName(person) + (person.muted ? ` · ${t('hearing.muted')}` : '')
      + (person.media_stopped ? ` · ${t('hearing.mediaStopped')}` : '');
    figure.classList.toggle('stalled', Boolean(person.media_stopped));
  }
  if (media?.getVideoTracks().length) {
    keep.add('self');
    let self = container.querySelector('[data-key="self"]');
    if (!self) {
      self = document.createElement('figure');
      self.dataset.key = 'self';
      self.className = 'tile self';
      const video = document.createElement('video');
      video.autoplay = true;
      video.muted = true;
      video.playsInline = true;
      video.srcObject = media;
      self.append(video, document.createElement('figcaption'));
      container.append(self);
      video.play().catch(() => {});
    }
    self.querySelector('figcaption').textContent = t('hearing.you');
  }
  for (const figure of [...container.children]) if (!keep.has(figure.dataset.key)) figure.remove();
}

/** Says to screen readers what changed for this person: let in, muted or not, recording started or stopped. */
function announceChanges(before, now) {
  if (!before) {
    // Entering: a protected witness hears first that the court's order protects them.
    if (now.you?.protection) $('announcer').textContent = `${t('protection.title')}.`;
    return;
  }
  const said = [];
  const was = before.you ?? {};
  const is = now.you ?? {};
  if (was.place === 'lobby' && is.place === 'main_room') said.push('announce.admitted');
  if (!was.muted && is.muted) said.push('hearing.youAreMuted');
  if (was.muted && !is.muted) said.push('announce.unmuted');
  if (!before.recording && now.recording) said.push('hearing.recording');
  if (before.recording && !now.recording) said.push('announce.recordingStopped');
  // A protective order made, changed or lifted while they are here: the notice on the page says what it is now.
  if (is.protection && JSON.stringify(was.protection ?? null) !== JSON.stringify(is.protection)) said.push('protection.title');
  if (was.protection && !is.protection) said.push('protection.lifted');
  // The notice's heading is a title, without a full stop; said among sentences, it gets one.
  const sentences = said.map((key) => (key === 'protection.title' ? `${t(key)}.` : t(key)));
  sentences.push(...listeningChanges(before, now));
  if (!sentences.length) return;
  $('announcer').textContent = sentences.join(' ');
}

/**
 * What changed in what this person hears: a channel they listened to closed (they hear the floor again, which the
 * page also shows until they choose again), their choice took effect, its interpreter went away or came back, or a
 * channel they may choose opened (or they came in from the lobby while channels were open).
 */
function listeningChanges(before, now) {
  const said = [];
  const was = before.you ?? {};
  const is = now.you ?? {};
  const wasListening = was.listening ?? null;
  const listening = is.listening ?? null;
  const open = new Set((now.channels ?? []).map((channel) => channel.language));
  if (wasListening && !listening && !open.has(wasListening)) {
    listenEnded = wasListening;
    said.push(t('listen.ended', { language: languageName(wasListening) }));
  } else if (wasListening !== listening) {
    if (listening) listenEnded = null;
    said.push(heardWords(now, listening));
  } else if (listening && interpreterAway(now, listening) && !interpreterAway(before, listening)) {
    // Same choice, but its interpreter went away: the original at full volume.
    said.push(heardWords(now, listening));
  } else if (listening && interpreterAway(before, listening) && interpretingNow(now, listening)) {
    // Back (said only when the state says so, not when it no longer tells).
    said.push(heardWords(now, listening));
  }
  const inHearing = is.admitted && is.place !== 'lobby';
  const cameIn = inHearing && !(was.admitted && was.place !== 'lobby');
  const openBefore = new Set((before.channels ?? []).map((channel) => channel.language));
  const opened = (now.channels ?? []).filter((channel) => channel.interpreter !== is.participant && (cameIn || !openBefore.has(channel.language)));
  if (inHearing && opened.length) {
    listenEnded = null;
    said.push(t('listen.opened', { languages: opened.map((channel) => languageName(channel.language)).join(', ') }));
  }
  return said;
}

function connectionStatus(status) {
  const banner = $('connection');
  const key = { reconnecting: 'connection.lost', connecting: 'connection.connecting' }[status];
  if (key) {
    banner.dataset.i18n = key;
    banner.textContent = t(key);
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

/** Our own media connection: said plainly, and cleared once media flows again. */
function mediaStatus(status) {
  const banner = $('media-status');
  const key = {
    interrupted: 'media.interrupted',
    reconnecting: 'media.reconnecting',
    not_received: 'media.notReceived',
  }[status];
  if (key) {
    banner.dataset.i18n = key;
    banner.textContent = t(key);
  }
  banner.hidden = !key;
}

/** The end of our part: `titleKey` says whether the hearing ended or only our part in it (removed, left). */
function finish(textKey, { forget = true, titleKey = 'done.title' } = {}) {
  stopLevel();
  media?.getTracks().forEach((track) => track.stop());
  sessionStorage.removeItem(CREDENTIAL_KEY);
  if (inviteKey && forget) rememberCredential(inviteKey, null);
  $('done-title').dataset.i18n = titleKey;
  $('done-title').textContent = t(titleKey);
  $('done-text').dataset.i18n = textKey;
  $('done-text').textContent = t(textKey);
  show('done');
  $('done-title').focus?.();
}

function enter(start) {
  stopLevel();
  room = new Room(media, {
    onConnection: connectionStatus,
    onMedia: mediaStatus,
    onWelcome(message) {
      welcome = message;
      sessionStorage.setItem(CREDENTIAL_KEY, message.credential);
      if (message.contact) sessionStorage.setItem(CONTACT_KEY, message.contact);
      else sessionStorage.removeItem(CONTACT_KEY);
      sessionStorage.removeItem(INVITE_KEY);
      if (inviteKey) rememberCredential(inviteKey, message.credential);
      show('hearing');
      render();
    },
    onState(state) {
      announceChanges(lastState, state);
      lastState = state;
      // The gateway says what this person hears: a choice on its way is settled once it does (or after a while).
      const listening = state.you?.listening ?? null;
      if (listenPending !== undefined && (listening === listenPending || Date.now() - listenPendingSince > 10_000)) listenPending = undefined;
      if (identitySent) {
        identitySent = false;
        $('identity-done').dataset.i18n = 'identity.done';
        showError($('identity-done'), t('identity.done'));
      }
      // The gateway receives our media again: whatever was said about it is over.
      if (!state.you?.media_stopped && $('media-status').dataset.i18n === 'media.notReceived') mediaStatus('flowing');
      render();
    },
    onSlots(streams) {
      slotStreams = streams;
      $('videos').replaceChildren();
      render();
    },
    onRefused(refusal) {
      identitySent = false;
      if (refusal.action === 'choose_channel') listenPending = undefined;
      if (refusal.action) {
        render();
        // In the reader's language, by the rule's key: never the gateway's English text with its internal ids.
        const key = `problem.${refusal.problem}`;
        showError($('action-error'), t(key) === key ? t('problem.other') : t(key));
        return;
      }
      sessionStorage.removeItem(CREDENTIAL_KEY);
      show('check');
      // The gateway's reason is for the operator; the person reads it from the translations, by its key.
      const key = `enter.${refusal.problem}`;
      showError($('check-error'), t(key) === key ? t('enter.other') : t(key));
      $('join').disabled = true;
    },
    onText(text) {
      courtText = text;
      renderCourtText();
      $('announcer').textContent = t(`text.${text.kind}`);
    },
    onEnded: () => finish('done.text'),
    onRemoved: () => finish('done.removed', { titleKey: 'done.titleOut' }),
    // This person carries on in another tab or device, with the same credential: it stays remembered.
    onReplaced: () => finish('done.replaced', { forget: false, titleKey: 'done.titleOut' }),
    onError: (error) => {
      // The detail is the gateway's English, for support staff (the console log); the person reads plain words.
      console.warn('hearing room:', error.message);
      showError($('action-error'), t('problem.other'));
    },
  });
  room.setDataSaver($('data-saver').checked);
  room.setLanguage(language());
  window.custodiaRoom = room; // for the browser test and for support staff
  start(room);
}

// Out of the address bar before anything else runs; kept for this tab until it is used.
const invite = takeInvite();
const secret = invite.secret || sessionStorage.getItem(INVITE_KEY) || '';
if (secret) sessionStorage.setItem(INVITE_KEY, secret);
// The court's hint of the person's language, kept with the invite over a reload.
const languageHint = invite.lang || sessionStorage.getItem(LANGUAGE_HINT_KEY);
if (languageHint) sessionStorage.setItem(LANGUAGE_HINT_KEY, languageHint);

async function main() {
  await setLanguage(preferredLanguage(languageHint));
  languagePicker($('language'), () => {
    // Said again on the next rejoin; the court's texts already shown stay in the language they were given in.
    room?.setLanguage(language());
    render();
  });
  const credential = sessionStorage.getItem(CREDENTIAL_KEY);

  $('audio-only').addEventListener('change', startPreview);
  // The browser may already know the connection is weak, or that its user asked to save data.
  const connection = navigator.connection;
  if (connection?.saveData || ['slow-2g', '2g', '3g'].includes(connection?.effectiveType)) $('data-saver').checked = true;
  $('mute').addEventListener('click', () => {
    const you = lastState?.you;
    if (!you) return;
    room?.send({ type: you.muted ? 'unmute' : 'mute', participant: you.participant });
  });
  $('identity-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const person = $('identity-person').value;
    const officerName = $('identity-officer').value.trim();
    const site = $('identity-site').value.trim();
    showError($('identity-done'), '');
    if (!person || !officerName || !site) {
      showError($('action-error'), t('identity.missing'));
      return;
    }
    showError($('action-error'), '');
    identitySent = room?.send({ type: 'verify_identity', person, document: $('identity-document').value, officer_name: officerName, site }) ?? false;
  });
  $('consult').addEventListener('click', () => {
    const members = [...document.querySelectorAll('#consult-choices input:checked')].map((input) => input.value);
    if (!members.length) {
      showError($('action-error'), t('consultation.chooseFirst'));
      return;
    }
    showError($('action-error'), '');
    room?.send({ type: 'start_consultation', with: members });
  });
  $('end-consultation').addEventListener('click', () => {
    const consultation = lastState?.you?.consultation;
    if (consultation != null) room?.send({ type: 'end_consultation', consultation });
  });
  $('leave').addEventListener('click', () => {
    if (!window.confirm(t('controls.leaveConfirm'))) return;
    room?.leave();
    finish('done.left', { titleKey: 'done.titleOut' });
  });

  if (!secret && !credential) {
    showError($('check-error'), t('error.noInvite'));
    $('join').disabled = true;
    return;
  }
  await startPreview();
  if (credential && !secret) {
    // A reload during the hearing: the same participant, straight back in.
    enter((r) => r.rejoin(credential));
    return;
  }
  inviteKey = await inviteDigest(secret).catch(() => null);
  $('join').addEventListener('click', () => {
    $('join').disabled = true;
    // This invite was used on this device before: the same person comes back with the credential it gave.
    const known = inviteKey ? storedCredentials()[inviteKey] : null;
    enter((r) => (known ? r.rejoin(known) : r.join(secret)));
  });
  // Only now does Join do something (the page starts with it disabled).
  $('join').disabled = false;
}

main().catch((error) => showError($('check-error'), error.message));
