"""The FCM stand-in's HTTP/1.1 side: what the SDK's requests/urllib3 and httpx clients rely on."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

from tests.peers.fcm_standin import FcmStandIn

SEND = "/v1/projects/liandong-test/messages:send"


def _body(token: str) -> bytes:
    return json.dumps({"message": {"token": token, "data": {"k": "v"}}}).encode()


def _post(token: str, *extra: str) -> bytes:
    body = _body(token)
    head = [f"POST {SEND} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, Any]]]:
    """Read `count` Content-Length framed responses off a raw socket."""
    buffer = b""
    answers: list[tuple[int, dict[str, Any]]] = []
    while len(answers) < count:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = buffer[:end].decode("latin-1").split("\r\n")
            fields = dict(line.lower().split(": ", 1) for line in head[1:])
            start, stop = end + 4, end + 4 + int(fields["content-length"])
            if len(buffer) >= stop:
                answers.append((int(head[0].split()[1]), json.loads(buffer[start:stop])))
                buffer = buffer[stop:]
                continue
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        buffer += chunk
    return answers


def test_keep_alive_serves_many_requests_on_one_connection(fcm: FcmStandIn) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fcm.port, timeout=5)
    for n in range(3):
        conn.request(
            "POST", SEND, body=_body(f"t{n}"), headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json; charset=UTF-8"
        assert json.loads(response.read())["name"].startswith("projects/liandong-test/messages/")
    conn.close()
    assert fcm.tokens() == ["t0", "t1", "t2"]


def test_pipelined_and_split_requests_are_answered_in_order(fcm: FcmStandIn) -> None:
    with socket.create_connection(("127.0.0.1", fcm.port), timeout=5) as sock:
        sock.sendall(_post("a") + _post("b"))  # two requests in one segment
        raw = _post("c")
        sock.sendall(raw[:10])  # one request in three pieces, body split from the head
        time.sleep(0.02)
        sock.sendall(raw[10:-5])
        time.sleep(0.02)
        sock.sendall(raw[-5:])
        answers = _read_responses(sock, 3)
    assert [status for status, _ in answers] == [200, 200, 200]
    assert fcm.tokens() == ["a", "b", "c"]


def test_connection_close_and_http_1_0_close_after_the_answer(fcm: FcmStandIn) -> None:
    for request in (_post("x", "Connection: close"), _post("y").replace(b"HTTP/1.1", b"HTTP/1.0")):
        with socket.create_connection(("127.0.0.1", fcm.port), timeout=5) as sock:
            sock.sendall(request)
            [(status, _)] = _read_responses(sock, 1)
            assert status == 200
            assert sock.recv(1) == b""  # the server closed its end


def test_expect_100_continue_gets_the_interim_answer(fcm: FcmStandIn) -> None:
    body = _body("e")
    head = f"POST {SEND} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    with socket.create_connection(("127.0.0.1", fcm.port), timeout=5) as sock:
        sock.sendall((head + "Expect: 100-continue\r\n\r\n").encode())
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        [(status, _)] = _read_responses(sock, 1)
    assert status == 200


def test_errors_for_what_is_not_the_send_route(fcm: FcmStandIn) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fcm.port, timeout=5)
    cases = [
        ("POST", "/v1/projects/p/elsewhere", b"{}", 404),
        ("PUT", SEND, b"{}", 501),
        ("POST", SEND, b"{not json", 400),
        ("GET", "/nothing", None, 404),
    ]
    for method, path, body, status in cases:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        assert response.status == status, (method, path)
        assert "error" in json.loads(response.read())
    conn.request("GET", "/_stats")
    stats = json.loads(conn.getresponse().read())
    # Nothing reached FCM's logic: the invalid JSON is refused before it, as before.
    assert stats["request_count"] == 0
    assert stats["accepted_count"] == 0
    conn.close()


def test_a_malformed_request_gets_400_and_the_connection_closes(fcm: FcmStandIn) -> None:
    with socket.create_connection(("127.0.0.1", fcm.port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        [(status, _)] = _read_responses(sock, 1)
        assert status == 400
        assert sock.recv(1) == b""


def test_stop_closes_open_connections() -> None:
    standin = FcmStandIn().start()
    sock = socket.create_connection(("127.0.0.1", standin.port), timeout=5)
    sock.sendall(_post("z"))
    _read_responses(sock, 1)
    standin.stop()
    assert sock.recv(1) == b""
    sock.close()
