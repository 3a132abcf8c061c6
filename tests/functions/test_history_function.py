"""The history function: windows, pages, one record, its overlay, and who may see what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from functions.runtime import Runtime, install_runtime
from storage import Store, keys
from tests.functions.conftest import Stack, error_of
from tests.functions.fake_serving import overlay_png
from tests.functions.stores import FaultyStore, never


def put_record(store: Store, user_id: str, moment: datetime, *, gradcam: bool = False) -> str:
    inference_id = keys.new_inference_id(moment)
    record = {
        "schema": 1,
        "id": inference_id,
        "kind": "gradcam" if gradcam else "predict",
        "user_id": user_id,
        "created_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "model": {"name": "cnn_vit", "version": 3, "run_id": "r"},
        "predicted_class": "covid",
        "class_index": 1,
        "class_names": ["normal", "covid", "no-covid"],
        "probabilities": {"normal": 0.05, "covid": 0.9, "no-covid": 0.05},
        "input": {
            "sha256": "0" * 64,
            "size_bytes": 10,
            "width": 2,
            "height": 2,
            "pixels": 4,
            "format": "PNG",
            "mode": "L",
            "transformation": None,
        },
        "latency_ms": {"model": 1.0, "total": 2.0},
    }
    store.put_json(keys.inference_record(user_id, inference_id), record)
    if gradcam:
        store.put(keys.gradcam_image(user_id, inference_id), overlay_png(4))
    return inference_id


NOW = datetime.now(UTC)


def _get(stack: Stack, path: str = "/", user: str = "1"):  # type: ignore[no-untyped-def]
    return stack.client("history").get(path, headers=stack.bearer(user))


def _iso(moment: datetime) -> str:
    return quote(moment.isoformat())


def test_history_default_window_is_the_last_24_hours_newest_first(any_stack: Stack) -> None:
    recent = put_record(any_stack.root, "1", NOW - timedelta(hours=1))
    older = put_record(any_stack.root, "1", NOW - timedelta(hours=23))
    put_record(any_stack.root, "1", NOW - timedelta(hours=25))
    put_record(any_stack.root, "3", NOW - timedelta(hours=2))  # another user's
    body = _get(any_stack).get_json()
    assert [record["id"] for record in body["records"]] == [recent, older]
    assert body["count"] == 2
    assert body["next_page_token"] is None
    assert body["user_id"] == "1"


def test_history_explicit_window_with_naive_and_offset_times(stack: Stack) -> None:
    day = datetime(2026, 3, 10, tzinfo=UTC)
    inside = [put_record(stack.root, "1", day + timedelta(hours=h)) for h in (9, 10, 11)]
    put_record(stack.root, "1", day + timedelta(hours=8, minutes=59))
    put_record(stack.root, "1", day + timedelta(hours=11, minutes=1))
    for stop in ("2026-03-10T12:00:00%2B01:00", "2026-03-10T12:00:00+01:00", "2026-03-10T11:00Z"):
        body = _get(stack, f"/?start_time=2026-03-10T09:00:00&stop_time={stop}")
        assert [record["id"] for record in body.get_json()["records"]] == inside[::-1]


def test_history_pages_cover_the_window_once_each(any_stack: Stack) -> None:
    ids = [put_record(any_stack.root, "1", NOW - timedelta(minutes=m)) for m in (1, 2, 3, 4, 5)]
    # one record exactly one day earlier: a different day folder of the key layout
    ids.append(put_record(any_stack.root, "1", NOW - timedelta(hours=20)))
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        query = "/?limit=2" + (f"&page_token={token}" if token else "")
        body = _get(any_stack, query).get_json()
        seen += [record["id"] for record in body["records"]]
        pages += 1
        token = body["next_page_token"]
        if token is None:
            break
    assert pages == 3
    assert seen == ids  # newest first, none twice, none lost


def test_history_reads_only_the_keys_in_the_window(stack: Stack) -> None:
    for days in range(1, 40):
        put_record(stack.root, "1", NOW - timedelta(days=days))
    wanted = put_record(stack.root, "1", NOW - timedelta(minutes=5))
    counting = FaultyStore(stack.root, fails=never, error=RuntimeError)
    install_runtime(
        Runtime(stack.runtime.settings, root_store=counting, auth_store=stack.auth_store)
    )
    body = _get(stack).get_json()
    assert [record["id"] for record in body["records"]] == [wanted]
    assert counting.gets == [keys.inference_record("1", wanted)]
    ((_, start_after),) = counting.listings
    assert start_after is not None  # the listing starts at the window, not at the beginning


@pytest.mark.parametrize(
    "query",
    [
        "/?limit=0",
        "/?limit=101",
        "/?limit=ten",
        "/?start_time=yesterday",
        "/?start_time=2026-01-02&stop_time=2026-01-01",
        "/?user=../2",
    ],
)
def test_history_bad_parameters_are_400(stack: Stack, query: str) -> None:
    response = _get(stack, query)
    assert response.status_code == 400
    assert error_of(response) == "invalid_parameter"


def test_history_tampered_or_foreign_page_tokens_are_refused(stack: Stack) -> None:
    for minutes in (1, 2, 3):
        put_record(stack.root, "1", NOW - timedelta(minutes=minutes))
        put_record(stack.root, "3", NOW - timedelta(minutes=minutes))
    token = _get(stack, "/?limit=1").get_json()["next_page_token"]
    body, signature = token.split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + signature
    for bad in (tampered, token + "x", "garbage", "a.b"):
        assert error_of(_get(stack, f"/?limit=1&page_token={bad}")) == "invalid_page_token"
    # bound to the caller: bob cannot continue alice's listing
    assert error_of(_get(stack, f"/?limit=1&page_token={token}", user="3")) == "invalid_page_token"
    # bound to the window
    other_window = f"/?limit=1&page_token={token}&start_time=2020-01-01"
    assert error_of(_get(stack, other_window)) == "invalid_page_token"


def test_history_one_record_for_its_owner_only(stack: Stack) -> None:
    mine = put_record(stack.root, "1", NOW - timedelta(minutes=1))
    assert _get(stack, f"/{mine}").get_json()["id"] == mine
    response = _get(stack, f"/{mine}", user="3")  # bob asks for alice's id
    assert response.status_code == 404
    assert error_of(response) == "not_found"
    assert _get(stack, "/not-an-id").status_code == 404


@pytest.mark.parametrize("damage", [b"{not json", b"\xff\xfe", b""])
def test_history_record_that_is_not_json_is_404_listed_nowhere_and_logged(
    stack: Stack, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    good = put_record(stack.root, "1", NOW - timedelta(minutes=2))
    damaged = keys.new_inference_id(NOW - timedelta(minutes=1))
    stack.root.put(keys.inference_record("1", damaged), damage)

    response = _get(stack, f"/{damaged}")

    assert response.status_code == 404
    assert error_of(response) == "not_found"
    assert any("unreadable inference record" in r.getMessage() for r in caplog.records)
    assert [record["id"] for record in _get(stack).get_json()["records"]] == [good]


def test_history_admin_may_read_any_user(stack: Stack) -> None:
    alices = put_record(stack.root, "1", NOW - timedelta(minutes=1), gradcam=True)
    assert _get(stack, "/?user=1", user="2").get_json()["records"][0]["id"] == alices
    assert _get(stack, f"/{alices}?user=1", user="2").status_code == 200
    assert _get(stack, f"/{alices}/gradcam?user=1", user="2").data == overlay_png(4)


def test_history_user_may_not_read_another_user(stack: Stack) -> None:
    response = _get(stack, "/?user=1", user="3")
    assert response.status_code == 403
    assert error_of(response) == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_history_gradcam_image_of_a_record(stack: Stack) -> None:
    with_overlay = put_record(stack.root, "1", NOW - timedelta(minutes=1), gradcam=True)
    without = put_record(stack.root, "1", NOW - timedelta(minutes=2))
    response = _get(stack, f"/{with_overlay}/gradcam")
    assert (response.status_code, response.mimetype) == (200, "image/png")
    assert response.data == overlay_png(4)
    assert error_of(_get(stack, f"/{without}/gradcam")) == "not_found"
    assert _get(stack, f"/{with_overlay}/gradcam", user="3").status_code == 404


def test_history_records_written_by_predict_are_listed(stack: Stack) -> None:
    from tests.functions.sample_images import png_bytes

    predict = stack.client("predict")
    made = [
        predict.post(
            "/", data=png_bytes(), content_type="image/png", headers=stack.bearer()
        ).get_json()["id"]
        for _ in range(3)
    ]
    assert [r["id"] for r in _get(stack).get_json()["records"]] == made[::-1]


def test_history_needs_a_token_and_get(stack: Stack) -> None:
    client = stack.client("history")
    assert client.get("/").status_code == 401
    response = client.post("/", headers=stack.bearer())
    assert (response.status_code, response.headers["Allow"]) == (405, "GET, HEAD")
