"""Two people in a hearing room, each an aiortc peer (a WebRTC stack none of us wrote), following
docs/hearing-room.md: a judge with an admit-on-join invite and a witness who waits in the lobby.

Usage: room_two_party.py WS_URL JUDGE_SECRET WITNESS_SECRET SECONDS

Both join and connect media at once. For a few seconds the witness waits in the lobby, and the frames each side
receives from the other are counted (there must be none). The judge admits the witness, opens the session and starts
recording; for SECONDS the frames each decodes from the other are counted. Then the witness asks for nobody's video
(a phone on a poor network) and the frames are counted again for a few seconds. The judge then ends the hearing.
The measured periods are marked on stdout as they start and end ("mark admitted start", "mark data_saver end"...),
so that the test can read the gateway's own counters at those moments. Prints one JSON line with the counts, the participants' ids, and for each participant how much media they sent
(in seconds of their own media clock, audio and video) from when the judge asked for the recording to when the
hearing ended ("recording_at_most") and from when the judge saw it start to when the judge asked for the end
("recording_at_least"): a recording can hold no more than the first and holds nearly all of the second. On a busy
machine the peers send less than real time, and that is what can be recorded.
"""

import asyncio
import json
import logging
import os
import sys

import websockets
from aiortc import MediaStreamTrack, RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

LOBBY_SECONDS = 4
SAVER_SETTLE_SECONDS = 1
SAVER_SECONDS = 4



