"""The "pull now" broker (server/domain/sync/events.py): a commit wakes exactly the streams
that share one of its scopes, once, and a closed stream leaves nothing behind."""

from __future__ import annotations

from server.domain.sync.events import Broker


def test_publish_wakes_only_the_streams_that_share_a_changed_scope() -> None:
    broker = Broker()
    a = broker.subscribe(["unit:1", "harea:9"])
    b = broker.subscribe(["unit:1"])
    c = broker.subscribe(["unit:2"])
    broker.publish(["unit:1", "harea:9", "grid:7"])
    assert a.queue.get_nowait() == frozenset({"unit:1", "harea:9"})
    assert b.queue.get_nowait() == frozenset({"unit:1"})
    assert c.queue.empty()


def test_wake_ups_coalesce_while_one_is_waiting() -> None:
    broker = Broker()
    a = broker.subscribe(["unit:1", "unit:2"])
    broker.publish(["unit:1"])
    broker.publish(["unit:2"])  # the first wake-up is still unread: merged into the next
    assert a.queue.get_nowait() == frozenset({"unit:1"})
    broker.publish(["unit:1"])
    assert a.queue.get_nowait() == frozenset({"unit:1", "unit:2"})


def test_closed_streams_leave_nothing_behind() -> None:
    broker = Broker()
    subs = [broker.subscribe([f"unit:{i % 7}", f"user:{i}", "ref"]) for i in range(1000)]
    assert broker.subscriptions == 1000
    for sub in subs:
        broker.unsubscribe(sub)
    assert broker.subscriptions == 0
    assert broker._by_scope == {}  # no empty sets per scope either: the index does not grow
    broker.publish(["unit:1", "ref"])  # and publishing to nobody is fine
