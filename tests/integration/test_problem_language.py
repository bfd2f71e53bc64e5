"""Problem details answer in the language the request asks for; codes and fields never change."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from litestar.testing import TestClient

from tests import factories as f
from tests.conftest import Sessions

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
HAN = re.compile(r"[\u4e00-\u9fff]")


def _both(client: TestClient[Any], method: str, url: str, **kw: Any) -> tuple[Any, Any]:
    headers = kw.pop("headers", {})
    en = client.request(method, url, headers=headers, **kw)
    zh = client.request(method, url, headers={**headers, **ZH}, **kw)
    return en, zh


def _same_machine_parts(en: Any, zh: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    assert en.status_code == zh.status_code
    a, b = en.json(), zh.json()
    for key in ("type", "status", "code", "instance"):
        assert a[key] == b[key], key
    assert [e["field"] for e in a.get("errors") or []] == [
        e["field"] for e in b.get("errors") or []
    ]
    assert en.headers["content-language"] == "en"
    assert zh.headers["content-language"] == "zh-CN"
    assert "accept-language" in zh.headers["vary"].lower()
    assert not HAN.search(a["title"] + (a["detail"] or ""))
    assert HAN.search(b["title"]) and HAN.search(b["detail"] or "")
    return a, b


def test_domain_error_in_chinese(client: TestClient[Any], auth: Sessions) -> None:
    ident = uuid.uuid4()
    en, zh = _both(client, "GET", f"/api/v1/grids/{ident}", headers=auth("admin"))
    a, b = _same_machine_parts(en, zh)
    assert en.status_code == 404 and a["code"] == "not_found"
    assert a["title"] == "Not found" and a["detail"] == f"no grid {ident}"
    assert b["title"] == "未找到" and b["detail"] == f"没有网格 {ident}"


def test_field_error_with_parameters_in_chinese(client: TestClient[Any], auth: Sessions) -> None:
    en, zh = _both(
        client, "GET", "/api/v1/hazards?near=121.48,31.23&radius_m=900000", headers=auth("admin")
    )
    a, b = _same_machine_parts(en, zh)
    assert a["errors"] == [{"field": "radius_m", "message": "radius_m must be in (0, 500000]"}]
    assert b["errors"] == [{"field": "radius_m", "message": "radius_m 必须在 (0, 500000] 之内"}]


def test_msgspec_validation_in_chinese(client: TestClient[Any], auth: Sessions) -> None:
    body = f.incident()
    body["location"]["coordinates"] = [181.0, 31.0]
    body["colour"] = "red"
    en, zh = _both(client, "POST", "/api/v1/incidents", headers=auth("dispatcher"), json=body)
    a, b = _same_machine_parts(en, zh)
    assert en.status_code == 400 and a["code"] == "validation_error"
    assert b["title"] == "请求无效"
    assert "`float`" in b["errors"][0]["message"]  # type names stay as they are


def test_unknown_field_names_the_field_in_both(client: TestClient[Any], auth: Sessions) -> None:
    body = {**f.hazard(), "colour": "red"}
    en, zh = _both(client, "POST", "/api/v1/hazards", headers=auth("inspector1"), json=body)
    a, b = _same_machine_parts(en, zh)
    assert "colour" in a["detail"] and "colour" in b["detail"]
    assert "未知字段 `colour`" in b["detail"]


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/api/v1/tasks", 401),  # our Unauthenticated, raised in the auth middleware
        ("GET", "/api/v1/no-such-route", 404),  # Litestar's own 404
    ],
)
def test_framework_and_auth_errors_in_chinese(
    client: TestClient[Any], method: str, url: str, status: int
) -> None:
    en, zh = _both(client, method, url)
    assert en.status_code == status
    _same_machine_parts(en, zh)


def test_strict_body_errors_in_chinese(client: TestClient[Any], auth: Sessions) -> None:
    headers = {**auth("inspector1"), "Content-Type": "text/plain"}
    en, zh = _both(client, "POST", "/api/v1/hazards", headers=headers, content=b"{}")
    a, b = _same_machine_parts(en, zh)
    assert en.status_code == 415 and b["detail"] == "该接口只接受 application/json 请求内容"
    headers = {**auth("inspector1"), "Content-Type": "application/json"}
    en, zh = _both(client, "POST", "/api/v1/hazards", headers=headers, content=b"{nope")
    a, b = _same_machine_parts(en, zh)
    assert en.status_code == 400 and a["code"] == "http_error"
    assert b["detail"].startswith("请求内容不是有效的 JSON")


@pytest.mark.parametrize("header", [None, "fr-FR", "de;q=0.9, *;q=0.1"])
def test_english_when_no_known_language(
    client: TestClient[Any], auth: Sessions, header: str | None
) -> None:
    headers = auth("admin") | ({"Accept-Language": header} if header else {})
    r = client.get(f"/api/v1/grids/{uuid.uuid4()}", headers=headers)
    assert r.json()["title"] == "Not found"
    assert r.headers["content-language"] == "en"
