// A participant's whole recording in one player: its WebM segments (each a file of its own, about ten seconds)
// appended back to back into one Media Source Extensions buffer in "sequence" mode, fetched a little ahead of what
// is playing and dropped once well behind, so memory stays bounded however long the hearing. Each segment is
// fetched through the gateway's content route like any play (the use policy decides, and each fetch is a custody
// record). Where MSE cannot take the segments, the player plays them one after another instead.

import { failure, unreachable } from './api.js';

/** Seconds of media fetched ahead of the playing position, and kept behind it. */
const AHEAD_SECONDS = 30;
const BEHIND_SECONDS = 60;

/** The codecs a WebM's track entries name, read from its head (CodecID "V_VP8", "A_OPUS"). */
function codecsOf(bytes) {
  const head = new TextDecoder('latin1').decode(bytes.subarray(0, Math.min(bytes.length, 64 * 1024)));
  const codecs = [];
  if (head.includes('V_VP8')) codecs.push('vp8');
  if (head.includes('V_VP9')) codecs.push('vp9');
  if (head.includes('A_OPUS')) codecs.push('opus');
  return codecs;
}

async function fetchSegment(url) {
  let response;
  try {
    response = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
  } catch {
    throw unreachable();
  }
  if (!response.ok) throw await failure(response);
  return new Uint8Array(await response.arrayBuffer());
}

function once(target, name) {
  return new Promise((resolve, reject) => {
    target.addEventListener(name, resolve, { once: true });
    if (name === 'updateend') target.addEventListener('error', () => reject(new Error('the segment could not be added')), { once: true });
  });
}

/** The longest hole between two segments that playing jumps over. */
const MAX_GAP_SECONDS = 2;

/** How often the player is looked at, and how long it may stand still, with media to play, before it is moved on. */
const WATCH_MS = 200;
const STALL_MS = 1500;

/**
 * How far a stalled player is moved on at each try (seconds): first a seek where it stands, which restarts the
 * pipeline and skips nothing, then a frame, then a little more. After the last, it is left alone until it has
 * played on for LASTING_PLAY_SECONDS, or someone seeks.
 */
const NUDGES = [0, 0.04, 0.1, 0.2];
const LASTING_PLAY_SECONDS = 2;

/** What the player holds beyond it to be moved on: a nudge never lands where it would wait for more. */
const HELD_AFTER_NUDGE_SECONDS = 1;

/** The start of the next buffered range after `time`, if it begins less than MAX_GAP_SECONDS later. */
function nextRangeAfter(video, time) {
  const { buffered } = video;
  for (let i = 0; i < buffered.length; i += 1) {
    const start = buffered.start(i);
    if (start > time && start - time < MAX_GAP_SECONDS) return start;
  }
  return null;
}

/**
 * Seconds the player holds from `time` on without a break: 0 when it holds nothing there. `slack` counts a range
 * that starts that little after `time` as holding it.
 */
function heldAfter(video, time, slack = 0) {
  const { buffered } = video;
  for (let i = 0; i < buffered.length; i += 1) {
    if (buffered.start(i) <= time + slack && time < buffered.end(i)) return buffered.end(i) - time;
  }
  return 0;
}

/**
 * Keeps a playing recording moving. Two things stop it for good otherwise:
 * - The holes at the seams. Each segment's tracks end a little apart (the audio runs on after the last video
 *   frame), and a buffer holds only what every track has, so the seams are holes of a fraction of a second where a
 *   video element would stall. When playing reaches the end of what it has and more starts soon after, it goes on
 *   from there.
 * - A stall with media in hand: on a loaded machine Chromium's pipeline can sit in a seek, or waiting, for good
 *   although what it needs is buffered. When the time has not moved for STALL_MS while playing, and what lies just
 *   ahead is held, the player is moved on by NUDGES in turn, as the players of adaptive streams do.
 * What a nudge skips is never silent: the element counts the nudges and the seconds skipped
 * (`data-moved-on`, `data-skipped`) and fires `custodia-skipped` ({ at, seconds }) for the page to say so.
 */
