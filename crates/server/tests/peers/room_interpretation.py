"""Simultaneous interpretation in a recorded hearing, with five aiortc peers (see room_two_party.py): a judge
(admitted on joining), a witness (whose voice a protective order alters for all but the court and the defence), an
interpreter, defence counsel listening to the floor and an observer listening to the Italian channel. Each sends its
own tone, so that what a listener hears tells whose voice it is.

Usage: room_interpretation.py WS_URL JUDGE_SECRET WITNESS_SECRET INTERPRETER_SECRET DEFENCE_SECRET OBSERVER_SECRET

The judge admits everyone, opens the session, records, tries to open a simultaneous channel into Italian for the
interpreter before swearing them in (refused), swears them in and opens it; the observer chooses it. For one phase
("interpreted", marked on stdout for the test to read the gateway's counters) every listener's audio is measured per
sender: how many 20 ms frames it decoded, the dominant frequency and the level (RMS) of what it heard. Then the judge
closes the channel and ends the hearing. Prints one JSON line: ids, the tones, the refusal's problem, and per
listener and sender the frames, the dominant frequency and the level in the phase.
"""

import asyncio
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from room_two_party import Participant, mark, mono_samples  # noqa: E402

PHASE_SECONDS = 5
SETTLE_SECONDS = 2
RATE = 48000
TONES = {"judge": 330, "witness": 660, "interpreter": 880, "defence": 550, "observer": 220}


class Listener(Participant):
    """A participant who keeps the audio it decodes, by slot, with when it came."""

    def __init__(self, *args):
        super().__init__(*args)
        self.heard = {}  # slot -> [(loop time, mono int16 samples)]

    async def count(self, track, slot, counts):
        while True:
            try:
                frame = await track.recv()
            except Exception as e:
                print(f"{self.name}: slot {slot} {track.kind} ended: {e!r}", file=sys.stderr, flush=True)
                return
            counts[slot] = counts.get(slot, 0) + 1
            if track.kind != "audio":
                continue
            self.heard.setdefault(slot, []).append((asyncio.get_running_loop().time(), mono_samples(frame)))

    def measure(self, slot, start, end):
        chunks = [chunk for at, chunk in self.heard.get(slot, []) if start <= at < end]
        if not chunks:
            return {"frames": 0, "dominant": None, "rms": 0.0}
        samples = np.concatenate(chunks).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
        band = freqs > 100
        dominant = float(freqs[band][np.argmax(spectrum[band])]) if np.any(spectrum[band] > 0) else None
        # The level past the first 200 ms (a ducked voice's pipeline may start a moment after the phase).
        steady = samples[len(samples) // 25 :]
        rms = float(np.sqrt(np.mean(steady**2))) if len(steady) else 0.0
        return {"frames": len(chunks), "dominant": dominant, "rms": rms}


async def main(url, judge_secret, witness_secret, interpreter_secret, defence_secret, observer_secret):
    secrets = {
        "judge": judge_secret,
        "witness": witness_secret,
        "interpreter": interpreter_secret,
        "defence": defence_secret,
        "observer": observer_secret,
    }
    peers = {name: Listener(name, url, secret, "testsrc", TONES[name]) for name, secret in secrets.items()}
    judge, interpreter, defence, observer = (peers[n] for n in ("judge", "interpreter", "defence", "observer"))
    for peer in peers.values():
        await peer.open()
    await asyncio.gather(*(peer.connect_media() for peer in peers.values()))
    for peer in peers.values():
        if peer is not judge:
            await judge.send({"type": "admit", "participant": peer.id})
    await judge.until(lambda s: sum(p["place"] == "main_room" for p in s["participants"]) == len(peers))
    # Nobody's video: the measure is of the audio, and a busy machine's one Python thread has less to decode.
    for peer in peers.values():
        await peer.send({"type": "receive_video", "slots": []})
    await judge.send({"type": "start_session"})
    await judge.until(lambda s: s["phase"] == "in_session")
    await judge.send({"type": "start_recording"})
    await judge.until(lambda s: s["recording"])
    open_channel = {"type": "open_channel", "interpreter": interpreter.id, "language": "it", "mode": "simultaneous"}
    # Not before the interpreter is sworn in.
    await judge.send(open_channel)
    unsworn = await asyncio.wait_for(judge.replies.get(), 30)
    await judge.send({"type": "present_text", "person": interpreter.id, "wording": "interpreter_oath"})
    await judge.send({"type": "swear_interpreter", "interpreter": interpreter.id, "languages": "en / it"})
    await judge.send(open_channel)
    await observer.until(lambda s: any(c["language"] == "it" for c in s.get("channels", [])))
    await observer.send({"type": "choose_channel", "language": "it"})
    await observer.until(lambda s: s["you"].get("listening") == "it")
    report = {"channels_seen": observer.state["channels"], "unsworn": unsworn}

    await asyncio.sleep(SETTLE_SECONDS)
    loop = asyncio.get_running_loop()
    await mark("interpreted start")
    start = loop.time()
    await asyncio.sleep(PHASE_SECONDS)
    end = loop.time()
    await mark("interpreted end")
    senders = {name: peer for name, peer in peers.items()}
    report["interpreted"] = {
        listener.name: {
            name: listener.measure(listener.slot_of(sender.id), start, end)
            for name, sender in senders.items()
            if sender is not listener
        }
        for listener in (defence, observer, interpreter)
    }

    await judge.send({"type": "close_channel", "language": "it"})
    await observer.until(lambda s: not s.get("channels"))
    await judge.send({"type": "end"})
    await asyncio.wait_for(asyncio.gather(*(peer.ended.wait() for peer in peers.values())), 60)
    for peer in peers.values():
        await peer.close()
    report["ids"] = {name: peer.id for name, peer in peers.items()}
    report["tones"] = TONES
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
