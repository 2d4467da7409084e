"""Pre-signs signed GET requests for the request benchmark, with an independent RFC 9421
implementation (`http-message-signatures`): one fresh nonce each, so the broker accepts every
one once. Writes one request per line: path, then each header as name: value, tab-separated."""

import secrets
import sys

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, algorithms
from http_message_signatures.resolvers import MappingKeyResolver

sys.path.insert(0, sys.argv[5])
import civitas_format  # noqa: E402

url, path, secret, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
private = civitas_format.read_secret(secret)
key = Ed25519PrivateKey.from_private_bytes(bytes(private["signing"]))
signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519,
                           key_resolver=MappingKeyResolver(public_keys={}, private_keys={private["key_id"]: key}))
for _ in range(count):
    request = requests.Request("GET", url + path).prepare()
    signer.sign(request, key_id=private["key_id"], label="sig1", nonce=secrets.token_hex(12),
                covered_component_ids=("@method", "@target-uri", "content-digest"), body=b"")
    headers = [f"{name}: {request.headers[name]}" for name in ("Signature-Input", "Signature", "Content-Digest") if name in request.headers]
    print("\t".join([path] + headers))
