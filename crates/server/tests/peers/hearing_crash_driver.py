"""Drives a recorded hearing on a running gateway until it is killed: the crash test's half that the gateway does
not see coming.

Usage: hearing_crash_driver.py BASE_URL DATA_DIR

Signs in as the first administrator (its password from DATA_DIR/keys/initial-admin-password), makes a clerk and a
case, schedules a hearing, and puts a judge and a witness (aiortc peers, see room_two_party.py) in it, recording.
Once at least two segments are sealed it prints one JSON line (the case, the hearing, the clerk's session and the
sealed segments, and the judge's credential to come back with) and keeps the hearing going until it is killed.
"""

import asyncio
import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from room_two_party import Participant  # noqa: E402


def call(base, method, path, body=None, cookie=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if cookie:
        request.add_header("Cookie", f"custodia_session={cookie}")
        request.add_header("Sec-Fetch-Site", "same-origin")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
        session = response.headers.get("Set-Cookie", "")
        return (json.loads(text) if text else None), session


def sign_in(base, username, password):
    _, cookie = call(base, "POST", "/api/v1/session", {"username": username, "password": password})
    return cookie.split(";")[0].split("=", 1)[1]


async def main(base, data_dir):
    with open(os.path.join(data_dir, "keys", "initial-admin-password")) as f:
        admin = sign_in(base, "admin", f.read().strip())
    password = "clerk-correct-horse-battery"
    account, _ = call(base, "POST", "/api/v1/accounts",
                      {"username": "clerk", "display_name": "Clerk", "password": password, "jurisdiction": "IT"}, admin)
    call(base, "POST", "/api/v1/cases", {"id": "case-crash", "title": "R v crash"}, admin)
    call(base, "PUT", f"/api/v1/cases/case-crash/members/{account['id']}", {"role": "clerk"}, admin)
    clerk = sign_in(base, "clerk", password)
    hearing, _ = call(base, "POST", "/api/v1/cases/case-crash/hearings",
                      {"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania"}, clerk)
    path = f"/api/v1/cases/case-crash/hearings/{hearing['id']}"
    judge_invite, _ = call(base, "POST", f"{path}/invites", {"role": "judge", "admit_on_join": True}, clerk)
    witness_invite, _ = call(base, "POST", f"{path}/invites", {"role": "witness"}, clerk)
    call(base, "POST", f"{path}/open", {}, clerk)

    url = base.replace("http://", "ws://") + "/api/v1/room"
    judge = Participant("judge", url, judge_invite["secret"], "testsrc", 440)
    witness = Participant("witness", url, witness_invite["secret"], "testsrc2", 660)
    await judge.open()
    await witness.open()
    await asyncio.gather(judge.connect_media(), witness.connect_media())
    await judge.send({"type": "admit", "participant": witness.id})
    await judge.send({"type": "start_session"})
    await judge.until(lambda s: s["phase"] == "in_session")
    await judge.send({"type": "start_recording"})
    await judge.until(lambda s: s["recording"])
    while True:
        view, _ = call(base, "GET", path, cookie=clerk)
        if len(view["segments"]) >= 2:
            break
        await asyncio.sleep(0.5)
    print(json.dumps({"case": "case-crash", "hearing": hearing["id"], "clerk": clerk, "segments": view["segments"],
                      "judge": judge.credential}), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