async def mark(name):
    """Prints "mark NAME" for the test, which reads the gateway's counters at that moment, and waits for its word
    that it has (a line on stdin), so that nothing done next (a change of who receives whom) reaches the counters
    first. Run by hand with stdin at its end (`< /dev/null`), it goes straight on."""
    print(f"mark {name}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

class Sent(MediaStreamTrack):
    """A track as it is sent, keeping the media time of the last frame handed to the sender."""

    def __init__(self, track):
        super().__init__()
        self.kind = track.kind
        self.track = track
        self.media_time = 0.0

    async def recv(self):
        frame = await self.track.recv()
        self.media_time = float(frame.pts * frame.time_base)
        return frame


def mono_samples(frame):
    """A decoded audio frame's samples as mono int16 (numpy, imported only by the scripts that measure sound)."""
    import numpy as np

    pcm = frame.to_ndarray()
    channels = len(frame.layout.channels)
    mono = pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm.reshape(-1)
    return mono.astype(np.int16)


class Participant:
    def __init__(self, name, url, secret, pattern, tone):
        self.name = name
        self.url = url
        self.secret = secret
        self.video = MediaPlayer(f"{pattern}=size=320x240:rate=25", format="lavfi")
        self.audio = MediaPlayer(f"sine=frequency={tone}:sample_rate=48000", format="lavfi")
        self.sent = [Sent(self.audio.audio), Sent(self.video.video)]
        # One transport for every m-line, as browsers do (aiortc's default gathers per media kind).
        self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.frames = {}  # slot -> decoded video frames
        self.audio_frames = {}
        self.state = None
        self.states = asyncio.Queue()
        self.replies = asyncio.Queue()
        self.ended = asyncio.Event()

    async def open(self):
        self.ws = await websockets.connect(self.url, max_size=2**20)
        await self.ws.send(json.dumps({"type": "join", "invite": self.secret}))
        welcome = json.loads(await self.ws.recv())
        assert welcome["type"] == "welcome", welcome
        self.id = welcome["participant"]
        self.credential = welcome["credential"]
        self.slots = welcome["slots"]
        asyncio.ensure_future(self.read())

    async def read(self):
        async for text in self.ws:
            message = json.loads(text)
            kind = message["type"]
            if kind == "state":
                self.state = message
                await self.states.put(message)
            elif kind == "ended":
                self.ended.set()
            elif kind in ("answer", "refused", "error"):
                await self.replies.put(message)
        self.ended.set()

    async def connect_media(self):
        for track in self.sent:
            self.pc.addTransceiver(track, direction="sendonly")
        receivers = []
        for _ in range(self.slots):
            receivers.append(self.pc.addTransceiver("audio", direction="recvonly"))
            receivers.append(self.pc.addTransceiver("video", direction="recvonly"))

        @self.pc.on("track")
        def on_track(track):
            for index, transceiver in enumerate(receivers):
                if transceiver.receiver.track is track:
                    slot = index // 2
                    counts = self.frames if track.kind == "video" else self.audio_frames
                    asyncio.ensure_future(self.count(track, slot, counts))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.ws.send(json.dumps({"type": "offer", "sdp": self.pc.localDescription.sdp}))
        answer = await asyncio.wait_for(self.replies.get(), 30)
        assert answer["type"] == "answer", answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    async def count(self, track, slot, counts):
        while True:
            try:
                await track.recv()
            except Exception as e:
                print(f"{self.name}: slot {slot} {track.kind} ended: {e!r}", file=sys.stderr, flush=True)
                return
            counts[slot] = counts.get(slot, 0) + 1
            if counts[slot] == 1:
                print(f"{self.name}: first {track.kind} frame on slot {slot}", file=sys.stderr, flush=True)

    async def send(self, message):
        await self.ws.send(json.dumps(message))

    async def until(self, predicate, seconds=20):
        async def wait():
            while self.state is None or not predicate(self.state):
                await self.states.get()

        await asyncio.wait_for(wait(), seconds)

    def slot_of(self, participant):
        return next(p["slot"] for p in self.state["participants"] if p["id"] == participant)

    def media_time(self):
        """Seconds of audio and of video sent so far, by the media's own clock."""
        return [track.media_time for track in self.sent]

    def frames_from(self, other):
        slot = self.slot_of(other.id)
        return self.frames.get(slot, 0), self.audio_frames.get(slot, 0)

    async def close(self):
        await self.pc.close()
        await self.ws.close()


async def main(url, judge_secret, witness_secret, seconds):
    judge = Participant("judge", url, judge_secret, "testsrc", 440)
    witness = Participant("witness", url, witness_secret, "testsrc2", 660)
    await judge.open()
    await witness.open()
    await judge.until(lambda s: any(p["id"] == witness.id and p["place"] == "lobby" for p in s["participants"]))
    await asyncio.gather(judge.connect_media(), witness.connect_media())
    await asyncio.sleep(LOBBY_SECONDS)
    lobby = {"judge_from_witness": judge.frames_from(witness), "witness_from_judge": witness.frames_from(judge)}

    # The witness may not admit themself.
    await witness.send({"type": "admit", "participant": witness.id})
    refused = await asyncio.wait_for(witness.replies.get(), 30)

    await judge.send({"type": "admit", "participant": witness.id})
    await witness.until(lambda s: s["you"]["place"] == "main_room")
    await judge.send({"type": "start_session"})
    await judge.until(lambda s: s["phase"] == "in_session")
    peers = {"judge": judge, "witness": witness}
    asked_to_record = {name: peer.media_time() for name, peer in peers.items()}
    await judge.send({"type": "start_recording"})
    await judge.until(lambda s: s["recording"])
    recording_seen = {name: peer.media_time() for name, peer in peers.items()}
    await mark("admitted start")
    before = {"judge_from_witness": judge.frames_from(witness), "witness_from_judge": witness.frames_from(judge)}
    await asyncio.sleep(seconds)
    after = {"judge_from_witness": judge.frames_from(witness), "witness_from_judge": witness.frames_from(judge)}
    await mark("admitted end")

    # On a poor network the witness takes nobody's video, and keeps everyone's audio.
    await witness.send({"type": "receive_video", "slots": []})
    await asyncio.sleep(SAVER_SETTLE_SECONDS)
    await mark("data_saver start")
    saver_start = {"judge_from_witness": judge.frames_from(witness), "witness_from_judge": witness.frames_from(judge)}
    await asyncio.sleep(SAVER_SECONDS)
    saver_end = {"judge_from_witness": judge.frames_from(witness), "witness_from_judge": witness.frames_from(judge)}
    await mark("data_saver end")
    asked_to_end = {name: peer.media_time() for name, peer in peers.items()}
    await judge.send({"type": "end"})
    await asyncio.wait_for(asyncio.gather(judge.ended.wait(), witness.ended.wait()), 60)
    ended = {name: peer.media_time() for name, peer in peers.items()}
    await judge.close()
    await witness.close()
    def media_between(start, end):
        return {name: [b - a for a, b in zip(start[name], end[name])] for name in end}

    def difference(start, end):
        return {key: [end[key][0] - start[key][0], end[key][1] - start[key][1]] for key in end}

    admitted = difference(before, after)
    data_saver = difference(saver_start, saver_end)
    print(
        json.dumps(
            {
                "judge": judge.id,
                "witness": witness.id,
                "lobby": lobby,
                "admitted": admitted,
                "data_saver": data_saver,
                "self_admit": refused,
                "recording_at_most": media_between(asked_to_record, ended),
                "recording_at_least": media_between(recording_seen, asked_to_end),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    if os.environ.get("PEER_DEBUG"):
        logging.basicConfig(level=logging.DEBUG)
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
