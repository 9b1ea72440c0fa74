"""Database leases: one holder at a time, renewal, takeover after expiry, release."""
import time

from starpod import leases


def test_one_holder_until_the_lease_expires_then_takeover(app):
    assert leases.acquire("job", "a", ttl=0.3)
    assert not leases.acquire("job", "b", ttl=0.3)
    assert leases.acquire("job", "a", ttl=0.3)  # renewal
    assert leases.current_holder("job") == "a"
    time.sleep(0.4)
    assert leases.current_holder("job") is None
    assert leases.acquire("job", "b", ttl=5)
    assert not leases.acquire("job", "a", ttl=5)


def test_release_frees_the_lease_only_for_its_holder(app):
    assert leases.acquire("job", "a", ttl=30)
    leases.release("job", "b")
    assert leases.current_holder("job") == "a"
    leases.release("job", "a")
    assert leases.acquire("job", "b", ttl=30)


def test_holder_ids_are_unique():
    assert leases.new_holder_id() != leases.new_holder_id()
