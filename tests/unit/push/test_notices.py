"""How notices read (push/notices.py): each kind in Chinese and in English, the machine-readable
parts identical in both, data-only notices carrying their texts in `data`."""

from __future__ import annotations

import string

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import i18n
from push.base import PushMessage
from push.notices import TEXTS, Notice, build, kinds, texts


def _hazard(kind: str = "hazard.reported", **params: str) -> Notice:
    return Notice(
        kind=kind,
        event_id=f"{kind}:h1",
        record="hazard",
        record_id="h1",
        params={"category": "electrical", "severity": "high", "description": "私拉电线", **params},
    )


def test_a_new_hazard_reads_in_each_language_and_keeps_what_people_typed() -> None:
    zh, en = build(_hazard(), "zh_CN"), build(_hazard(), "en")
    assert zh.title == "您的网格有新隐患"
    assert zh.body == "用电隐患（高风险）：私拉电线"  # noqa: RUF001
    assert en.title == "New hazard in your grid"
    assert en.body == "electrical hazard (high severity): 私拉电线"
    # What the phone acts on never changes with the language.
    for m in (zh, en):
        assert {k: v for k, v in m.data.items() if k != "lang"} == {
            "event_id": "hazard.reported:h1",
            "kind": "hazard.reported",
            "record": "hazard",
            "record_id": "h1",
        }
    assert (zh.data["lang"], en.data["lang"]) == ("zh_CN", "en")


def test_reopened_carries_the_reason_and_assigned_the_deadline() -> None:
    reopened = build(_hazard("hazard.reopened", reason="照片不清楚"), "zh_CN")
    assert reopened.title == "隐患已重新打开，请重新整改" and reopened.body == "原因：照片不清楚"  # noqa: RUF001
    assigned = build(_hazard("hazard.rectification_assigned", deadline="2026-12-01 18:00"), "en")
    assert assigned.title == "Hazard to rectify by 2026-12-01 18:00"


def test_a_data_only_notice_carries_its_texts_in_data() -> None:
    notice = Notice(
        kind="task.assigned",
        event_id="task.assigned:e1",
        record="task",
        record_id="t1",
        params={"title": "化工品泄漏", "priority": "high"},
        data={"task_id": "t1"},
        visible=False,
    )
    m = build(notice, "zh_CN")
    assert m.title is None and m.body is None
    assert m.data["notice_title"] == "新任务：化工品泄漏"  # noqa: RUF001
    assert m.data["task_id"] == "t1" and m.data["kind"] == "task.assigned"


# The params each kind's producer gives (server/domain/*/services.py, residents/audience.py).
KIND_PARAMS = {
    "task": {"title", "priority"},
    "hazard": {"category", "severity", "description", "deadline", "reason"},
    "check": {"template", "enterprise", "week", "due_on"},
    "warning": {"event", "headline", "instruction", "colour"},
}
SHOWN = {"severity", "category", "colour"}  # also shown as `<name>_text`


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_every_placeholder_is_one_its_params_provide_in_both_languages(kind: str) -> None:
    """`build` fills a field the notice lacks with "" (a reader never sees `{x}`), so a
    misspelt field would silently read empty: each one must be a param the kind is given."""
    given = KIND_PARAMS[kind.split(".", maxsplit=1)[0]]
    provided = given | {f"{name}_text" for name in given & SHOWN}
    for source in TEXTS[kind]:
        named = placeholders(source)
        assert named <= provided, (kind, source)
        assert placeholders(i18n.gettext("zh_CN", source)) == named, (kind, source)


def test_every_kind_has_chinese_different_from_english() -> None:
    for kind in kinds():
        params = dict.fromkeys(KIND_PARAMS[kind.split(".")[0]], "x")
        notice = Notice(kind=kind, event_id=kind, record="r", record_id="1", params=params)
        zh, en = texts(notice, "zh_CN"), texts(notice, "en")
        assert zh[0] != en[0], kind


def test_unknown_kinds_and_overlong_event_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="no texts"):
        Notice(kind="nope", event_id="e", record="r", record_id="1")
    with pytest.raises(ValueError, match="128"):
        Notice(kind="hazard.reported", event_id="e" * 129, record="r", record_id="1")


@given(
    kind=st.sampled_from(sorted(TEXTS)),
    lang=st.sampled_from([*i18n.LANGS, "fr"]),
    text=st.text(max_size=300),
)
def test_any_typed_text_builds_a_storable_message(kind: str, lang: str, text: str) -> None:
    notice = Notice(
        kind=kind,
        event_id="e",
        record="hazard",
        record_id="1",
        params={"description": text, "reason": text, "title": text, "template": "{x}"},
    )
    m = build(notice, lang)
    # The outbox stores it as JSON and decodes it again.
    assert msgspec.json.decode(msgspec.json.encode(m), type=PushMessage) == m
