#!/usr/bin/env python3
"""A cosignature/v1 verifier written from c2sp.org/tlog-cosignature and c2sp.org/signed-note, with Python's
`cryptography`, sharing no code with Custodia. Usage: cosignature_v1.py <vkey> <note file>.

Prints `<name> <timestamp>` and exits 0 when the note carries a valid cosignature by the key; exits 1 with the
reason otherwise."""

import base64
import hashlib
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(1)


def main():
    vkey, note_path = sys.argv[1], sys.argv[2]
    name, key_id_hex, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64, validate=True)
    if len(key) != 33 or key[0] != 0x04:
        fail("not an Ed25519 cosignature/v1 key")
    key_id = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
    if key_id.hex() != key_id_hex:
        fail("the key ID does not match the key")
    public_key = Ed25519PublicKey.from_public_bytes(key[1:])

    note = open(note_path, "rb").read().decode("utf-8")
    # signed-note: the text ends at the last blank line; every line after it is a signature line.
    split = note.rindex("\n\n")
    body, signatures = note[: split + 1], note[split + 2 :]
    if not signatures.endswith("\n"):
        fail("the signature block does not end in a newline")
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            fail("a signature line does not start with an em dash and a space")
        line_name, encoded = line[2:].split(" ", 1)
        raw = base64.b64decode(encoded, validate=True)
        if line_name != name or raw[:4] != key_id:
            continue
        if len(raw) != 4 + 8 + 64:
            fail("a cosignature/v1 signature is 76 bytes")
        timestamp = int.from_bytes(raw[4:12], "big")
        if timestamp == 0:
            fail("the timestamp is zero")
        message = f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()
        try:
            public_key.verify(raw[12:], message)
        except InvalidSignature:
            fail("the cosignature does not verify")
        print(f"{name} {timestamp}")
        return
    fail("no cosignature by this key")


main()
