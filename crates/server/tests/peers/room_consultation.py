"""A private consultation in a recorded hearing, with three aiortc peers (see room_two_party.py): a judge (admitted
on joining), a prosecutor and a witness.

Usage: room_consultation.py WS_URL JUDGE_SECRET PROSECUTOR_SECRET WITNESS_SECRET

The judge admits both, opens the session and records. After a while in the hearing, the prosecutor takes the
witness into a private consultation, then ends it, and the hearing goes on until the judge ends it. Prints one
JSON line: for each phase (before, during and after the consultation), the video frames each peer decoded from
each other peer.
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from room_two_party import Participant  # noqa: E402

PHASE_SECONDS = 5
SETTLE_SECONDS = 1.5


def frames(peers):
    return {f"{a.name}<-{b.name}": a.frames_from(b)[0] for a in peers for b in peers if a is not b}


async def phase(peers):
    """Frames decoded in one phase, after a moment for the routing change to settle."""
    await asyncio.sleep(SETTLE_SECONDS)
    before = frames(peers)
    await asyncio.sleep(PHASE_SECONDS)
    after = frames(peers)
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
    await judge.send({"type": "start_recording"})
    await judge.until(lambda s: s["recording"])
    report = {"hearing": await phase(peers)}

    await prosecutor.send({"type": "start_consultation", "with": [witness.id]})
    await judge.until(lambda s: any(p["place"] == "consultation" for p in s["participants"]))
    report["consultation"] = await phase(peers)
    consultation = next(p["consultation"] for p in prosecutor.state["participants"] if p["id"] == prosecutor.id)
    await prosecutor.send({"type": "end_consultation", "consultation": consultation})
    await judge.until(lambda s: all(p["place"] == "main_room" for p in s["participants"]))
    report["after"] = await phase(peers)

    await judge.send({"type": "end"})
    await asyncio.wait_for(asyncio.gather(*(peer.ended.wait() for peer in peers)), 20)
    for peer in peers:
        await peer.close()
    report["ids"] = {peer.name: peer.id for peer in peers}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
