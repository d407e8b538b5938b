"""A protected witness in a recorded hearing, with four aiortc peers (see room_two_party.py): a judge (admitted on
joining), the witness, defence counsel and an observer. The judge has ordered, before anyone joined, that the
witness's face be masked and their voice altered, under a pseudonym; only the court gets the original.

Usage: room_protection.py WS_URL JUDGE_SECRET WITNESS_SECRET DEFENCE_SECRET OBSERVER_SECRET PSEUDONYM NAME

The witness sends a still, detailed picture (a checkerboard of 24-pixel squares over colour bands, 640x360) and a
voiced vowel (a 120 Hz pulse train through three formant resonators). Every video frame each peer decodes from the
witness is compared with that picture (PSNR, dB), and the audio each decodes from the witness is measured by its
spectral centroid (Hz, up to 4 kHz), so the test can tell the original from the masked (luma, every other pixel of every third frame).

Phases, marked on stdout ("mark NAME start" / "mark NAME end") for the test to read the gateway's counters:
- "protected": the order as made; the defence and the observer get the masked feeds.
- "privileged": after the test (reacting to "mark change_order start") lets the defence see the original, which
  the script waits to see in the defence's state (the witness's name instead of the pseudonym).
- "killed": the masking pipelines are killed (their processes, `custodia mask`) as the phase starts.
- "restored": after the masked feeds are back (the room starts new pipelines).
Prints one JSON line: ids, for each phase and receiver the PSNRs of the frames decoded from the witness and the
spectral centroid of the witness's audio, the names each peer was shown for the witness, the witness's own view of
its protection, and the source's own centroid.
"""

import asyncio
import fractions
import json
import os
import subprocess
import sys

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer
from av import AudioFrame, VideoFrame

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from room_two_party import Participant, mark, mono_samples  # noqa: E402

PHASE_SECONDS = 5
SETTLE_SECONDS = 2
WIDTH, HEIGHT = 640, 360
RATE = 48000


def picture():
    """The witness's still picture, as RGB: a 24-pixel checkerboard over six colour bands (detailed, yet a keyframe
    of it is not so large a burst that a busy peer loses it)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    checker = ((x // 24 + y // 24) % 2).astype(np.float32)
    bands = np.array(
        [[230, 60, 60], [60, 200, 60], [60, 60, 230], [230, 230, 60], [60, 220, 220], [220, 60, 220]], np.float32
    )
    colour = bands[(x * 6) // WIDTH]
    image = colour * (0.35 + 0.65 * checker[..., None])
    return image.astype(np.uint8)


PICTURE = picture()
# What a receiver compares: the luma (BT.601, as the encoder's conversion makes it), every other pixel.
LUMA = (16 + (65.481 * PICTURE[..., 0] + 128.553 * PICTURE[..., 1] + 24.966 * PICTURE[..., 2]) / 255.0)[::2, ::2]
# Of the frames each receiver decodes from the witness, every MEASURE_EVERY-th is measured: measuring all of them
# would take the peers' one Python thread from decoding on a busy machine.
MEASURE_EVERY = 3


def vowel(seconds=1.0):
    """One second of a voiced vowel: a 120 Hz glottal pulse train through resonators at 700, 1220 and 2600 Hz."""
    n = int(RATE * seconds)
    signal = np.zeros(n)
    signal[:: RATE // 120] = 1.0
    for formant, bandwidth in ((700, 130), (1220, 70), (2600, 160)):
        r = np.exp(-np.pi * bandwidth / RATE)
        a1, a2 = 2 * r * np.cos(2 * np.pi * formant / RATE), -r * r
        out = np.zeros(n)
        y1 = y2 = 0.0
        for i in range(n):
            y = signal[i] + a1 * y1 + a2 * y2
            out[i] = y
            y2, y1 = y1, y
        signal = out
    signal = signal / np.max(np.abs(signal)) * 0.5
    return (signal * 32767).astype(np.int16)


def centroid(samples):
    """The spectral centroid of mono int16 samples, up to 4 kHz."""
    if len(samples) < RATE // 2:
        return None
    x = samples[-RATE:].astype(np.float64) * np.hanning(min(len(samples), RATE))
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    band = (freqs > 80) & (freqs < 4000)
    power = spectrum[band] ** 2
    return float(np.sum(freqs[band] * power) / np.sum(power)) if np.sum(power) > 0 else None


class Paced(MediaStreamTrack):
    """A generated track sent at its own clock's pace: `make(pts)` makes the frame due at `pts`."""

    def __init__(self, kind, clock_rate, step, make):
        super().__init__()
        self.kind = kind
        self.clock_rate = clock_rate
        self.step = step
        self.make = make
        self.pts = 0
        self.start = None

    async def recv(self):
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        wait = self.start + self.pts / self.clock_rate - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = self.make(self.pts)
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.clock_rate)
        self.pts += self.step
        return frame


def still_picture():
    """The witness's camera: the still picture, 25 frames a second."""
    return Paced("video", 90000, 3600, lambda pts: VideoFrame.from_ndarray(PICTURE, format="rgb24"))


def vowel_track():
    """The witness's microphone: the vowel, over and over, in 20 ms frames."""
    samples = vowel()

    def make(pts):
        offset = pts % len(samples)
        chunk = np.roll(samples, -offset)[:960]
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        return frame

    return Paced("audio", RATE, 960, make)


