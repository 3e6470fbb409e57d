"""LoginThrottle on its own: the try budget, reservations released by a success, and a bounded
table that evicts the least recently tried keys instead of forgetting everyone."""

from __future__ import annotations

from orbit_fast.hub.auth import LoginThrottle


def test_tries_are_reserved_before_the_check() -> None:
    t = LoginThrottle()
    grants = [t.reserve("user:a", "ip:1")[0] == 0 for _ in range(50)]  # none answered yet
    assert grants.count(True) == LoginThrottle.FREE and grants[:5] == [True] * 5


def test_a_success_clears_the_account_and_its_own_reservation() -> None:
    t = LoginThrottle()
    for i in range(4):
        t.reserve(f"user:x{i}", "ip:1")
    wait, stamp = t.reserve("user:a", "ip:1")
    assert wait == 0
    t.succeeded("user:a", "ip:1", stamp=stamp)
    assert t.reserve("user:b", "ip:1")[0] == 0  # the success did not count against ip:1
    assert t.reserve("user:c", "ip:1")[0] > 0


def test_a_spray_of_names_evicts_old_keys_not_the_throttled_ones() -> None:
    t = LoginThrottle()
    t.MAX_KEYS = 100
    for _ in range(LoginThrottle.FREE):
        t.reserve("user:admin", "ip:attacker")
    granted = 0
    for i in range(1000):
        t.reserve(f"user:n{i}", f"ip:spray{i}")
        granted += t.reserve("user:admin")[0] == 0  # the attack on the admin goes on
    assert len(t._tries) <= 100
    assert granted == 0  # the spray never bought the attacker another try
    wait, _ = t.reserve("user:admin", "ip:elsewhere")
    assert wait > 0  # the account is still throttled: no global reset
