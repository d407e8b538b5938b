// A participant's whole recording in one player: its WebM segments (each a file of its own, about ten seconds)
// appended back to back into one Media Source Extensions buffer in "sequence" mode, fetched a little ahead of what
// is playing and dropped once well behind, so memory stays bounded however long the hearing; seeking back to a
// part that was dropped fetches its segment again and puts it back in its place. Each segment is
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

/**
 * Jumps the small holes at the seams. Each segment's tracks end a little apart (the audio runs on after the last
 * video frame), and a buffer holds only what every track has, so the seams are holes of a fraction of a second
 * where a video element would stall for good. When playing reaches the end of what it has and more starts soon
 * after, it goes on from there.
 */
function jumpGaps(video) {
  const jump = () => {
    const { buffered, currentTime } = video;
    let end = null;
    for (let i = 0; i < buffered.length; i += 1) {
      if (buffered.start(i) <= currentTime + 0.01 && currentTime <= buffered.end(i)) end = buffered.end(i);
    }
    // Nothing at the play head at all (HAVE_METADATA or less) is a hole too, wherever the range around it ends.
    if (end != null && end - currentTime > 0.15 && video.readyState > HTMLMediaElement.HAVE_METADATA) return;
    jumpToNextRange(video);
  };
  video.addEventListener('waiting', jump);
  // A seek that lands in a hole (a track of a segment cut short) would wait for good: after a second with nothing
  // at the play head it goes on from what comes next, if that is near.
  let seekingSince = 0;
  video.addEventListener('seeking', () => {
    seekingSince = Date.now();
  });
  const inside = () => {
    const { buffered, currentTime } = video;
    for (let i = 0; i < buffered.length; i += 1) {
      if (buffered.start(i) <= currentTime && currentTime < buffered.end(i)) return true;
    }
    return false;
  };
  // A decoder that stalls inside what it holds (nothing at the play head for a second, and no hole to jump) is
  // nudged on a tenth of a second, which makes it start again from there.
  let stalledAt = null;
  const nudge = () => {
    if (video.readyState > HTMLMediaElement.HAVE_METADATA || !inside()) {
      stalledAt = null;
      return;
    }
    const now = Date.now();
    if (stalledAt?.time !== video.currentTime) stalledAt = { time: video.currentTime, since: now };
    else if (now - stalledAt.since > 1000) video.currentTime += 0.1;
  };
  const timer = setInterval(() => {
    if (!video.isConnected) clearInterval(timer);
    else if (!video.paused && !video.seeking) {
      jump();
      nudge();
    }
    else if (video.seeking && Date.now() - seekingSince > 1000 && !inside()) jumpToNextRange(video);
  }, 200);
}

/** Moves the play head to the start of what the buffer holds next, if that is within [`MAX_GAP_SECONDS`]. */
function jumpToNextRange(video) {
  const { buffered, currentTime } = video;
  for (let i = 0; i < buffered.length; i += 1) {
    const start = buffered.start(i);
    if (start > currentTime && start - currentTime < MAX_GAP_SECONDS) {
      video.currentTime = start + 0.01;
      return;
    }
  }
}

/** Waits until something may have changed what the player needs: it plays on, seeks, or a second passes. */
function change(video) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      video.removeEventListener('timeupdate', done);
      video.removeEventListener('seeking', done);
      resolve();
    };
    const timer = setTimeout(done, 1000);
    video.addEventListener('timeupdate', done);
    video.addEventListener('seeking', done);
  });
}

/** Where a segment just appended at `start` ends on the timeline: where the next one goes. */
function endOf(source, buffer, start) {
  // The media source's duration is the end of the furthest track (the buffer holds only what every track has, so
  // its ranges end where the first track does); a segment appended for the first time is the furthest.
  if (Number.isFinite(source.duration) && source.duration > start) return source.duration;
  const { buffered } = buffer;
  let end = start;
  for (let i = 0; i < buffered.length; i += 1) {
    if (buffered.start(i) < start + MAX_GAP_SECONDS) end = Math.max(end, buffered.end(i));
  }
  return end;
}

