// The hearing room client shared by the court console and the witness page: the room's WebSocket
// (docs/hearing-room.md) and one RTCPeerConnection to the gateway.
//
// The offer carries our own microphone and camera on its first audio and video m-lines, then one
// receive-only (audio, video) pair per slot; the participant with "slot": n arrives on pair n.
// After a dropped network the room reconnects by itself with the `rejoin` credential from `welcome`.
//
// Nothing fails silently: the socket is pinged, so a dead link is noticed within seconds and rejoined; a peer
// connection that fails (ICE or DTLS), brings nothing in while others are sending, or whose media the gateway
// says it no longer receives, is replaced by a new one (a new offer), and the page is told (`onMedia`).

const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000];
// A hearing moving to another gateway is taken over within a lease's expiry (15 s) and a look (5 s): the page tries
// again every few seconds for about a minute, then says so and stops.
const ELSEWHERE_DELAY_MS = 5000;
const ELSEWHERE_TRIES = 12;
// A backend the gateway needs is unavailable (its database restarting, say): the page tries again, less and less
// often, for about five minutes, then says so and stops.
const UNAVAILABLE_DELAYS_MS = [1000, 2000, 4000, 8000, 15000];
const UNAVAILABLE_TRIES = 24;

/**
 * Refusals of a join or rejoin that used nothing up (docs/hearing-room.md): the same join is tried again after a
 * while, at most so many times in a row.
 */
const RETRIED_REFUSALS = new Map([
  ['served_elsewhere', { tries: ELSEWHERE_TRIES, delay: () => ELSEWHERE_DELAY_MS }],
  [
    'unavailable',
    {
      tries: UNAVAILABLE_TRIES,
      delay: (tried) => UNAVAILABLE_DELAYS_MS[Math.min(tried, UNAVAILABLE_DELAYS_MS.length - 1)],
    },
  ],
]);
/** The socket is pinged this often; the gateway answers `pong`. */
const PING_EVERY_MS = 5000;
/** A socket that has brought nothing (not even a pong) for this long is dead. */
const SILENCE_LIMIT_MS = 12000;
/** How long a peer connection may stay `disconnected` before it is replaced. */
const DISCONNECTED_LIMIT_MS = 4000;
/** How long incoming media may stop, while others in our room are sending, before the connection is replaced. */
const INBOUND_STALL_MS = 10000;
/** At most one new peer connection this often, so that a network that is down is not flooded with offers. */
const MEDIA_RETRY_MS = 10000;

/**
 * @typedef {object} RoomHandlers
 * @property {(welcome: object) => void} [onWelcome]
 * @property {(state: object) => void} [onState]
 * @property {(slots: MediaStream[]) => void} [onSlots] the receive streams, one per slot, after each (re)connection
 * @property {(refusal: {action?: string, reason: string}) => void} [onRefused] an action (with `action`) or the join itself
 * @property {(status: 'connecting'|'connected'|'reconnecting'|'closed') => void} [onConnection]
 * @property {() => void} [onEnded]
 * @property {() => void} [onRemoved]
 * @property {() => void} [onReplaced] the same participant took part from another page
 * @property {(status: 'flowing'|'interrupted'|'reconnecting'|'not_received') => void} [onMedia] our media connection:
 *   flowing; interrupted (the browser lost it, may come back); reconnecting (a new connection is being made);
 *   not_received (the gateway says our video and sound do not reach it)
 * @property {(error: Error) => void} [onError]
 * @property {(text: {kind: string, language: string, words: string, sha256: string}) => void} [onText] the court's
 *   words shown to us (or, for the judge, to the person told or sworn), as the minutes record them
 */

/** What our own video is held to in data-saver mode. */
const SAVER_VIDEO_BITRATE = 250_000;
const SAVER_VIDEO_FRAMERATE = 15;

