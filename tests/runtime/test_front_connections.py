"""The front closes kept-alive client connections past their age, so kube-proxy (which picks a
pod per connection, not per request) spreads long-lived clients over a Service's pods again:
on a real node, a canary under the provider Service got no request from a client that kept
its connection alive, and was rolled back as inconclusive.

The front runs as its pod runs it (`python3 -m lmo_runtime.front`); the paths used here are
answered by the front itself, so no Triton server is needed."""

from __future__ import annotations

import http.client
import time

from tests.fixtures.front import FrontProcess


def _ask(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
    conn.request("GET", "/v1/models")
    r = conn.getresponse()
    r.read()
    assert r.status == 200
    return r


def _front(tmp_path, *extra: str) -> FrontProcess:
    return FrontProcess(task="text-classification", model="sentiment", version="v1",
                        triton_url="http://127.0.0.1:9", repository=tmp_path,
                        extra=list(extra)).start()


def test_a_kept_alive_connection_is_closed_after_its_age(tmp_path):
    front = _front(tmp_path, "--max-connection-age", "1")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
        first = _ask(conn)
        assert first.getheader("Connection", "").lower() != "close"
        sock = conn.sock
        _ask(conn)
        assert conn.sock is sock, "the connection is reused while young"
        time.sleep(1.2)
        old = _ask(conn)
        assert old.getheader("Connection", "").lower() == "close"
        assert conn.sock is None, "the client was told to reconnect"
        # its next request opens a new connection, young again
        assert _ask(conn).getheader("Connection", "").lower() != "close"
    finally:
        front.stop()


def test_connections_live_by_default_and_never_with_age_zero(tmp_path):
    for extra in ((), ("--max-connection-age", "0")):
        front = _front(tmp_path, *extra)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
            _ask(conn)
            sock = conn.sock
            for _ in range(3):
                assert _ask(conn).getheader("Connection", "").lower() != "close"
            assert conn.sock is sock
        finally:
            front.stop()
