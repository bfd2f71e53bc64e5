"""The field app, driven under Xvfb against the real server (uvicorn, as `liandong serve`
runs it) through a proxy the test steers.

The app runs as its own process (one Kivy window per process) with a scenario from
tests/app/flows.py: firefighter 1's phone runs four scenarios in one process
(`responder_day`; each test asserts on its part), the inspector's and the enterprise officer's
one each. Touches are Kivy motion events dispatched through the real window's input path
(`UnitTestTouch`), and in the held-sync scenario real X pointer events (xdotool). Nothing is
mocked: the server, the proxy in front of it and the app are real.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app import content
from tests.app.harness import PASSWORD, Proxy, demo_server, run_app, xvfb

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with demo_server(tmp_path_factory.mktemp("app-server")) as base:
        yield base


@pytest.fixture(scope="module")
def proxy(server: str) -> Iterator[Proxy]:
    p = Proxy(server)
    yield p
    p.close()


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with xvfb() as d:
        yield d


@pytest.fixture(scope="module")
def fire(server: str) -> dict[str, Any]:
    return content.dispatch_fire(server)


def no_a11y_violations(result: dict[str, Any]) -> None:
    audits: dict[str, Any] = result.get("a11y") or {}
    assert audits, "the scenario audited no screen"
    for where, audit in audits.items():
        assert audit["violations"] == [], where
        assert audit["texts"] > 3 and audit["targets"] >= 2, where  # back and the badge
        assert audit["min_contrast"] >= 7.0, where


@pytest.fixture(scope="module")
def responder_day(
    display: str, proxy: Proxy, fire: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Firefighter 1's phone, one app process for four scenarios (tests/app/flows.py
    `responder_day`): each test below asserts on its part."""
    try:
        return run_app(
            display,
            "responder_day",
            server=proxy.url,
            data_dir=tmp_path_factory.mktemp("responder") / "phone",
            timeout=300,
            **control(proxy),
        )
    finally:
        proxy.set("release")
        proxy.set("online")


def part(day: dict[str, Any], name: str) -> dict[str, Any]:
    """One scenario's results from a chained run (it ran to its end, or why not)."""
    got: dict[str, Any] = day.get(name) or {}
    assert got.get("ok"), day["error"] or f"{name} did not run"
    return got


def test_responder_signs_in_by_touch_and_sees_their_tasks(responder_day: dict[str, Any]) -> None:
    r = part(responder_day, "signin_responder")
    assert r["refused_message"] == "用户名或密码错误。"  # Chinese by default
    titles = r["rows"]
    assert titles[0].startswith("我的任务")
    assert "灭火救援：九江路仓库" in titles and "疏散周边商铺人员" in titles
    no_a11y_violations(r)


@pytest.fixture(scope="module")
def hazards(server: str) -> list[dict[str, Any]]:
    """Grid A's hazards: the first rectified by the enterprise (waits for re-inspection),
    the second assigned to the enterprise to rectify."""
    made = content.report_hazards(server, 3)
    content.assign_to_enterprise(server, made[0]["id"])
    content.rectify_over_rest(server, made[0]["id"])
    content.assign_to_enterprise(server, made[1]["id"])
    return made


def signed_in_as(user: str, *extra: str) -> tuple[str, ...]:
    return ("--user", user, "--password", PASSWORD, *extra)


def control(proxy: Proxy) -> dict[str, str]:
    return {"LIANDONG_APP_CONTROL": f"{proxy.url}/__proxy"}


