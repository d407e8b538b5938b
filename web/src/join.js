// The witness page, /join#<secret>: phone first, in the witness's language. Checks the camera and the
// microphone, joins the room with the invite (or rejoins with the credential after a reload or a dropped
// network), waits in the lobby, then shows the court.

import { audioLevel, openMedia, Room, ROLE_ORDER } from './lib/room.js';
import { $ } from './lib/dom.js';
import { formatDateTime, languagePicker, preferredLanguage, setLanguage, t } from './lib/i18n.js';

const CREDENTIAL_KEY = 'custodia.room.credential';

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

/** The invite secret from the link's fragment, taken out of the address bar at once. */
function takeSecret() {
  const secret = decodeURIComponent(location.hash.replace(/^#/, '')).trim();
  if (secret) history.replaceState(null, '', location.pathname);
  return secret;
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
    denied: 'check.denied',
    'no-device': 'check.noDevice',
    unsupported: 'check.unsupported',
  }[error];
  // Marked with its key, so that a change of language translates it too.
  $('preview-status').dataset.i18n = status ?? (hasVideo ? 'check.ready' : 'check.audioReady');
  $('preview-status').textContent = t($('preview-status').dataset.i18n);
  if (error === 'no-camera') $('audio-only').checked = true;
  stopLevel = audioLevel(stream, $('level'));
}

function roleName(role) {
  return t(`role.${role}`);
}

function render() {
  if (!welcome) return;
  const hearing = welcome.hearing ?? {};
  $('hearing-place').textContent = t('hearing.where', {
    place: `\u2068${hearing.place ?? ''}\u2069`, // isolated: a Latin place name inside Arabic text
    when: formatDateTime(hearing.scheduled_for),
  });
  const state = lastState;
  if (!state) return;
  $('recording').hidden = !state.recording;
  $('not-recording').hidden = Boolean(state.recording);
  const you = state.you ?? {};
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
      item.textContent = `${roleName(person.role)}${isYou ? ` (${t('hearing.you')})` : ''}: ${where}`;
      if (person.connected === false) item.textContent += ` (${t('hearing.disconnected')})`;
      return item;
    }),
  );

  const muted = Boolean(you.muted);
  $('mute').setAttribute('aria-pressed', String(muted));
  $('mute').textContent = t(muted ? 'controls.unmute' : 'controls.mute');
  renderVideos(people, you);
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
      figure.className = 'tile';
      const video = document.createElement('video');
      video.autoplay = true;
      video.playsInline = true;
      video.dataset.slot = String(person.slot);
      video.srcObject = slotStreams[person.slot];
      figure.append(video, document.createElement('figcaption'));
      container.append(figure);
      video.play().catch(() => {});
    }
    figure.querySelector('video').setAttribute('aria-label', roleName(person.role));
    figure.querySelector('figcaption').textContent = roleName(person.role) + (person.muted ? ` · ${t('hearing.muted')}` : '');
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

function finish(textKey) {
  stopLevel();
  media?.getTracks().forEach((track) => track.stop());
  sessionStorage.removeItem(CREDENTIAL_KEY);
  $('done-text').dataset.i18n = textKey;
  $('done-text').textContent = t(textKey);
  show('done');
  $('done-title').focus?.();
}

function enter(start) {
  stopLevel();
  room = new Room(media, {
    onConnection: connectionStatus,
    onWelcome(message) {
      welcome = message;
      sessionStorage.setItem(CREDENTIAL_KEY, message.credential);
      show('hearing');
      render();
    },
    onState(state) {
      lastState = state;
      render();
    },
    onSlots(streams) {
      slotStreams = streams;
      $('videos').replaceChildren();
      render();
    },
    onRefused(refusal) {
      if (refusal.action) {
        showError($('action-error'), t('error.action', { reason: refusal.reason }));
        return;
      }
      sessionStorage.removeItem(CREDENTIAL_KEY);
      show('check');
      showError($('check-error'), t('error.refused', { reason: refusal.reason }));
      $('join').disabled = true;
    },
    onEnded: () => finish('done.text'),
    onRemoved: () => finish('done.removed'),
    onReplaced: () => finish('done.replaced'),
    onError: (error) => showError($('action-error'), error.message),
  });
  room.setDataSaver($('data-saver').checked);
  window.custodiaRoom = room; // for the browser test and for support staff
  start(room);
}

// Out of the address bar before anything else runs.
const secret = takeSecret();

async function main() {
  await setLanguage(preferredLanguage());
  languagePicker($('language'), () => render());
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
  $('leave').addEventListener('click', () => {
    if (!window.confirm(t('controls.leaveConfirm'))) return;
    room?.leave();
    finish('done.left');
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
  $('join').addEventListener('click', () => {
    $('join').disabled = true;
    enter((r) => r.join(secret));
  });
}

main().catch((error) => showError($('check-error'), error.message));
