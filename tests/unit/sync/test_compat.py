"""Old phones and new servers: an app built on the previous message types decodes every answer
this server sends, new refusal rules included (they travel in `Refusal.rule`, never as a new
`Reason` code, which an old app's enum would reject)."""

from __future__ import annotations

import enum
from typing import Any

import msgspec
import pytest

from schemas.sync import (
    Ack,
    AckStatus,
    PushResponse,
    Reason,
    Refusal,
    json_encoder,
    msgpack_encoder,
)


# The previous version's types, as an installed app has them (schema 1, before `rule` and
# `ignored` existed): the same wire names, fewer fields, a closed enum.
class OldReason(enum.StrEnum):
    FORBIDDEN = "forbidden"
    READ_ONLY = "read_only"
    SERVER_OWNED = "server_owned"
    ILLEGAL_TRANSITION = "illegal_transition"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_ENTITY = "unknown_entity"
    UNKNOWN_FIELD = "unknown_field"
    NOT_FOUND = "not_found"
    NOT_DELETABLE = "not_deletable"
    RULE = "rule"


class OldRefusal(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    code: OldReason = msgspec.field(name="c")
    message: str = msgspec.field(name="m", default="")
    field: str = msgspec.field(name="f", default="")


class OldAck(msgspec.Struct, kw_only=True, omit_defaults=True):
    seq: int = msgspec.field(name="s")
    status: str = msgspec.field(name="r", default="ok")
    version: int = msgspec.field(name="v", default=0)
    refusal: OldRefusal | None = msgspec.field(name="x", default=None)
    lost: list[str] = msgspec.field(name="l", default_factory=list)


class OldPushResponse(msgspec.Struct, kw_only=True, omit_defaults=True, tag="push", tag_field="t"):
    acks: list[OldAck] = msgspec.field(name="a", default_factory=list)
    hlc: int = msgspec.field(name="h", default=0)


def _answer() -> PushResponse:
    """A push answer with everything this version added."""
    return PushResponse(
        acks=[
            Ack(seq=1, version=7, ignored=["a_field_from_the_future"]),
            Ack(
                seq=2,
                status=AckStatus.REFUSED,
                refusal=Refusal(
                    code=Reason.INVALID_VALUE,
                    message="declining needs a reason in note",
                    field="note",
                    rule="reason_required",
                ),
            ),
            Ack(
                seq=3,
                status=AckStatus.REFUSED,
                refusal=Refusal(code=Reason.RULE, message="use a step", rule="use_task_step"),
            ),
        ],
        hlc=1 << 60,
    )


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_an_old_app_decodes_new_answers(fmt: str) -> None:
    enc: Any = msgpack_encoder if fmt == "msgpack" else json_encoder
    mod: Any = msgspec.msgpack if fmt == "msgpack" else msgspec.json
    old = mod.Decoder(OldPushResponse).decode(enc.encode(_answer()))
    assert [a.seq for a in old.acks] == [1, 2, 3]
    assert old.acks[0].version == 7 and old.acks[0].refusal is None
    assert old.acks[1].refusal == OldRefusal(
        code=OldReason.INVALID_VALUE, message="declining needs a reason in note", field="note"
    )
    assert old.acks[2].refusal.code is OldReason.RULE


def test_every_refusal_code_is_one_an_old_app_knows() -> None:
    """New reasons must go into `rule`: a new `Reason` member would break old decoders."""
    assert {r.value for r in Reason} == {r.value for r in OldReason}