export class Room {
  /**
   * @param {MediaStream|null} media our own camera and microphone (either may be missing)
   * @param {RoomHandlers} handlers
   */
  constructor(media, handlers = {}) {
    this.media = media;
    this.handlers = handlers;
    this.socket = null;
    this.pc = null;
    this.credential = null;
    this.welcome = null;
    this.state = null;
    this.slotStreams = [];
    this.finished = false;
    this.attempt = 0;
    /** Tries of a first join whose socket never opened ([`connect`]). */
    this.firstTries = 0;
    this.retryTimer = null;
    /** How long to wait, once the server closes the socket, before the same join is tried again (a refusal that
     * used nothing up, RETRIED_REFUSALS); null: not to try it again that way. */
    this.retryAfterClose = null;
    /** Joins refused that way, in a row. */
    this.refusedTries = 0;
    this.dataSaver = false;
    this.language = null;
    this.keepalive = null;
    this.lastHeard = 0;
    this.inboundWatch = null;
    this.mediaTimer = null;
    this.lastMediaRestart = 0;
    this.onOnline = () => this.retryNow();
    window.addEventListener('online', this.onOnline);
  }

  /** Takes part with an invite's secret (usable once). */
  join(secret) {
    this.connect({ type: 'join', invite: secret, ...this.languageField() });
  }

  /** Takes part again as the same participant, with the credential from an earlier `welcome`. */
  rejoin(credential) {
    this.credential = credential;
    this.connect({ type: 'rejoin', credential, ...this.languageField() });
  }

  /**
   * The language this page speaks (a two-letter code), said on joining and rejoining: the court shows the rights
   * notice and the oath in it unless the judge chooses another.
   */
  setLanguage(code) {
    this.language = /^[a-z]{2}$/.test(code ?? '') ? code : null;
  }

  languageField() {
    return this.language ? { language: this.language } : {};
  }

  /** Sends one action (admit, mute, start_recording…); the answer comes as a new `state` or a refusal. */
  send(message) {
    if (this.socket?.readyState !== WebSocket.OPEN) {
      this.handlers.onRefused?.({ action: message.type, problem: 'not_connected', reason: 'not connected to the hearing; trying again' });
      return false;
    }
    this.socket.send(JSON.stringify(message));
    return true;
  }

