"""``times`` and ``after`` counted for each client address (``times_per = "client"``), and
what the server keeps of counts: only those a rule reads, and a bounded number of keys."""

from __future__ import annotations

from wire import dialogue

from fakemx import FakeMX, profile_from_data

GREYLIST_FIRST_MESSAGE = {"rules": [{
    "stage": "mail", "times": 1, "times_per": "client",
    "reply": {"code": 451, "text": "4.7.1 Greylisted, try again"},
}]}


def test_times_per_client_gives_each_client_its_own_count() -> None:
    with FakeMX(profile_from_data(GREYLIST_FIRST_MESSAGE, "test")) as mx:
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("mail") == 451
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("body") == 250
        # Server-wide, the rule would have stepped aside for everyone by now.
        assert dialogue(mx.host, mx.port, source="127.0.0.3").code("mail") == 451
        assert dialogue(mx.host, mx.port, source="127.0.0.3").code("body") == 250
        mx.reset()  # forgets the counts
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("mail") == 451


def test_times_is_server_wide_by_default() -> None:
    rules = {"rules": [{**GREYLIST_FIRST_MESSAGE["rules"][0], "times_per": "server"}]}
    with FakeMX(profile_from_data(rules, "test")) as mx:
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("mail") == 451
        assert dialogue(mx.host, mx.port, source="127.0.0.3").code("body") == 250


def test_after_per_client() -> None:
    rules = {"rules": [{"stage": "rcpt", "after": 2, "times_per": "client",
                        "reply": {"code": 550, "text": "5.7.1 Not from you again"}}]}
    with FakeMX(profile_from_data(rules, "test")) as mx:
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("body") == 250
        assert dialogue(mx.host, mx.port, source="127.0.0.3").code("body") == 250
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("rcpt") == 550


def test_a_sink_counts_nothing_and_a_count_keeps_a_bounded_number_of_keys() -> None:
    from fakemx.counters import CountPlan, Event, Scope, Tally

    with FakeMX() as mx:  # no rule reads a count: a thousand senders leave nothing behind
        for n in range(50):
            assert dialogue(mx.host, mx.port, sender=f"s{n}@x.example").code("body") == 250
        assert mx._require_running().state.tally.slots == 0
    per_sender = CountPlan(frozenset({(Event.MESSAGES, Scope.SENDER)}), {})
    tally = Tally(max_slots=3)
    for n in range(10):  # a client sending ten senders
        tally.add(Event.MESSAGES, [(Scope.SENDER, f"s{n}"), (Scope.CLIENT, "c")], 0.0,
                  per_sender)
    assert tally.slots == 3  # the newest three senders; the client count is not read
    assert tally.total(Event.MESSAGES, Scope.SENDER, "s9") == 1
    assert tally.total(Event.MESSAGES, Scope.SENDER, "s0") == 0
    assert tally.total(Event.MESSAGES, Scope.CLIENT, "c") == 0
