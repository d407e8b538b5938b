"""A private consultation in a recorded hearing, with three aiortc peers (see room_two_party.py): a judge (admitted
on joining), a prosecutor and a witness.

Usage: room_consultation.py WS_URL JUDGE_SECRET PROSECUTOR_SECRET WITNESS_SECRET

The judge admits both, opens the session and records. After a while in the hearing, the prosecutor takes the
witness into a private consultation, then ends it, and the hearing goes on until the judge ends it. Each phase
(before, during and after the consultation) is marked on stdout as it starts and ends ("mark NAME start", "mark
NAME end"), so that the test can read the gateway's own counters at those moments. Prints one JSON line: for each
phase, the video frames each peer decoded from each other peer in it, and since its start until every peer has
decoded video from every other after the consultation (a busy peer decodes seconds late; it may wait 30 s for
that); and how much media each peer sent (seconds of its
own media clock, audio and video) at each step, for the test to compare with what was recorded.
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from room_two_party import Participant, mark  # noqa: E402

PHASE_SECONDS = 5
SETTLE_SECONDS = 1.5


def frames(peers):
    return {f"{a.name}<-{b.name}": a.frames_from(b)[0] for a in peers for b in peers if a is not b}


async def phase(name, peers, starts):
    """Frames decoded in one phase, after a moment for the routing change to settle."""
    await asyncio.sleep(SETTLE_SECONDS)
    await mark(f"{name} start")
    before = frames(peers)
    starts[name] = before
    await asyncio.sleep(PHASE_SECONDS)
    after = frames(peers)
    await mark(f"{name} end")
    return {key: after[key] - before[key] for key in after}


async def main(url, judge_secret, prosecutor_secret, witness_secret):
    judge = Participant("judge", url, judge_secret, "testsrc", 440)
    prosecutor = Participant("prosecutor", url, prosecutor_secret, "testsrc2", 550)
    witness = Participant("witness", url, witness_secret, "testsrc2", 660)
    peers = [judge, prosecutor, witness]
    for peer in peers:
        await peer.open()
    await asyncio.gather(*(peer.connect_media() for peer in peers))
    for peer in (prosecutor, witness):
        await judge.send({"type": "admit", "participant": peer.id})
    await judge.until(lambda s: all(p["place"] == "main_room" for p in s["participants"]))
    await judge.send({"type": "start_session"})
    await judge.until(lambda s: s["phase"] == "in_session")
    sent = {}

    def step(name):
        sent[name] = {peer.name: peer.media_time() for peer in peers}

    step("asked_to_record")
    await judge.send({"type": "start_recording"})
    await judge.until(lambda s: s["recording"])
    step("recording_seen")
    starts = {}
    report = {"hearing": await phase("hearing", peers, starts)}

    step("asked_for_consultation")
    await prosecutor.send({"type": "start_consultation", "with": [witness.id]})
    await judge.until(lambda s: any(p["place"] == "consultation" for p in s["participants"]))
    step("consultation_seen")
    report["consultation"] = await phase("consultation", peers, starts)
    consultation = next(p["consultation"] for p in prosecutor.state["participants"] if p["id"] == prosecutor.id)
    step("asked_to_end_consultation")
    await prosecutor.send({"type": "end_consultation", "consultation": consultation})
    await judge.until(lambda s: all(p["place"] == "main_room" for p in s["participants"]))
    report["after"] = await phase("after", peers, starts)
    deadline = asyncio.get_running_loop().time() + 30
    now = frames(peers)
    while asyncio.get_running_loop().time() < deadline and not all(now[k] > starts["after"][k] for k in now):
        await asyncio.sleep(0.1)
        now = frames(peers)
    report["decoded_since"] = {name: {key: now[key] - start[key] for key in now} for name, start in starts.items()}

    step("asked_to_end")
    await judge.send({"type": "end"})
    await asyncio.wait_for(asyncio.gather(*(peer.ended.wait() for peer in peers)), 60)
    step("ended")
    report["sent"] = sent
    for peer in peers:
        await peer.close()
    report["ids"] = {peer.name: peer.id for peer in peers}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