  /** Leaves the hearing for good. */
  leave() {
    if (this.finished) return;
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ type: 'leave' }));
    this.finish('closed');
  }

  /**
   * Data saver, for a phone on a poor network: take video only from the court (judge and clerk), audio from
   * everyone, and send our own video at a low rate. The gateway keeps it across reconnections only as long as this
   * page re-sends it, which it does after every offer and every change of who is present.
   */
  setDataSaver(on) {
    this.dataSaver = on;
    this.applyDataSaver();
  }

  applyDataSaver() {
    if (this.socket?.readyState !== WebSocket.OPEN || !this.state) return;
    const court = (this.state.participants ?? []).filter((p) => ['judge', 'clerk'].includes(p.role)).map((p) => p.slot);
    const slots = this.dataSaver ? court : null;
    const wanted = JSON.stringify(slots);
    if (wanted !== this.videoWanted) {
      this.videoWanted = wanted;
      this.socket.send(JSON.stringify({ type: 'receive_video', slots }));
    }
    const sender = this.pc?.getSenders().find((s) => s.track?.kind === 'video');
    if (!sender) return;
    const parameters = sender.getParameters();
    if (!parameters.encodings?.length) return;
    for (const encoding of parameters.encodings) {
      if (this.dataSaver) {
        encoding.maxBitrate = SAVER_VIDEO_BITRATE;
        encoding.maxFramerate = SAVER_VIDEO_FRAMERATE;
      } else {
        delete encoding.maxBitrate;
        delete encoding.maxFramerate;
      }
    }
    sender.setParameters(parameters).catch(() => {});
  }

  /** Replaces the media we send (the next offer carries it). */
  setMedia(media) {
    this.media = media;
  }

  connect(first) {
    clearTimeout(this.retryTimer);
    clearInterval(this.keepalive);
    this.handlers.onConnection?.(this.attempt === 0 ? 'connecting' : 'reconnecting');
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/room`);
    this.socket = socket;
    let opened = false;
    socket.addEventListener('open', () => {
      opened = true;
      socket.send(JSON.stringify(first));
      this.lastHeard = Date.now();
      this.keepalive = setInterval(() => this.ping(socket), PING_EVERY_MS);
    });
    socket.addEventListener('message', (event) => {
      if (socket !== this.socket) return;
      this.lastHeard = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.receive(message).catch((error) => this.handlers.onError?.(error));
    });
    socket.addEventListener('close', () => {
      if (socket !== this.socket || this.finished) return;
      if (this.retryAfterClose !== null) {
        const delay = this.retryAfterClose;
        this.retryAfterClose = null;
        clearInterval(this.keepalive);
        this.handlers.onConnection?.('reconnecting');
        const again = this.credential ? { type: 'rejoin', credential: this.credential, ...this.languageField() } : first;
        this.retryTimer = setTimeout(() => this.connect(again), delay);
        return;
      }
      // Refused before it opened (a gateway busy with waiting sockets answers 503): the join was never sent, so
      // the invite is unused and the same join is tried again, a few times, before the page gives up.
      if (!opened && !this.credential && this.firstTries < RETRY_DELAYS_MS.length) {
        const delay = RETRY_DELAYS_MS[this.firstTries];
        this.firstTries += 1;
        this.handlers.onConnection?.('reconnecting');
        this.retryTimer = setTimeout(() => this.connect(first), delay);
        return;
      }
      this.lost();
    });
  }

  /** Pings the gateway; a socket silent for too long is given up and the room rejoined. */
  ping(socket) {
    if (socket !== this.socket || this.finished) {
      return;
    }
    if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
      // A dead link may take minutes to close by itself: let it go now and come back on a new socket.
      clearInterval(this.keepalive);
      this.socket = null;
      socket.close();
      this.lost();
      return;
    }
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'ping' }));
  }

  async receive(message) {
    switch (message.type) {
      case 'pong':
        break;
      case 'welcome':
        this.attempt = 0;
        this.refusedTries = 0;
        this.welcome = message;
        this.credential = message.credential;
        this.handlers.onConnection?.('connected');
        this.handlers.onWelcome?.(message);
        await this.negotiate();
        break;
      case 'state':
        // docs/hearing-room.md names our own id `you.participant`; the gateway sends the participant entry (`id`).
        message.you = { ...(message.you ?? {}) };
        message.you.participant ??= message.you.id ?? this.welcome?.participant;
        this.state = message;
        this.applyDataSaver();
        this.handlers.onState?.(message);
        if (message.you.media_stopped && this.sending()) {
          // The gateway receives nothing from us although we send: our connection is broken on the way.
          this.handlers.onMedia?.('not_received');
          this.restartMedia();
        }
        break;
      case 'answer':
        if (this.pc && this.pc.signalingState === 'have-local-offer') {
          await this.pc.setRemoteDescription({ type: 'answer', sdp: message.sdp });
          // A new connection starts from the gateway's defaults: say again what we take.
          this.videoWanted = undefined;
          this.applyDataSaver();
        }
        break;
      case 'refused':
        if (message.action) {
          this.handlers.onRefused?.(message);
        } else if (this.refusedTries < (RETRIED_REFUSALS.get(message.problem)?.tries ?? 0)) {
          // The hearing is moving to another gateway (the one that held it stopped), or a backend the gateway
          // needs is unavailable for now: nothing was used up, and the same join or rejoin is tried again when the
          // server closes this socket.
          this.retryAfterClose = RETRIED_REFUSALS.get(message.problem).delay(this.refusedTries);
          this.refusedTries += 1;
        } else {
          // The join or rejoin itself was refused; the server closes the socket.
          this.finish('closed');
          this.handlers.onRefused?.(message);
        }
        break;
      case 'ended':
        this.finish('closed');
        this.handlers.onEnded?.();
        break;
      case 'removed':
        this.finish('closed');
        this.handlers.onRemoved?.();
        break;
      case 'replaced':
        // The same participant connected again elsewhere (another tab or device); this page steps aside.
        this.finish('closed');
        this.handlers.onReplaced?.();
        break;
      case 'error':
        this.handlers.onError?.(new Error(message.detail ?? 'the hearing room could not do that'));
        break;
      case 'text':
        // The court's words, as recorded: a rights notice, an oath or an affirmation.
        this.handlers.onText?.(message);
        break;
      default:
        break;
    }
  }

  /** Whether we have a live microphone or camera to send. */
  sending() {
    return Boolean(this.media?.getTracks().some((track) => track.readyState === 'live'));
  }

  /** Replaces the peer connection with a new one (a new offer); at most once every MEDIA_RETRY_MS. */
  restartMedia() {
    if (this.finished || this.socket?.readyState !== WebSocket.OPEN) return;
    const wait = this.lastMediaRestart + MEDIA_RETRY_MS - Date.now();
    clearTimeout(this.mediaTimer);
    if (wait > 0) {
      this.mediaTimer = setTimeout(() => this.restartMedia(), wait);
      return;
    }
    this.lastMediaRestart = Date.now();
    this.handlers.onMedia?.('reconnecting');
    this.negotiate().catch((error) => this.handlers.onError?.(error));
  }

  /** Follows a peer connection's health: failed, or disconnected for too long, means a new one. */
  watchMedia(pc) {
    pc.addEventListener('connectionstatechange', () => {
      if (pc !== this.pc) return;
      const state = pc.connectionState;
      if (state === 'connected') {
        clearTimeout(this.mediaTimer);
        this.handlers.onMedia?.('flowing');
      } else if (state === 'failed') {
        this.restartMedia();
      } else if (state === 'disconnected') {
        this.handlers.onMedia?.('interrupted');
        clearTimeout(this.mediaTimer);
        this.mediaTimer = setTimeout(() => {
          if (pc === this.pc && pc.connectionState !== 'connected') this.restartMedia();
        }, DISCONNECTED_LIMIT_MS);
      }
    });
    // Incoming media that stops while someone in our room is sending: the connection is broken on the way to us.
    clearInterval(this.inboundWatch);
    let received = -1;
    let since = Date.now();
    this.inboundWatch = setInterval(async () => {
      if (pc !== this.pc) return;
      const you = this.state?.you ?? {};
      const senders = (this.state?.participants ?? []).filter((p) => p.id !== you.participant
        && ['main_room', 'consultation'].includes(p.place) && p.place === you.place && p.consultation === you.consultation
        && p.connected !== false && !p.media_stopped);
      let packets = 0;
      try {
        (await pc.getStats()).forEach((report) => {
          if (report.type === 'inbound-rtp') packets += report.packetsReceived ?? 0;
        });
      } catch {
        return;
      }
      if (packets !== received || !senders.length || !['main_room', 'consultation'].includes(you.place)) {
        received = packets;
        since = Date.now();
      } else if (Date.now() - since > INBOUND_STALL_MS) {
        since = Date.now();
        this.handlers.onMedia?.('interrupted');
        this.restartMedia();
      }
    }, 2000);
  }

  /** A new peer connection and a complete (non-trickle) offer. */
  async negotiate() {
    this.pc?.close();
    const pc = new RTCPeerConnection({ iceServers: this.welcome?.ice_servers ?? [] });
    this.pc = pc;
    this.watchMedia(pc);
    const audio = this.media?.getAudioTracks()[0];
    const video = this.media?.getVideoTracks()[0];
    const streams = this.media ? [this.media] : [];
    preferCodec(pc.addTransceiver(audio ?? 'audio', { direction: audio ? 'sendonly' : 'inactive', streams }), 'audio');
    preferCodec(pc.addTransceiver(video ?? 'video', { direction: video ? 'sendonly' : 'inactive', streams }), 'video');
    const slots = Number(this.welcome?.slots ?? 0);
    this.slotStreams = [];
    for (let n = 0; n < slots; n += 1) {
      const heard = preferCodec(pc.addTransceiver('audio', { direction: 'recvonly' }), 'audio');
      const seen = preferCodec(pc.addTransceiver('video', { direction: 'recvonly' }), 'video');
      this.slotStreams.push(new MediaStream([heard.receiver.track, seen.receiver.track]));
    }
    this.handlers.onSlots?.(this.slotStreams);
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, 5000);
    if (pc !== this.pc) return;
    this.send({ type: 'offer', sdp: pc.localDescription.sdp });
  }

  lost() {
    clearInterval(this.keepalive);
    clearInterval(this.inboundWatch);
    clearTimeout(this.mediaTimer);
    this.pc?.close();
    this.pc = null;
    if (!this.credential) {
      this.finish('closed');
      this.handlers.onRefused?.({ reason: 'the connection to the hearing was lost before it was accepted' });
      return;
    }
    this.handlers.onConnection?.('reconnecting');
    const delay = RETRY_DELAYS_MS[Math.min(this.attempt, RETRY_DELAYS_MS.length - 1)];
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect({ type: 'rejoin', credential: this.credential, ...this.languageField() }), delay);
  }

  retryNow() {
    if (this.finished || !this.credential || this.socket?.readyState === WebSocket.OPEN) return;
    if (this.socket?.readyState === WebSocket.CONNECTING) return;
    this.connect({ type: 'rejoin', credential: this.credential, ...this.languageField() });
  }

  finish(status) {
    this.finished = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.keepalive);
    clearInterval(this.inboundWatch);
    clearTimeout(this.mediaTimer);
    window.removeEventListener('online', this.onOnline);
    this.pc?.close();
    this.pc = null;
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close();
    this.handlers.onConnection?.(status);
  }
}

/** The gateway relays Opus and VP8 without transcoding: offer only those. */
function preferCodec(transceiver, kind) {
  const wanted = kind === 'audio' ? 'audio/opus' : 'video/vp8';
  const codecs = RTCRtpReceiver.getCapabilities?.(kind)?.codecs ?? [];
  const chosen = codecs.filter((codec) => codec.mimeType.toLowerCase() === wanted);
  if (chosen.length && transceiver.setCodecPreferences) transceiver.setCodecPreferences(chosen);
  return transceiver;
}

function gatheringComplete(pc, limitMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, limitMs);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === 'complete') done();
    }
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** Roles in the order a court lists them. */
export const ROLE_ORDER = [
  'judge', 'clerk', 'prosecutor', 'defence', 'accused', 'interpreter', 'witness', 'remote_site_officer', 'observer',
];

/** Starts a microphone/camera preview: returns the stream, or null with the reason, never throws. */
export async function openMedia({ video = true } = {}) {
  if (!navigator.mediaDevices?.getUserMedia) return { stream: null, error: 'unsupported' };
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio: true, video }), error: null };
  } catch (error) {
    if (video) {
      // No camera, or the camera blocked (the person or the browser refused it): try the microphone alone, and
      // say which it was: "no camera found" would send someone with a blocked camera looking for one.
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
        return { stream, error: error?.name === 'NotAllowedError' ? 'camera-blocked' : 'no-camera' };
      } catch {
        /* fall through */
      }
    }
    return { stream: null, error: error?.name === 'NotAllowedError' ? 'denied' : 'no-device' };
  }
}

/** Drives a level bar (0…100, element.style is not used: the value goes to a <meter> or <progress>). */
export function audioLevel(stream, meter) {
  const track = stream?.getAudioTracks()[0];
  if (!track) return () => {};
  const context = new AudioContext();
  const source = context.createMediaStreamSource(new MediaStream([track]));
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const samples = new Uint8Array(analyser.fftSize);
  let running = true;
  const tick = () => {
    if (!running) return;
    analyser.getByteTimeDomainData(samples);
    let peak = 0;
    for (const sample of samples) peak = Math.max(peak, Math.abs(sample - 128));
    meter.value = Math.min(100, Math.round((peak / 128) * 100 * 2));
    requestAnimationFrame(tick);
  };
  context.resume().catch(() => {});
  tick();
  return () => {
    running = false;
    context.close().catch(() => {});
  };
}
