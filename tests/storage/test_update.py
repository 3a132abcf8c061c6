"""`update_object` on both backends: create, conflicts re-applied, nothing to write, refusals,
exhaustion. Conflicts are forced in a fixed order (moto's conditional writes are not atomic
under true races, reliability.md §3.4), by a store that runs a competitor before our write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from storage import (
    ObjectInfo,
    PreconditionFailed,
    Store,
    UpdateConflict,
    update_object,
)
from tests.stores import DelegatingStore

KEY = "shared/list.txt"


class _CompetingStore(DelegatingStore):
    """Delegates to `inner`; before each of the first `times` puts of KEY, `competitor` writes."""

    def __init__(self, inner: Store, competitor: Callable[[Store], object], times: int) -> None:
        super().__init__(inner)
        self._competitor = competitor
        self._times = times
        self.puts = 0
        self.conflicts = 0

    def put(self, key: str, data: bytes, **options: Any) -> ObjectInfo:
        if key == KEY and self._times > 0:
            self._times -= 1
            self._competitor(self.inner)
        self.puts += 1
        try:
            return super().put(key, data, **options)
        except PreconditionFailed:
            self.conflicts += 1
            raise


def _append(item: str, sleep: Callable[[float], None] = lambda _: None) -> Callable[[Store], Any]:
    def run(store: Store) -> list[str]:
        return update_object(
            store,
            KEY,
            lambda items: [*items, item],
            parse=lambda data: data.decode().split(),
            serialize=lambda items: " ".join(items).encode(),
            initial=list,
            sleep=sleep,
        )

    return run


def _stored(store: Store) -> list[str]:
    return store.get_bytes(KEY).decode().split()


def test_update_object_creates_the_absent_object_create_only(store: Store) -> None:
    assert _append("a")(store) == ["a"]
    assert _stored(store) == ["a"]


@pytest.mark.parametrize("existing", [False, True])
def test_update_object_lost_race_is_redone_on_the_winner_s_version(
    store: Store, existing: bool
) -> None:
    if existing:
        store.put_bytes(KEY, b"first")
    competing = _CompetingStore(store, _append("theirs"), times=1)
    sleeps: list[float] = []

    written = _append("mine", sleep=sleeps.append)(competing)

    assert competing.conflicts == 1
    assert len(sleeps) == 1
    assert _stored(store) == [*(["first"] if existing else []), "theirs", "mine"]
    assert written == _stored(store)


def test_update_object_returning_the_same_object_writes_nothing(store: Store) -> None:
    store.put_bytes(KEY, b"a b")
    counting = _CompetingStore(store, lambda inner: None, times=0)
    result = update_object(
        counting,
        KEY,
        lambda items: items,
        parse=lambda data: data.decode().split(),
        serialize=lambda items: " ".join(items).encode(),
        initial=list,
    )
    assert result == ["a", "b"]
    assert counting.puts == 0


def test_update_object_change_that_refuses_writes_nothing(store: Store) -> None:
    store.put_bytes(KEY, b"a")

    def refuse(items: list[str]) -> list[str]:
        raise ValueError("no")

    with pytest.raises(ValueError):
        update_object(
            store,
            KEY,
            refuse,
            parse=lambda data: data.decode().split(),
            serialize=lambda items: " ".join(items).encode(),
            initial=list,
        )
    assert _stored(store) == ["a"]


def test_update_object_losing_every_attempt_raises_update_conflict(store: Store) -> None:
    # The competitor changes the content each time (S3's version tag is the content's MD5).
    counter = iter(range(100))
    competitor = lambda inner: inner.put_bytes(KEY, f"c{next(counter)}".encode())  # noqa: E731
    competing = _CompetingStore(store, competitor, times=100)
    sleeps: list[float] = []
    with pytest.raises(UpdateConflict):
        update_object(
            competing,
            KEY,
            lambda items: [*items, "mine"],
            parse=lambda data: data.decode().split(),
            serialize=lambda items: " ".join(items).encode(),
            initial=list,
            attempts=3,
            sleep=sleeps.append,
        )
    assert competing.conflicts == 3
    assert len(sleeps) == 2  # no pause after the last attempt
    assert all(0 <= pause <= 1.0 for pause in sleeps)
    assert "mine" not in _stored(store)
