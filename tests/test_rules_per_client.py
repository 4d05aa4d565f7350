"""``times`` and ``after`` counted for each client address (``times_per = "client"``)."""

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
