"""The broker's login bounds: per-address backoff after failed logins, and a bounded pool of password hashes."""

from __future__ import annotations

import threading

import pytest

from workbench.domain.logins import LoginBusy, LoginThrottle, PasswordHasher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_address_waits_after_its_free_failures_doubling_to_the_cap_and_a_success_forgets():
    clock = Clock()
    throttle = LoginThrottle(free_failures=3, first_wait=0.5, max_wait=4.0, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1")
        assert throttle.wait_needed("10.0.0.1") == 0.0
    waits = []
    for _ in range(5):
        throttle.failed("10.0.0.1")
        waits.append(throttle.wait_needed("10.0.0.1"))
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert throttle.wait_needed("10.0.0.2") == 0.0  # other addresses are not held up
    clock.now += 4.0
    assert throttle.wait_needed("10.0.0.1") == 0.0
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.wait_needed("10.0.0.1") == 0.0


def test_the_hasher_runs_checks_on_its_threads_only_and_refuses_what_waits_too_long():
    hasher = PasswordHasher(threads=2, wait=0.2)
    release = threading.Event()
    running: set[str] = set()

    def slow() -> bool:
        running.add(threading.current_thread().name)
        release.wait(5)
        return True

    results: list[object] = []

    def login() -> None:
        try:
            results.append(hasher.check(slow))
        except LoginBusy as exc:
            results.append(exc)

    threads = [threading.Thread(target=login) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    release.set()
    assert len(results) == 4 and all(isinstance(r, LoginBusy) for r in results)
    assert len(running) == 2 and all(name.startswith("password-hash") for name in running)
    assert hasher.check(lambda: True) is True
    with pytest.raises(ZeroDivisionError):
        hasher.check(lambda: 1 / 0)
