"""A WHIP (RFC 9725) publisher made with GStreamer's webrtcbin, a WebRTC stack none of us wrote, driven through
GObject introspection (run with Debian's /usr/bin/python3, which has python3-gi).

Usage: gst_whip_publish.py URL SECONDS [TOKEN]

Publishes videotestsrc (320x240 at 25 fps, VP8) and audiotestsrc (Opus), as peers.md's whip-client pipeline
does but with vp8enc's look-ahead off (lag-in-frames=0, as a live sender should; its default holds 25 frames, a
second at 25 fps, so the media would lag the clock the test measures with), for SECONDS from when the peer
connection is up (on a busy machine ICE and DTLS take a while, and the media should still last SECONDS), then
DELETEs the session resource. Prints one JSON line: when it stopped, in seconds since the offer was sent, and what
it sent (`sent`): the seconds of audio, by the Opus packets webrtcbin says it sent (opusenc makes one packet of each
20 ms), and the video frames the encoder made. Nothing is lost before the connection is up: the pipeline waits for
it and sends what it made meanwhile, so the recording may start before the offer. On a busy machine a sender
manages less than real time; a test judges the recording by these counts, not by the clock. (Debian 12's own
whip-client cannot run: it links libsoup 2 while libnice pulls in libsoup 3.)
"""

import json
import sys
import threading
import time
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PIPELINE = (
    "webrtcbin name=send bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 ! videoconvert ! "
    "queue ! vp8enc name=video deadline=1 lag-in-frames=0 ! rtpvp8pay pt=96 ssrc=2 ! queue ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96 ! send. "
    "audiotestsrc is-live=true ! audioconvert ! audioresample ! queue ! opusenc frame-size=20 ! rtpopuspay pt=100 ssrc=1 ! "
    "queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100 ! send. "
)


def http(method, url, body=None, content_type=None, token=None):
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.headers, response.read()


STARTED = time.monotonic()


def say(message):
    """A line on stderr, with the seconds since the start: a test that fails shows where the time went."""
    print(f"{time.monotonic() - STARTED:7.2f}s {message}", file=sys.stderr, flush=True)


def main(url, seconds, token):
    Gst.init(None)
    pipeline = Gst.parse_launch(PIPELINE)
    webrtc = pipeline.get_by_name("send")
    loop = GLib.MainLoop()
    state = {}
    # Frames leaving the video encoder, counted as they pass.
    made = {"video_frames": 0}

    def count(_pad, _info):
        made["video_frames"] += 1
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("video").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, count)

    def audio_packets_sent():
        """The Opus packets (SSRC 1) webrtcbin has sent, by its own statistics."""
        promise = Gst.Promise.new()
        webrtc.emit("get-stats", None, promise)
        promise.wait()
        found = []

        def each(_field, value, _data):
            if isinstance(value, Gst.Structure) and value.get_name() == "outbound-rtp":
                if value.get_value("ssrc") == 1:
                    found.append(value.get_value("packets-sent"))
            return True

        promise.get_reply().foreach(each, None)
        return found[0] if found else 0

    def fail(message):
        say(message)
        state["error"] = message
        loop.quit()

    def guard(done, message):
        """A timer's callback: fails with `message` unless the step `done` names was reached; runs once."""
        if done not in state:
            fail(message)
        return False

    def on_gathering(element, _pspec):
        if element.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        if "offered" in state:
            return
        offer = element.get_property("local-description").sdp.as_text()
        state["offered"] = time.monotonic()
        say("offer sent")
        try:
            status, headers, answer = http("POST", url, offer.encode(), "application/sdp", token)
        except Exception as e:  # noqa: BLE001 - reported, then the publisher stops
            GLib.idle_add(fail, f"WHIP POST failed: {e}")
            return
        if status != 201:
            GLib.idle_add(fail, f"WHIP POST answered {status}")
            return
        say("answer received")
        state["resource"] = urllib.parse.urljoin(url, headers["Location"])
        _, sdp = GstSdp.SDPMessage.new_from_text(answer.decode())
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        element.emit("set-remote-description", description, None)

    def stop():
        say("stopping")
        state["stopped_s"] = time.monotonic() - state["offered"]
        # Nothing more is sent once counted: the sources stop here, before the DELETE ends the session.
        pipeline.set_state(Gst.State.PAUSED)
        state["sent"] = {"audio_s": audio_packets_sent() * 0.020, "video_frames": made["video_frames"]}
        loop.quit()
        return False

    def on_offer(promise, element, _):
        promise.wait()
        # Keep the reply alive while the offer is used: the offer belongs to it.
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        if offer is None or offer.sdp is None:
            GLib.idle_add(fail, f"webrtcbin made no offer: {reply.to_string()}")
            return
        element.emit("set-local-description", offer, None)

    def on_negotiation_needed(element):
        promise = Gst.Promise.new_with_change_func(on_offer, element, None)
        element.emit("create-offer", None, promise)

    def on_connection(element, _pspec):
        connection = element.get_property("connection-state")
        say(f"connection {connection.value_nick}")
        if connection == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and "connected" not in state:
            state["connected"] = time.monotonic()
            GLib.timeout_add(int(seconds * 1000), stop)
            # A guard against a hang in stopping (the statistics are asked of webrtcbin).
            GLib.timeout_add(int((seconds + 60) * 1000), guard, "sent", "did not stop")

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", lambda e, p: threading.Thread(target=on_gathering, args=(e, p)).start())
    webrtc.connect("notify::connection-state", on_connection)
    webrtc.connect(
        "notify::ice-connection-state", lambda e, _p: say(f"ice {e.get_property('ice-connection-state').value_nick}")
    )
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::error", lambda _bus, message: fail(str(message.parse_error())))
    pipeline.set_state(Gst.State.PLAYING)
    # A guard against a hang, not a judgement of speed: on a loaded 2-core machine, with other peers in other tests,
    # connecting has taken over 30 s (and once, in CI, over 90 s; the lines on stderr say which step took the time).
    GLib.timeout_add(180 * 1000, guard, "connected", "not connected after 180 s")
    loop.run()
    if "resource" in state:
        http("DELETE", state["resource"], token=token)
    pipeline.set_state(Gst.State.NULL)
    if "error" in state:
        raise SystemExit(state["error"])
    print(json.dumps({"stopped_s": state["stopped_s"], "sent": state["sent"]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