/**
 * Plays `urls` (the segments, in order) in `video` as one recording. `progress(loaded)` is told how many segments
 * have been in the player. Resolves once every segment has been in (or the player was removed); throws an ApiError
 * when the gateway refuses a segment before that.
 *
 * The player holds what lies from `behind` seconds before the playing position to about `ahead` seconds after it.
 * Each segment keeps its place on the timeline (its span, learnt when it first comes in), so a segment dropped
 * earlier is fetched again and put back in its place (`timestampOffset`) when playing or seeking reaches it, for
 * as long as the video is in the page; a refusal then goes to `failed(error)`, and the player keeps what it has.
 */
export async function playWhole(video, urls, progress = () => {}, options = {}) {
  const { failed = () => {}, ahead = AHEAD_SECONDS, behind = BEHIND_SECONDS } = options;
  if (!urls.length) return;
  let first = await fetchSegment(urls[0]);
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
  jumpGaps(video);
  /** [start, end] on the timeline of each segment that has been in the player, in order. */
  const spans = [];
  /** The segments in the buffer now. */
  const held = new Set();
  /** Segments fetched again since the last seek because the buffer lacked their part at the play head. */
  const mended = new Set();
  video.addEventListener('seeking', () => mended.clear());

  /** Whether the buffer has what plays at `at` (or is at most half a second past the end of a range: a seam). */
  const covered = (at) => {
    const { buffered } = video;
    for (let r = 0; r < buffered.length; r += 1) {
      if (buffered.start(r) <= at + 0.05 && buffered.end(r) > at - 0.5) return true;
    }
    return false;
  };

  /** The segment to fetch next: one that playing needs within `ahead` and that the buffer lacks. */
  const wanted = () => {
    const at = video.currentTime;
    // A segment held whose part at the play head the buffer lacks (a track of it cut short) is put in again, once
    // a seek.
    const here = spans.findIndex(([start, end]) => start <= at && at < end);
    if (here >= 0 && held.has(here) && !mended.has(here) && video.seeking && !covered(at)) {
      mended.add(here);
      held.delete(here);
      return here;
    }
    for (let i = 0; i < spans.length; i += 1) {
      if (spans[i][1] > at && spans[i][0] < at + ahead && !held.has(i)) return i;
    }
    const known = spans.length ? spans[spans.length - 1][1] : 0;
    return spans.length < urls.length && known < at + ahead ? spans.length : null;
  };

  /** Drops the segments far from the playing position, so memory stays bounded however long the recording. */
  const trim = async () => {
    const at = video.currentTime;
    for (const i of [...held].sort((a, b) => a - b)) {
      const [start, end] = spans[i];
      if ((end < at - behind || start > at + 2 * ahead) && end > start) {
        buffer.remove(start, end);
        await once(buffer, 'updateend');
        held.delete(i);
      }
    }
  };

  let settle;
  const allIn = new Promise((resolve, reject) => {
    settle = { resolve, reject };
  });
  let settled = false;
  const keep = async () => {
    while (video.isConnected) {
      const i = wanted();
      if (i == null) {
        if (spans.length === urls.length) {
          if (!settled) {
            settled = true;
            settle.resolve();
          }
          if (source.readyState === 'open' && held.has(urls.length - 1)) source.endOfStream();
        }
        await change(video);
        continue;
      }
      const bytes = i === 0 && first ? first : await fetchSegment(urls[i]);
      first = null;
      if (!video.isConnected) break;
      await trim();
      const start = i < spans.length ? spans[i][0] : (spans[spans.length - 1]?.[1] ?? 0);
      // In "sequence" mode this is where the segment's first frame goes, whatever its own timestamps say.
      buffer.timestampOffset = start;
      buffer.appendBuffer(bytes);
      await once(buffer, 'updateend');
      held.add(i);
      if (i === spans.length) {
        spans.push([start, endOf(source, buffer, start)]);
        progress(spans.length);
        if (i === 0) video.play().catch(() => {});
      }
    }
    if (!settled) {
      settled = true;
      settle.resolve();
    }
  };
  keep().catch((error) => {
    if (settled) {
      failed(error);
    } else {
      settled = true;
      settle.reject(error);
    }
  });
  return allIn;
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