class Watcher(Participant):
    """A participant who measures what it decodes from the witness's slot."""

    def __init__(self, *args):
        super().__init__(*args)
        self.witness_slot = None
        self.psnr = []  # (loop time, dB)
        self.heard = []  # (loop time, mono int16 samples)

    async def count(self, track, slot, counts):
        while True:
            try:
                frame = await track.recv()
            except Exception as e:
                print(f"{self.name}: slot {slot} {track.kind} ended: {e!r}", file=sys.stderr, flush=True)
                return
            counts[slot] = counts.get(slot, 0) + 1
            if slot != self.witness_slot:
                continue
            now = asyncio.get_running_loop().time()
            if track.kind == "video":
                if counts[slot] % MEASURE_EVERY:
                    continue
                if (frame.width, frame.height) != (WIDTH, HEIGHT):
                    self.psnr.append((now, 0.0))
                    continue
                luma = frame.to_ndarray(format="yuv420p")[:HEIGHT:2, :WIDTH:2].astype(np.float32)
                mse = float(np.mean((luma - LUMA) ** 2))
                self.psnr.append((now, float(10 * np.log10(255.0**2 / max(mse, 1e-9)))))
            else:
                self.heard.append((now, mono_samples(frame)))


def measure(peer, start, end):
    psnr = [db for at, db in peer.psnr if start <= at < end]
    audio = [chunk for at, chunk in peer.heard if start <= at < end]
    return {"psnr": psnr, "centroid": centroid(np.concatenate(audio)) if audio else None}


async def phase(name, peers, report):
    await asyncio.sleep(SETTLE_SECONDS)
    loop = asyncio.get_running_loop()
    await mark(f"{name} start")
    start = loop.time()
    await asyncio.sleep(PHASE_SECONDS)
    end = loop.time()
    await mark(f"{name} end")
    report[name] = {peer.name: measure(peer, start, end) for peer in peers}


def shown_name(peer, witness):
    return next((p.get("name") for p in peer.state["participants"] if p["id"] == witness.id), "<not shown>")


async def main(url, judge_secret, witness_secret, defence_secret, observer_secret, pseudonym, name):
    judge = Watcher("judge", url, judge_secret, "testsrc", 440)
    witness = Participant("witness", url, witness_secret, "testsrc2", 660)
    witness.sent[0].track = vowel_track()
    witness.sent[1].track = still_picture()
    defence = Watcher("defence", url, defence_secret, "testsrc", 550)
    observer = Watcher("observer", url, observer_secret, "testsrc", 330)
    # The others send small pictures: one Python thread encodes and decodes for all four peers.
    for peer in (judge, defence, observer):
        peer.sent[1].track = MediaPlayer("testsrc=size=160x120:rate=10", format="lavfi").video
    peers = [judge, witness, defence, observer]
    watchers = [judge, defence, observer]
    for peer in peers:
        await peer.open()
    await asyncio.gather(*(peer.connect_media() for peer in peers))
    for peer in (witness, defence, observer):
        await judge.send({"type": "admit", "participant": peer.id})
    await judge.until(lambda s: sum(p["place"] == "main_room" for p in s["participants"]) == 4)
    for peer in watchers:
        await peer.until(lambda s: any(p["id"] == witness.id for p in s["participants"]))
        peer.witness_slot = peer.slot_of(witness.id)
        # Each watcher decodes only the witness's video (as a participant on a poor network may ask), the witness
        # nobody's: the measure is of the witness, and the fewer decoders, the less a busy machine starves them.
        await peer.send({"type": "receive_video", "slots": [peer.witness_slot]})
    await witness.send({"type": "receive_video", "slots": []})
    await judge.send({"type": "start_session"})
    await judge.until(lambda s: s["phase"] == "in_session")
    await judge.send({"type": "start_recording"})
    await judge.until(lambda s: s["recording"])
    report = {"names": {}}
    began = asyncio.get_running_loop().time()
    await witness.until(lambda s: s["you"].get("protection") is not None)
    report["witness_sees"] = witness.state["you"]["protection"]
    report["names"]["protected"] = {peer.name: shown_name(peer, witness) for peer in watchers}
    await phase("protected", watchers, report)

    await mark("change_order start")
    await defence.until(lambda s: shown_name(defence, witness) == name, 30)
    await mark("change_order end")
    report["names"]["privileged"] = {peer.name: shown_name(peer, witness) for peer in watchers}
    await phase("privileged", watchers, report)

    # Only this gateway's pipelines: they are children of the test process that started this script, as the
    # gateway runs in it; another test binary's hearings on the same machine are left alone.
    mine = ["pkill", "-KILL", "--parent", str(os.getppid()), "-f", "custodia mask"]
    killed = subprocess.run(mine, check=False).returncode
    report["killed"] = killed == 0
    loop = asyncio.get_running_loop()
    await mark("killed start")
    start = loop.time()
    await asyncio.sleep(1)
    end = loop.time()
    await mark("killed end")
    report["killed_phase"] = {peer.name: measure(peer, start, end) for peer in watchers}
    # The room starts new pipelines after a second; their first masked frames follow a keyframe.
    await phase("restored", watchers, report)

    # The voice over the whole hearing: a busy machine may leave a peer too little time to decode a phase's worth.
    report["whole"] = {peer.name: measure(peer, began, asyncio.get_running_loop().time()) for peer in watchers}
    await judge.send({"type": "end"})
    await asyncio.wait_for(asyncio.gather(*(peer.ended.wait() for peer in peers)), 60)
    for peer in peers:
        await peer.close()
    report["ids"] = {peer.name: peer.id for peer in peers}
    report["source_centroid"] = centroid(vowel())
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
