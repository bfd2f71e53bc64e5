"""Our RFC 8291 encryption, checked against an independent implementation (http_ece)."""

from __future__ import annotations

import base64
import os

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from push.webpush import MAX_PLAINTEXT_BYTES, WebPushKeys, WebPushSubscription, encrypt_payload

KEY = ec.generate_private_key(ec.SECP256R1())
AUTH = os.urandom(16)
PUBLIC = KEY.public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


SUB = WebPushSubscription(
    endpoint="https://push.example/x", keys=WebPushKeys(b64(PUBLIC), b64(AUTH))
)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=MAX_PLAINTEXT_BYTES))
def test_http_ece_decrypts_what_we_encrypt(plaintext: bytes) -> None:
    body = encrypt_payload(plaintext, SUB)
    assert len(body) <= 4096 + 86
    assert (
        http_ece.decrypt(body, private_key=KEY, auth_secret=AUTH, version="aes128gcm") == plaintext
    )


def test_every_message_has_its_own_key_and_salt() -> None:
    a, b = encrypt_payload(b"same", SUB), encrypt_payload(b"same", SUB)
    assert a[:16] != b[:16]  # salt
    assert a[21:86] != b[21:86]  # the ephemeral public key (keyid)