def test_responder_takes_a_task_to_the_end_offline_and_back(
    responder_day: dict[str, Any], server: str
) -> None:
    r = part(responder_day, "responder_flow")
    assert r["opened"] and r["opened"][0].startswith("geo:31.2381,121.4842")
    assert "原因" in r["decline_without_reason"]  # the core's rule, in Chinese
    assert r["after_accept"].startswith("已接受")  # shown at once, before any network
    assert r["offline_sync"] == "sync-failed" and r["offline_badge"] == "↑1"
    waiting, after = r["outbox"]
    assert any("等待发送" in line for _t, line, _why in waiting)
    assert not any("等待发送" in line for _t, line, _why in after)
    assert r["online_badge"] == "↑0" and r["final_badge"] == "↑0"
    task = content.get(server, f"/api/v1/tasks/{r['task_id']}", "dispatcher")
    assert task["status"] == "completed"
    timeline = content.get(server, f"/api/v1/tasks/{r['task_id']}/timeline", "dispatcher")
    steps = [e.get("to_status") or e.get("to") for e in timeline]
    assert steps[-4:] == ["accepted", "en_route", "on_scene", "completed"], steps
    assert any("火已扑灭" in (e.get("note") or "") for e in timeline)
    no_a11y_violations(r)


#: The screens whose kv has a message (`FieldScreen.say`).
WITH_MESSAGE = {
    kv.stem
    for kv in (Path(__file__).parents[2] / "mobile/screens").glob("*.kv")
    if "Message:" in kv.read_text(encoding="utf-8")
}


def no_room_while_empty(rooms: dict[str, list[float]]) -> None:
    """An empty message is out of its layout: its neighbours are as far apart as its layout's
    spacing puts any two (an empty one left a band of the spacing: 8 to 12 dp)."""
    assert {name: gap for name, (gap, _) in rooms.items()} == {
        name: spacing for name, (_, spacing) in rooms.items()
    }, rooms


def test_an_empty_message_takes_no_room_on_any_screen(responder_day: dict[str, Any]) -> None:
    rooms = {
        **part(responder_day, "signin_responder")["message_room"],
        **part(responder_day, "empty_messages")["message_room"],
    }
    # every screen with a message but the hazard's and the self-check's (the responder has
    # none of those records; the inspector's and the enterprise's flows measure them)
    assert set(rooms) == WITH_MESSAGE - {"hazard_detail", "selfcheck"}, rooms
    no_room_while_empty(rooms)


def test_what_is_typed_on_a_task_stays_with_that_task(responder_day: dict[str, Any]) -> None:
    r = part(responder_day, "forms_per_record")
    a, _b = r["keys"]
    # A's words were saved as A's draft as they were typed
    assert r["drafts_a"] == [["task", a, {"reason": "A：车辆故障", "note": "A：二楼有人被困"}]]
    assert r["b"] == ["", "", ""]  # B opens empty: no note, reason or message of A's
    # The task's lines between the deadline and the next step's button are 8 dp apart; an
    # empty description or message is not there (they left a blank band of 40 dp on B).
    assert r["message_a"] == "A 的提示"  # the screen shows its message (it showed none)
    assert r["gaps_dp_a"] == {
        "due_description": 8.0,
        "description_message": 8.0,
        "message_next": 8.0,
    }, r["gaps_dp_a"]
    assert r["gaps_dp_b"] == {
        "due_next": 8.0,
        "due_message_next": [8.0, 8.0],
        "due_next_again": 8.0,
    }, r["gaps_dp_b"]
    assert r["a"] == ["A：二楼有人被困", "A：车辆故障"]  # A's draft came back on A
    assert r["b_again"] == ["B：已疏散一半", ""]
    assert r["drafts"] == []  # emptied fields leave no draft


def test_inspector_reports_with_a_coarse_fix_and_reinspects(
    display: str, proxy: Proxy, server: str, hazards: list[dict[str, Any]], tmp_path: Path
) -> None:
    r = run_app(
        display,
        "inspector_flow",
        server=proxy.url,
        data_dir=tmp_path / "phone",
        args=signed_in_as("inspector1", "--fix", "121.4801,31.2371,150"),
        **control(proxy),
    )
    assert r["ok"], r["error"]
    assert r["rows"][0].startswith("待复查（1）")
    # a page at a time, the list ends up the same as read at once
    assert r["paged_rows"] == r["rows"] and r["pages_loaded"] >= 3, r
    assert "定位" in r["refused_without_fix"]  # no report on a coarse fix nobody accepted
    assert "±150" in r["accepted_fix"]
    assert r["steps"] == ["复查合格", "重开：未整改到位"], r["steps"]
    assert r["gap_dp_steps_evidence"] == 8.0  # an empty line left a 40 dp band
    assert set(r["message_room"]) == {"hazard_detail"}
    no_room_while_empty(r["message_room"])
    assert r["after_step"].startswith("已复查")
    mine = content.get(server, "/api/v1/hazards?limit=100", "inspector1")
    items = mine["items"] if isinstance(mine, dict) else mine
    new = [h for h in items if h["description"].startswith("小区门口燃气表箱")]
    assert len(new) == 1 and new[0]["accuracy_m"] == 150 and len(new[0]["photo_ids"]) == 1
    old = content.get(server, f"/api/v1/hazards/{hazards[0]['id']}", "inspector1")
    assert old["status"] == "reinspected"
    no_a11y_violations(r)