export function keepPlaying(video) {
  // Whether a seek under way is this function's own (a user's seek gives the nudges back).
  let ownSeek = false;
  const seekTo = (time) => {
    ownSeek = true;
    video.currentTime = time;
  };
  const jumpHole = () => {
    const { currentTime } = video;
    if (heldAfter(video, currentTime, 0.01) > 0.15) return false;
    const start = nextRangeAfter(video, currentTime);
    if (start == null) return false;
    seekTo(start + 0.01);
    return true;
  };
  let last = null;
  let stillSince = performance.now();
  let nudges = 0;
  let nudgedAt = null;
  video.addEventListener('waiting', jumpHole);
  video.addEventListener('seeking', () => {
    if (!ownSeek) {
      nudges = 0;
      nudgedAt = null;
    }
    ownSeek = false;
  });
  const timer = setInterval(() => {
    if (!video.isConnected) {
      clearInterval(timer);
      return;
    }
    const now = performance.now();
    if (video.paused || video.ended || video.currentTime !== last) {
      if (nudgedAt != null && !video.seeking && video.currentTime > nudgedAt + LASTING_PLAY_SECONDS) {
        nudges = 0;
        nudgedAt = null;
      }
      last = video.currentTime;
      stillSince = now;
      if (!video.paused && !video.seeking) jumpHole();
      return;
    }
    if (!video.seeking && jumpHole()) {
      stillSince = now;
      return;
    }
    if (now - stillSince < STALL_MS || nudges >= NUDGES.length) return;
    stillSince = now;
    const at = video.currentTime;
    // The next nudge whose target holds what lies ahead: one that lands in a sliver of a range (before another
    // hole at a seam) is passed over for a later one. None held: the player waits for media, and no try is spent.
    let next = nudges;
    while (next < NUDGES.length && heldAfter(video, at + NUDGES[next]) < HELD_AFTER_NUDGE_SECONDS) next += 1;
    if (next >= NUDGES.length) return;
    const to = at + NUDGES[next];
    nudges = next + 1;
    nudgedAt = to;
    video.dataset.movedOn = String(Number(video.dataset.movedOn ?? 0) + 1);
    if (to > at) {
      video.dataset.skipped = (Number(video.dataset.skipped ?? 0) + (to - at)).toFixed(3);
      video.dispatchEvent(new CustomEvent('custodia-skipped', { detail: { at, seconds: to - at } }));
    }
    seekTo(to);
  }, WATCH_MS);
}

/** Seconds buffered ahead of the playing position. */
function ahead(video) {
  return heldAfter(video, video.currentTime, 0.5);
}

/** Waits until the player needs more media (or is gone). */
function needMore(video) {
  return new Promise((resolve) => {
    const check = () => {
      if (!video.isConnected || ahead(video) < AHEAD_SECONDS) {
        video.removeEventListener('timeupdate', check);
        video.removeEventListener('seeking', check);
        resolve();
      }
    };
    video.addEventListener('timeupdate', check);
    video.addEventListener('seeking', check);
    check();
  });
}

/**
 * Plays `urls` (the segments, in order) in `video` as one recording. `progress(loaded)` is told how many segments
 * are in the player. Resolves once every segment is in (or the player was removed); throws an ApiError when the
 * gateway refuses a segment.
 */
export async function playWhole(video, urls, progress = () => {}) {
  if (!urls.length) return;
  const first = await fetchSegment(urls[0]);
  const codecs = codecsOf(first);
  const type = `video/webm; codecs="${codecs.join(',')}"`;
  if (!codecs.length || !window.MediaSource || !MediaSource.isTypeSupported(type)) {
    return playOneAfterAnother(video, urls, progress);
  }
  const source = new MediaSource();
  video.src = URL.createObjectURL(source);
  await once(source, 'sourceopen');
  URL.revokeObjectURL(video.src);
  const buffer = source.addSourceBuffer(type);
  buffer.mode = 'sequence';
  keepPlaying(video);
  let bytes = first;
  for (let i = 0; i < urls.length; i += 1) {
    if (!video.isConnected) return;
    if (i > 0) {
      await needMore(video);
      if (!video.isConnected) return;
      bytes = await fetchSegment(urls[i]);
    }
    if (video.currentTime > BEHIND_SECONDS && buffer.buffered.length && buffer.buffered.start(0) < video.currentTime - BEHIND_SECONDS) {
      buffer.remove(0, video.currentTime - BEHIND_SECONDS);
      await once(buffer, 'updateend');
    }
    buffer.appendBuffer(bytes);
    await once(buffer, 'updateend');
    progress(i + 1);
    if (i === 0) video.play().catch(() => {});
  }
  if (source.readyState === 'open') source.endOfStream();
}

/** The fallback: each segment in turn, the next one when the last ends. */
function playOneAfterAnother(video, urls, progress) {
  let at = 0;
  return new Promise((resolve) => {
    const next = () => {
      if (at >= urls.length || !video.isConnected) {
        video.removeEventListener('ended', next);
        resolve();
        return;
      }
      video.src = urls[at];
      at += 1;
      progress(at);
      video.play().catch(() => {});
    };
    video.addEventListener('ended', next);
    next();
  });
}
