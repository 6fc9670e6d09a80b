"""The user directory (names, roles, password checks) and the failed-login throttle."""

from __future__ import annotations

import time

import pytest

from servers.errors import InvalidCredentials, Throttled
from servers.users import LoginThrottle, UserDirectory

# Argon2's minimum costs: the hashes are real, just cheap.
CHEAP = {"time_cost": 1, "memory_kib": 8}


@pytest.fixture(scope="module")
def users() -> UserDirectory:
    return UserDirectory(5, **CHEAP)


# --- UserDirectory ------------------------------------------------------------------------


def test_the_directory_holds_n_users_named_by_index(users: UserDirectory) -> None:
    assert len(users) == 5
    for i in range(5):
        user = users.get(i)
        assert user is not None
        assert (user.id, user.username) == (i, f"user{i}")


def test_user0_is_the_only_admin(users: UserDirectory) -> None:
    roles = [u.role for i in range(5) if (u := users.get(i)) is not None]
    assert roles == ["admin", "user", "user", "user", "user"]


@pytest.mark.parametrize("user_id", [-1, 5, 1000])
def test_get_outside_the_directory_is_none(users: UserDirectory, user_id: int) -> None:
    assert users.get(user_id) is None


def test_the_view_shows_id_name_and_role_only(users: UserDirectory) -> None:
    user = users.get(2)
    assert user is not None
    assert user.view() == {"id": 2, "username": "user2", "role": "user"}


def test_passwords_are_stored_as_argon2id_hashes(users: UserDirectory) -> None:
    user = users.get(3)
    assert user is not None
    assert user.password_hash.startswith("$argon2id$")
    assert "secret-3" not in user.password_hash


def test_verify_returns_the_user_for_the_right_password(users: UserDirectory) -> None:
    assert users.verify("user0", "secret-0").role == "admin"
    assert users.verify("user4", "secret-4").id == 4


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("user1", "secret-2"),
        ("user1", "wrong"),
        ("user1", ""),
        ("user5", "secret-5"),
        ("nobody", "secret-0"),
        ("", "secret-0"),
    ],
    ids=["other-users-password", "wrong", "empty", "just-past-the-end", "unknown", "no-name"],
)
def test_wrong_password_and_unknown_user_raise_the_same_error(
    users: UserDirectory, username: str, password: str
) -> None:
    with pytest.raises(InvalidCredentials) as exc:
        users.verify(username, password)
    assert (exc.value.code, exc.value.detail) == (
        "invalid_credentials",
        "invalid username or password",
    )


def test_an_unknown_user_with_the_dummy_hash_password_is_still_refused(
    users: UserDirectory,
) -> None:
    # Unknown names are checked against user0's hash; its password must not log them in.
    with pytest.raises(InvalidCredentials):
        users.verify("ghost", "secret-0")


def test_the_directory_size_follows_the_setting() -> None:
    assert len(UserDirectory(1, **CHEAP)) == 1
    assert len(UserDirectory(12, **CHEAP)) == 12


# --- LoginThrottle ------------------------------------------------------------------------


def test_a_name_without_failures_may_try() -> None:
    LoginThrottle(max_failures=1, window=60).check("user1")


def test_the_name_is_locked_out_at_max_failures() -> None:
    throttle = LoginThrottle(max_failures=3, window=60)
    for _ in range(2):
        throttle.failed("user1")
        throttle.check("user1")
    throttle.failed("user1")
    with pytest.raises(Throttled) as exc:
        throttle.check("user1")
    assert 1 <= exc.value.retry_after <= 60
    assert exc.value.status == 429


def test_failures_are_counted_per_name() -> None:
    throttle = LoginThrottle(max_failures=2, window=60)
    throttle.failed("user1")
    throttle.failed("user2")
    throttle.check("user1")
    throttle.check("user2")
    throttle.failed("user1")
    with pytest.raises(Throttled):
        throttle.check("user1")
    throttle.check("user2")


def test_the_lockout_ends_when_the_window_has_passed() -> None:
    throttle = LoginThrottle(max_failures=2, window=0.05)
    throttle.failed("user1")
    throttle.failed("user1")
    with pytest.raises(Throttled):
        throttle.check("user1")
    time.sleep(0.1)
    throttle.check("user1")
    # A new window starts from nothing: one more failure does not lock the name again.
    throttle.failed("user1")
    throttle.check("user1")


def test_a_successful_login_forgets_the_failures() -> None:
    throttle = LoginThrottle(max_failures=3, window=60)
    throttle.failed("user1")
    throttle.failed("user1")
    throttle.succeeded("user1")
    throttle.failed("user1")
    throttle.failed("user1")
    throttle.check("user1")


def test_success_for_an_unknown_name_is_harmless() -> None:
    LoginThrottle(max_failures=1, window=60).succeeded("never-failed")


def test_the_table_is_bounded_and_forgets_the_oldest_name_first() -> None:
    throttle = LoginThrottle(max_failures=1, window=60, max_entries=3)
    for name in ("a", "b", "c"):
        throttle.failed(name)
    throttle.failed("d")  # evicts "a"
    throttle.check("a")
    for name in ("b", "c", "d"):
        with pytest.raises(Throttled):
            throttle.check(name)


def test_a_fresh_failure_keeps_a_name_from_eviction() -> None:
    throttle = LoginThrottle(max_failures=1, window=60, max_entries=3)
    for name in ("a", "b", "c", "a"):
        throttle.failed(name)
    throttle.failed("d")  # "b" is now the least recently failed
    throttle.check("b")
    for name in ("a", "c", "d"):
        with pytest.raises(Throttled):
            throttle.check(name)


def test_a_spray_of_names_does_not_grow_past_the_bound() -> None:
    throttle = LoginThrottle(max_failures=1, window=60, max_entries=10)
    for i in range(1000):
        throttle.failed(f"sprayed{i}")
    locked = 0
    for i in range(1000):
        try:
            throttle.check(f"sprayed{i}")
        except Throttled:
            locked += 1
    assert locked == 10