def test_enterprise_fills_the_self_check_and_rectifies_with_a_photo(
    display: str, proxy: Proxy, server: str, hazards: list[dict[str, Any]], tmp_path: Path
) -> None:
    r = run_app(
        display,
        "enterprise_flow",
        server=proxy.url,
        data_dir=tmp_path / "phone",
        args=signed_in_as("enterprise1"),
        **control(proxy),
    )
    assert r["ok"], r["error"]
    assert r["items"] >= 3
    assert "隐患" in r["fail_notice"]  # a failed item says it opens a hazard
    # The notice takes room only on a failed item: an empty one left a blank band (40 dp)
    # between the result buttons and the note of every item.
    assert r["gaps_dp"] == {"pass": 8.0, "fail": 8.0, "fail_note": 8.0}, r["gaps_dp"]
    assert set(r["message_room"]) == {"selfcheck"}
    no_room_while_empty(r["message_room"])
    assert "照片" in r["without_photos"]  # rectified needs after-photos: the core refuses
    h = content.get(server, f"/api/v1/hazards/{hazards[1]['id']}", "dispatcher")
    assert h["status"] == "rectified"
    assert r["final_badge"] == "↑0"
    no_a11y_violations(r)


def test_a_held_sync_leaves_the_app_drawing_and_answering_touches(
    responder_day: dict[str, Any],
) -> None:
    r = part(responder_day, "held_sync")
    assert r["still_syncing"] is True  # the pull was still held at the server
    assert r["screen_during_hold"] == "settings"  # a real X click changed the screen
    assert r["frames_during_hold"] >= 3, r  # the sync strip animates: frames are drawn
    assert r["after_release"] == "sync-ok", r


def test_every_screen_in_both_languages_and_themes(responder_day: dict[str, Any]) -> None:
    r = part(responder_day, "languages_and_a11y")
    no_a11y_violations(r)
    screens = {k.rsplit("-", 1)[0] for k in r["texts"]}
    assert {"home", "task", "nearby", "warnings", "outbox", "settings", "hazard_report"} <= screens
    zh, en = catalogue_pairs()
    for key, texts in r["texts"].items():
        if key.endswith("-en"):
            leftovers = [z for z in zh if z in texts]
            assert not leftovers, (key, leftovers[:5])
        else:
            leftovers = [e for e in en if e in texts]
            assert not leftovers, (key, leftovers[:5])
    assert "设置" in r["texts"]["home-zh_CN"] and "Settings" in r["texts"]["home-en"]


def catalogue_pairs() -> tuple[set[str], set[str]]:
    """The app's translated texts: Chinese msgstrs and their English sources (constant ones,
    without placeholders, at least two characters)."""
    from babel.messages.pofile import read_po

    import i18n

    po = i18n.LOCALE_DIR / "zh_CN/LC_MESSAGES/liandong.po"
    with po.open("rb") as fh:
        catalog = read_po(fh)
    zh, en = set(), set()
    for m in catalog:
        if (
            not m.id
            or not m.string
            or "{" in str(m.id)
            or not any("app:" in c for c in m.auto_comments)
        ):
            continue
        if len(str(m.string)) >= 2:
            zh.add(str(m.string))
        if len(str(m.id)) >= 4:
            en.add(str(m.id))
    return zh, en
