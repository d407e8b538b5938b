"""A WHIP (RFC 9725) publisher made with aiortc, a WebRTC stack none of us wrote.

Usage: whip_publish.py URL SECONDS [TOKEN]

Publishes FFmpeg's test pattern (testsrc, 320x240 at 25 fps) and a 440 Hz tone, encoded by aiortc as VP8 and
Opus, for SECONDS, then DELETEs the session resource. Prints one JSON line: when media started flowing and when it
stopped, in seconds since the offer was sent, and what it sent (`sent`): the seconds of audio by the media's own
clock (aiortc's Opus encoder makes a 20 ms packet of each 20 ms) and the video frames handed to the encoder. On a
busy machine a sender manages less than real time; a test judges the recording by these, not by the clock. With
TOKEN, requests carry `Authorization: Bearer TOKEN`.

With WHIP_ICE_SERVERS set to a JSON list of RTCIceServer objects, those servers are used; with
WHIP_ICE_TRANSPORT_POLICY=relay as well, only relayed (TURN) candidates are gathered and used, and the report names
the candidate types of the pair ICE chose.
"""

import asyncio
import json
import os
import sys
import time
import urllib.parse
import urllib.request

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer


class Sent(MediaStreamTrack):
    """A track as its sender takes it (only once the connection is up): the frames handed over, and the media
    time that they reach."""

    def __init__(self, track):
        super().__init__()
        self.kind = track.kind
        self.track = track
        self.frames = 0
        self.first = None
        self.media_end = 0.0

    async def recv(self):
        frame = await self.track.recv()
        start = float(frame.pts * frame.time_base)
        if self.first is None:
            self.first = start
        self.frames += 1
        length = frame.samples / frame.sample_rate if self.kind == "audio" else 0.0
        self.media_end = start + length
        return frame

    def seconds(self):
        return 0.0 if self.first is None else self.media_end - self.first


def http(method, url, body=None, content_type=None, token=None):
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers, response.read()


async def main(url, seconds, token):
    video = MediaPlayer("testsrc=size=320x240:rate=25", format="lavfi")
    audio = MediaPlayer("sine=frequency=440:sample_rate=48000", format="lavfi")
    servers = json.loads(os.environ.get("WHIP_ICE_SERVERS", "[]"))
    policy = RTCIceTransportPolicy(os.environ.get("WHIP_ICE_TRANSPORT_POLICY", "all"))
    pc = RTCPeerConnection(
        RTCConfiguration(
            iceServers=[RTCIceServer(**server) for server in servers], iceTransportPolicy=policy
        )
    )
    sent_video, sent_audio = Sent(video.video), Sent(audio.audio)
    pc.addTransceiver(sent_video, direction="sendonly")
    pc.addTransceiver(sent_audio, direction="sendonly")
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state():
        print(f"connection {pc.connectionState}, ICE {pc.iceConnectionState}", file=sys.stderr, flush=True)
        if pc.connectionState == "connected":
            connected.set()

    await pc.setLocalDescription(await pc.createOffer())
    offered = time.monotonic()
    status, headers, answer = http("POST", url, pc.localDescription.sdp.encode(), "application/sdp", token)
    if status != 201:
        raise SystemExit(f"WHIP POST answered {status}")
    resource = urllib.parse.urljoin(url, headers["Location"])
    # RFC 9725 ICE server Link headers, their URLs only (the credentials stay out of the report).
    links = [link.split(";")[0] + ("; username=..." if "username=" in link else "") for link in headers.get_all("Link") or []]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.decode(), type="answer"))
    await asyncio.wait_for(connected.wait(), 20)
    started = time.monotonic() - offered
    chosen = []
    for transceiver in pc.getTransceivers():
        connection = transceiver.sender.transport.transport.iceGatherer._connection
        for pair in getattr(connection, "_nominated", {}).values():
            chosen.append([pair.local_candidate.type, pair.remote_candidate.type])
    await asyncio.sleep(seconds)
    stopped = time.monotonic() - offered
    # What was sent: counted before the session ends, so that nothing is counted that the gateway could not get.
    sent = {"audio_s": sent_audio.seconds(), "video_frames": sent_video.frames}
    http("DELETE", resource, token=token)
    await pc.close()
    report = {"connected_s": started, "stopped_s": stopped, "sent": sent, "chosen_pairs": chosen, "links": links}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
