"""LoginThrottle on its own: the try budget, reservations released by a success, and a bounded
table that evicts the least recently tried keys instead of forgetting everyone."""

from __future__ import annotations

from orbit_fast.hub.auth import LoginThrottle, login_keys


def test_tries_are_reserved_before_the_check() -> None:
    t = LoginThrottle()
    grants = [t.reserve(*login_keys("a", "1"))[0] == 0 for _ in range(50)]  # none answered yet
    assert grants.count(True) == LoginThrottle.FREE and grants[:5] == [True] * 5


def test_a_success_clears_the_account_and_its_own_reservation() -> None:
    t = LoginThrottle()
    for i in range(4):
        t.reserve(*login_keys(f"x{i}", "1"))
    wait, stamp = t.reserve(*login_keys("a", "1"))
    assert wait == 0
    t.succeeded(*login_keys("a", "1"), stamp=stamp)
    assert t.reserve(*login_keys("b", "1"))[0] == 0  # the success did not count against ip:1
    assert t.reserve(*login_keys("c", "1"))[0] > 0


def test_one_attacker_cannot_lock_a_user_out() -> None:
    t = LoginThrottle()
    for _ in range(40):
        t.reserve(*login_keys("admin", "attacker"))
    assert t.reserve(*login_keys("admin", "attacker"))[0] > 0
    assert t.reserve(*login_keys("admin", "office"))[0] == 0  # the admin still gets in


def test_a_spray_of_names_evicts_old_keys_not_the_throttled_ones() -> None:
    t = LoginThrottle()
    t.MAX_KEYS = 100
    for _ in range(LoginThrottle.FREE):
        t.reserve(*login_keys("admin", "attacker"))
    granted = 0
    for i in range(1000):
        t.reserve(*login_keys(f"n{i}", f"spray{i}"))
        granted += t.reserve(*login_keys("admin", "attacker"))[0] == 0  # the attack goes on
    assert len(t._tries) <= 100
    assert granted == 0  # the spray never bought the attacker another try
