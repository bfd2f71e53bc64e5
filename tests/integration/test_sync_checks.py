"""Safety self-checks through sync, both databases: templates reach every phone as reference
data, a submission made offline by enterprise staff goes through REST's rules into the domain
table, and submissions reach exactly the phones REST would show them to."""

from __future__ import annotations

import time
import uuid
from typing import Any

from litestar.testing import TestClient

from schemas.sync import AckStatus, Mutation, Op, Reason
from server.demo import did
from tests import factories as f
from tests.conftest import Sessions
from tests.integration.sync_helpers import Phone
from tests.integration.test_sync_api import push


def _template(client: TestClient[Any], auth: Sessions) -> dict[str, Any]:
    r = client.get(f"/api/v1/check-templates/{did('check:weekly')}", headers=auth("enterprise1"))
    assert r.status_code == 200, r.text
    return dict(r.json())


def _results(tpl: dict[str, Any], fail: int = 2) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"item_id": i["id"], "result": "pass"} for i in tpl["items"]]
    out[fail] = {"item_id": tpl["items"][fail]["id"], "result": "fail", "note": "私拉电线"}
    return out


def test_offline_self_check_goes_through_rest_rules_and_reaches_its_supervisors(
    client: TestClient[Any], auth: Sessions
) -> None:
    tpl = _template(client, auth)
    staff = Phone(client, auth("enterprise1"))
    phones = {who: Phone(client, auth(who)) for who in ("inspector1", "inspector2", "fire1")}
    try:
        staff.sync()
        held = staff.get("check_template", tpl["id"])
        assert held is not None and held["code"] == tpl["code"]
        assert [i["id"] for i in held["items"]] == [i["id"] for i in tpl["items"]]

        # Offline: fill in the week's checklist; it shows at once, then syncs.
        sid = uuid.uuid4()
        staff.store.write(
            "check_submission",
            sid,
            {"template_id": tpl["id"], "week": f.week(-1), "results": _results(tpl)},
            op=Op.CREATE,
        )
        assert staff.get("check_submission", sid)["week"] == f.week(-1)  # type: ignore[index]
        staff.sync()
        assert staff.store.pending_count() == 0 and not staff.store.log_entries("refused")
        mine = staff.get("check_submission", sid)
        assert mine is not None and mine["enterprise_id"] == str(did("enterprise:bund-mall"))
        assert mine["submitted_by"] and mine["submitted_at"]

        # The domain row REST reads, with the audit entry REST would have written.
        got = client.get(f"/api/v1/check-submissions/{sid}", headers=auth("dispatcher"))
        assert got.status_code == 200, got.text
        row = got.json()
        assert row["week"] == f.week(-1) and row["submitted_by"] == mine["submitted_by"]
        assert [r["result"] for r in row["results"]] == [r["result"] for r in _results(tpl)]
        audit = client.get(
            "/api/v1/audit", headers=auth("admin"), params={"entity_id": str(sid)}
        ).json()
        assert any(e["action"] == "submit" for e in audit), audit

        # A REST submission syncs out too; each phone holds what REST shows its user.
        rest = client.post(
            "/api/v1/check-submissions",
            headers=auth("enterprise1"),
            json={"template_id": tpl["id"], "week": f.week(), "results": _results(tpl, 0)},
        )
        assert rest.status_code == 201, rest.text
        for p in (staff, *phones.values()):
            p.sync()
        rid = rest.json()["id"]
        assert staff.get("check_submission", rid) is not None
        assert phones["inspector1"].get("check_submission", sid) is not None
        assert phones["inspector1"].get("check_submission", rid) is not None
        for who in ("inspector2", "fire1"):
            assert phones[who].get("check_submission", sid) is None, who
            assert phones[who].store.all("check_submission") == {}, who
        assert phones["fire1"].get("check_template", tpl["id"]) is not None  # reference data
    finally:
        for p in (staff, *phones.values()):
            p.close()


def test_sync_refuses_what_rest_refuses_for_self_checks(
    client: TestClient[Any], auth: Sessions
) -> None:
    tpl = _template(client, auth)
    staff, fire = auth("enterprise1"), auth("fire1")
    h = int(time.time() * 1000) << 16
    first, twin, partial = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    week = {"template_id": tpl["id"], "week": f.week(), "results": _results(tpl)}

    def create(seq: int, rid: uuid.UUID, fields: dict[str, Any]) -> Mutation:
        return mut(seq, rid, fields, op=Op.CREATE)

    def mut(
        seq: int,
        rid: uuid.UUID,
        fields: dict[str, Any],
        entity: str = "check_submission",
        **kw: Any,
    ) -> Mutation:
        return Mutation(seq=seq, entity=entity, id=rid, hlc=h + seq, fields=fields, **kw)

    muts = [
        create(1, first, week),
        create(2, twin, week),  # the same week again, in the same batch
        create(3, partial, {**week, "week": f.week(-1), "results": _results(tpl)[:3]}),
        create(4, uuid.uuid4(), {**week, "week": "2026-31"}),
        create(5, uuid.uuid4(), {**week, "template_id": str(uuid.uuid4())}),
        create(6, uuid.uuid4(), {**week, "enterprise_id": str(uuid.uuid4())}),
        mut(7, first, {"week": f.week(-1)}),
        mut(8, uuid.UUID(tpl["id"]), {"name": "x"}, entity="check_template"),
        mut(9, first, {}, op=Op.DELETE),
    ]
    reply = push(client, staff, "dev-checks", muts)
    got = [(a.refusal.code, a.refusal.field) if a.refusal else a.status for a in reply.acks]
    assert got == [
        AckStatus.ACCEPTED,
        (Reason.RULE, "week"),
        (Reason.INVALID_VALUE, "results"),
        (Reason.INVALID_VALUE, "week"),
        (Reason.INVALID_VALUE, "template_id"),
        (Reason.FORBIDDEN, ""),
        (Reason.RULE, ""),
        (Reason.READ_ONLY, ""),
        (Reason.NOT_DELETABLE, ""),
    ]
    assert client.get(f"/api/v1/check-submissions/{twin}", headers=staff).status_code == 404
    listed = client.get("/api/v1/check-submissions", headers=staff).json()
    assert [x["week"] for x in listed] == [f.week()]
    # A responder cannot submit at all, and a retried batch answers the same.
    other = push(client, fire, "dev-fire", [create(1, uuid.uuid4(), week)])
    assert other.acks[0].refusal is not None and other.acks[0].refusal.code is Reason.FORBIDDEN
    again = push(client, staff, "dev-checks", muts)
    assert again.acks[0].status is AckStatus.DUPLICATE
