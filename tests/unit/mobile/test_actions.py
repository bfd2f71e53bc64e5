"""Field actions without a server: each is one queued write stamped with time and fix; what no
server could accept is refused before queuing, with the server's rule; an item in a push
cannot be edited."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mobile.core.actions import ActionRefusedError, BeingSentError, FieldActions
from mobile.core.clock import ManualClock
from mobile.core.geo import Fix, FixedGeolocator
from mobile.core.outbox import ItemState, Outbox
from mobile.core.photos import PhotoStore
from sync.store import ClientStore


@pytest.fixture
def phone(tmp_path: Path) -> tuple[FieldActions, Outbox, ClientStore]:
    clock = ManualClock()
    store = ClientStore(tmp_path / "phone.db", device_id="dev-1")
    photos = PhotoStore(tmp_path / "phone.db")
    outbox = Outbox(store, photos)
    geo = FixedGeolocator(121.4855, 31.2375, 6.0, now=clock)
    geo.start()
    actions = FieldActions(
        store, photos=photos, geolocator=geo, now=clock, in_flight=outbox.is_sending
    )
    return actions, outbox, store


def test_a_step_is_one_queued_write_with_time_and_fix(
    phone: tuple[FieldActions, Outbox, ClientStore],
) -> None:
    actions, outbox, store = phone
    task = uuid.uuid4()
    step = actions.accept_task(task)
    [m] = store.pending()
    assert (m.entity, m.id, m.op.value) == ("task_step", step, "c")
    assert step.version == 7
    assert m.fields == {
        "task_id": str(task),
        "to_status": "accepted",
        "at": "2026-11-20T08:00:00.000Z",
        "location": {"type": "Point", "coordinates": [121.4855, 31.2375]},
        "accuracy_m": 6.0,
        "device_id": "dev-1",
    }
    assert [i.state for i in outbox.items()] == [ItemState.WAITING]
    assert actions.task_status(task) == "accepted"


def test_refused_before_queuing_with_the_servers_rule(
    phone: tuple[FieldActions, Outbox, ClientStore],
) -> None:
    actions, _, store = phone
    task, hazard = uuid.uuid4(), uuid.uuid4()
    for call, rule in (
        (lambda: actions.decline_task(task, "  "), "reason_required"),
        (lambda: actions.reject_hazard(hazard, ""), "reason_required"),
        (lambda: actions.mark_rectified(hazard, []), "evidence_required"),
        (lambda: actions.task_note(task, ""), "invalid"),
    ):
        with pytest.raises(ActionRefusedError) as refused:
            call()
        assert refused.value.rule == rule
    actions.accept_task(task)
    with pytest.raises(ActionRefusedError) as refused:
        actions.complete_task(task)  # accepted -> completed skips two steps
    assert refused.value.rule == "illegal_transition"
    assert store.pending_count() == 1


def test_a_hazard_needs_a_place(tmp_path: Path) -> None:
    store = ClientStore(tmp_path / "p.db")
    actions = FieldActions(store)  # no geolocator, no fix
    with pytest.raises(ActionRefusedError) as refused:
        actions.report_hazard(category="fire", severity="high", description="exit blocked")
    assert refused.value.rule == "location_required" and store.pending_count() == 0


def test_a_fix_older_than_fix_max_age_is_nobodys_position_now(tmp_path: Path) -> None:
    clock = ManualClock()
    store = ClientStore(tmp_path / "p.db", device_id="dev-1")
    actions = FieldActions(store, now=clock, fix_max_age_s=120.0)
    fix = Fix(121.4855, 31.2375, 150.0, clock())  # accepted on the form, then left there
    clock.advance(121)
    with pytest.raises(ActionRefusedError) as refused:
        actions.report_hazard(category="gas", severity="high", description="smell", fix=fix)
    assert refused.value.rule == "location_required" and store.pending_count() == 0
    actions.accept_task(uuid.uuid4(), fix=fix)  # a step goes, without the old place
    [m] = store.pending()
    assert "location" not in m.fields
    clock.advance(-2)  # 119 s old: still the user's position
    actions.report_hazard(category="gas", severity="high", description="smell", fix=fix)
    assert store.pending()[-1].fields["accuracy_m"] == 150.0


def test_an_item_being_sent_cannot_be_edited(
    phone: tuple[FieldActions, Outbox, ClientStore],
) -> None:
    actions, outbox, store = phone
    hid = actions.report_hazard(category="fire", severity="high", description="exit blocked")
    [m] = store.pending()
    outbox.mark_sending({m.seq: (m.entity, m.id)})
    assert [i.state for i in outbox.items()] == [ItemState.SENDING]
    with pytest.raises(BeingSentError):
        actions.correct_hazard(hid, description="two exits blocked")
    outbox.clear_sending()
    actions.correct_hazard(hid, description="two exits blocked")
    assert store.get("hazard", hid)["description"] == "two exits blocked"  # type: ignore[index]


def test_steps_in_one_millisecond_keep_their_order(
    phone: tuple[FieldActions, Outbox, ClientStore],
) -> None:
    actions, _outbox, store = phone  # the manual clock does not move between the steps
    hazard = uuid.uuid4()
    actions.reinspect_hazard(hazard)
    actions.close_hazard(hazard)
    stamps = [m.fields["at"] for m in store.pending()]
    assert stamps == sorted(stamps) and len(set(stamps)) == 2
