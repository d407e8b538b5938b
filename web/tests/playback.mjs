// The portal player's watchdog (web/src/lib/playback.js, keepPlaying) against a stand-in for a video element that
// stalls on command, run by node (crates/server/tests/web_playback.rs). A real Chromium stalls only now and then,
// on a loaded machine (the story test says how often it was moved on); here each case makes it stall, and checks
// what the watchdog does about it: where it seeks, what it counts as skipped, and when it leaves the player alone.
//
// Real time runs (the watchdog looks every 200 ms and waits 1.5 s of standing still), so the checks are on the
// seeks made, in order, never on how long they took.
import assert from 'node:assert/strict';
import { keepPlaying } from '../src/lib/playback.js';

// Browsers have CustomEvent; Node has it as a global only from 19 (Debian 12 ships Node 18): the DOM's definition,
// an Event with a detail, for the watchdog's `custodia-skipped`.
globalThis.CustomEvent ??= class CustomEvent extends Event {
  constructor(type, options = {}) {
    super(type, options);
    this.detail = options.detail ?? null;
  }
};

/** A video element as keepPlaying sees it: buffered ranges, a play head that moves only when told to. */
class StandIn extends EventTarget {
  constructor(ranges, at) {
    super();
    this.ranges = ranges;
    this.time = at;
    this.paused = false;
    this.ended = false;
    this.seeking = false;
    this.isConnected = true;
    this.dataset = {};
    this.seeks = [];
    this.skips = [];
    this.addEventListener('custodia-skipped', (event) => this.skips.push(event.detail));
  }

  get buffered() {
    const { ranges } = this;
    return { length: ranges.length, start: (i) => ranges[i][0], end: (i) => ranges[i][1] };
  }

  get currentTime() {
    return this.time;
  }

  /** A seek: recorded, and announced as a browser does. It completes at once (the play head stays stalled). */
  set currentTime(time) {
    this.time = time;
    this.seeks.push(Number(time.toFixed(3)));
    this.dispatchEvent(new Event('seeking'));
  }

  /** Stops the watchdog (an element taken out of the page). */
  remove() {
    this.isConnected = false;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `done()` or `ms` have passed; whether it became true. */
async function until(done, ms) {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) await sleep(50);
  return done();
}

const cases = [];
function test(name, run) {
  cases.push({ name, run });
}

test('a stalled player with media ahead is sought where it stands, then moved on 0.04, 0.1 and 0.2 s, then left alone', async () => {
  const video = new StandIn([[0, 30]], 5);
  keepPlaying(video);
  assert.ok(await until(() => video.seeks.length >= 4, 30_000), `seeks: ${video.seeks}`);
  // Four tries, and no fifth: the next would come 1.5 s after the last.
  await sleep(3_000);
  video.remove();
  assert.deepEqual(video.seeks, [5, 5.04, 5.14, 5.34]);
  assert.equal(video.dataset.movedOn, '4');
  assert.equal(video.dataset.skipped, '0.340');
  assert.deepEqual(video.skips.map(({ at, seconds }) => [Number(at.toFixed(3)), Number(seconds.toFixed(3))]),
    [[5, 0.04], [5.04, 0.1], [5.14, 0.2]]);
});

test('a seek by someone else gives the tries back', async () => {
  const video = new StandIn([[0, 30]], 5);
  keepPlaying(video);
  assert.ok(await until(() => video.seeks.length >= 4, 30_000), `seeks: ${video.seeks}`);
  video.currentTime = 12;
  assert.ok(await until(() => video.seeks.length >= 6, 30_000), `seeks: ${video.seeks}`);
  video.remove();
  assert.deepEqual(video.seeks.slice(4, 6), [12, 12]);
});

test('playing on for two seconds gives the tries back; a little play does not', async () => {
  const video = new StandIn([[0, 30]], 5);
  keepPlaying(video);
  assert.ok(await until(() => video.seeks.length >= 4, 30_000), `seeks: ${video.seeks}`);
  // A frame's worth of play, then stalled again: the tries are spent.
  video.time = 5.4;
  await sleep(2_500);
  assert.equal(video.seeks.length, 4, `seeks: ${video.seeks}`);
  // Two seconds and more past the last nudge, then stalled: tried again from a seek where it stands.
  video.time = 7.5;
  assert.ok(await until(() => video.seeks.length >= 5, 30_000), `seeks: ${video.seeks}`);
  video.remove();
  assert.equal(video.seeks[4], 7.5);
});

test('a player waiting for media it does not hold, paused or ended, is never moved', async () => {
  const starved = new StandIn([[0, 5.5]], 5);
  const paused = Object.assign(new StandIn([[0, 30]], 5), { paused: true });
  const ended = Object.assign(new StandIn([[0, 30]], 30), { ended: true });
  for (const video of [starved, paused, ended]) keepPlaying(video);
  await sleep(4_000);
  for (const video of [starved, paused, ended]) {
    video.remove();
    assert.deepEqual(video.seeks, []);
    assert.equal(video.dataset.skipped, undefined);
  }
});

test('stalled in a sliver of media before another hole, the player is moved on to where media is held', async () => {
  // Held: up to the seam, a sliver after it, then the rest from 5.1 on. Stalled at 5.01, in the sliver.
  const video = new StandIn([[0, 4.99], [5.0, 5.03], [5.1, 30]], 5.01);
  video.seeking = true;
  keepPlaying(video);
  assert.ok(await until(() => video.seeks.length >= 1, 30_000), `seeks: ${video.seeks}`);
  video.remove();
  // Neither a seek where it stands nor 0.04 s on holds a second ahead; 0.1 s on does, and is counted.
  assert.deepEqual(video.seeks, [5.11]);
  assert.equal(video.dataset.movedOn, '1');
  assert.equal(video.dataset.skipped, '0.100');
});

test('a hole at a seam is jumped, and not counted as skipped past a stall', async () => {
  const video = new StandIn([[0, 5.05], [5.3, 30]], 5);
  keepPlaying(video);
  assert.ok(await until(() => video.seeks.length >= 1, 30_000), `seeks: ${video.seeks}`);
  video.remove();
  assert.equal(video.seeks[0], 5.31);
  assert.equal(video.dataset.skipped, undefined);
});

let failed = 0;
await Promise.all(cases.map(async ({ name, run }) => {
  try {
    await run();
    console.log(`ok: ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAILED: ${name}\n${err.stack}`);
  }
}));
console.log(failed ? `playback: ${failed} of ${cases.length} failed` : `playback: all ${cases.length} passed`);
process.exit(failed ? 1 : 0);
