"""An RFC 9421 peer that none of us wrote: pyauth's http-message-signatures (PyPI, Apache-2.0), for
crates/partners/tests/python_interop.rs.

Usage: httpsig_peer.py sign|verify, with a JSON request on stdin:
  sign:   {"method", "url", "date", "body" (base64), "private_key" (32 bytes, base64url), "keyid", "nonce",
           "created" (Unix seconds)}; prints {"signature_input", "signature", "content_digest"}.
  verify: {"method", "url", "headers" {name: value}, "body" (base64), "public_key" (32 bytes, base64url), "keyid"};
          prints {"verified": true, "params": {...}} or exits 1 with the library's reason.
"""

import base64
import datetime
import json
import sys

from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver, algorithms
from http_message_signatures.structures import CaseInsensitiveDict

COVERED = ("@method", "@path", "content-digest", "date")


class Request:
    def __init__(self, method, url, headers):
        self.method = method
        self.url = url
        self.headers = CaseInsensitiveDict(headers)


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def main():
    mode = sys.argv[1]
    job = json.load(sys.stdin)
    body = base64.b64decode(job["body"])
    if mode == "sign":
        key = ed25519.Ed25519PrivateKey.from_private_bytes(b64url(job["private_key"]))
        request = Request(job["method"], job["url"], {"Date": job["date"]})
        signer = HTTPMessageSigner(
            signature_algorithm=algorithms.ED25519,
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={job["keyid"]: key}),
        )
        signer.sign(
            request,
            key_id=job["keyid"],
            created=datetime.datetime.fromtimestamp(job["created"], tz=datetime.timezone.utc),
            nonce=job["nonce"],
            label="custodia",
            covered_component_ids=COVERED,
            body=body,
        )
        print(json.dumps({
            "signature_input": request.headers["Signature-Input"],
            "signature": request.headers["Signature"],
            "content_digest": request.headers["Content-Digest"],
        }))
    elif mode == "verify":
        key = ed25519.Ed25519PublicKey.from_public_bytes(b64url(job["public_key"]))
        request = Request(job["method"], job["url"], job["headers"])
        verifier = HTTPMessageVerifier(
            signature_algorithm=algorithms.ED25519,
            key_resolver=MappingKeyResolver(public_keys={job["keyid"]: key}, private_keys={}),
        )
        verifier.allow_label_only_selection = True
        try:
            results = verifier.verify(
                request, expect_label="custodia", require_components=COVERED, body=body,
                max_age=datetime.timedelta(seconds=300),
            )
        except Exception as err:  # the library's own reason, for the test's message
            print(f"{type(err).__name__}: {err}", file=sys.stderr)
            sys.exit(1)
        params = {k: v for k, v in results[0].parameters.items()} if results else {}
        print(json.dumps({"verified": bool(results), "params": params}, default=str))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
