"""The web app (functions/webapp_static/) in headless Chromium against the real stack.

The gateway serves the app at /app/ in front of the local model server with the session's
exported demo model. Each test starts from a fresh page load, so signed out (the token lives in
the page's memory only). With UPDATE_SCREENSHOTS=1 the tests rewrite
docs/screenshots/{sign-in,classify,history,record}.png.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from cnn_vit.config import CLASS_NAMES
from functions.webapp import SECURITY_HEADERS
from synthetic.xrays import encode_png, generate_xray
from tests.web.pages import (
    all_css,
    assert_accessible,
    by_css,
    cards,
    choose_files,
    console_problems,
    foreign_requests,
    no_spinner,
    open_app,
    percentages,
    screenshot,
    sign_in,
    signed_in,
    visible,
    wait_for,
    wait_loaded,
    wait_settled,
)
from tests.web.stack import ADMIN, ALICE, BOB, MODEL_VERSION, WebStack

pytestmark = pytest.mark.timeout(180)


def film(class_name: str, seed: int) -> bytes:
    return encode_png(
        generate_xray(class_name, np.random.default_rng([seed, len(class_name)])).image
    )


def write_films(folder: Path, seed: int = 7) -> dict[str, Path]:
    paths = {}
    for class_name in CLASS_NAMES:
        path = folder / f"{class_name}-film.png"
        path.write_bytes(film(class_name, seed))
        paths[class_name] = path
    return paths


def api_answer(
    stack: WebStack, path: str, data: bytes, base_url: str = "", **query: str
) -> dict[str, Any]:
    """The API's own answer for an image, as alice."""
    answer = requests.post(
        (base_url or stack.url) + path,
        params=query,
        files={"file": ("film.png", data, "image/png")},
        headers={"Authorization": f"Bearer {stack.token()}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_the_app_is_served_with_its_security_headers(web_stack: WebStack) -> None:
    page = requests.get(web_stack.url + "/app/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    # No inline script or style in the markup (the policy would refuse them anyway).
    assert "<script>" not in page.text
    assert 'style="' not in page.text
    browser_root = requests.get(
        web_stack.url + "/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=10
    )
    assert (browser_root.status_code, browser_root.headers["Location"]) == (302, "/app/")


def test_sign_in_says_why_it_failed_then_succeeds(browser: Any, web_stack: WebStack) -> None:
    open_app(browser, web_stack.url)
    assert browser.current_url == web_stack.url + "/app/"
    assert browser.title.startswith("Sign in")
    by_css(browser, "#sign-in-email").send_keys(ALICE[0])
    screenshot(browser, "sign-in.png")
    assert_accessible(browser)

    sign_in(browser, (ALICE[0], "not-the-password"))
    error = wait_for(
        lambda: visible(browser, "#sign-in-error") and by_css(browser, "#sign-in-error")
    )
    assert error.text == "Wrong e-mail or password, or the account is disabled."
    assert not visible(browser, "#view-classify")
    assert no_spinner(by_css(browser, "#sign-in-form"))

    sign_in(browser, ALICE)
    wait_for(lambda: visible(browser, "#view-classify"), what="the classify view")
    assert by_css(browser, "#account-email").text == ALICE[0]
    assert not visible(browser, "#sign-in-error")
    # The token is kept in the page's memory only.
    stored = browser.execute_script(
        "return [localStorage.length, sessionStorage.length, document.cookie];"
    )
    assert stored == [0, 0, ""]
    assert console_problems(browser) == []


def test_classify_one_film_of_each_class_as_the_api_does(
    browser: Any, web_stack: WebStack, images_folder: Path
) -> None:
    films = write_films(images_folder)
    signed_in(browser, web_stack.url, ALICE)
    choose_files(browser, list(films.values()))
    settled = wait_settled(browser, len(films))
    assert len(settled) == len(films)

    for card in settled:
        name = card.find_element("css selector", ".file-name").text
        class_name = name.removesuffix("-film.png")
        expected = api_answer(web_stack, "/predict", films[class_name].read_bytes())
        assert card.get_attribute("data-state") == "done", card.text
        assert no_spinner(card)
        assert card.get_attribute("data-predicted-class") == expected["predicted_class"]
        assert card.get_attribute("data-decision") == expected["decision"]
        note = card.find_element("css selector", ".decision-note").text
        assert f"Class “{expected['predicted_class']}”" in note
        shown = percentages(card)
        assert set(shown) == set(expected["class_names"])
        for label, probability in expected["probabilities"].items():
            assert shown[label] == pytest.approx(probability, abs=0.0006), label
        facts = card.find_element("css selector", ".facts").text
        model = expected["model"]
        assert f"{model['name']} version {MODEL_VERSION}, run {model['run_id']}" in facts
        assert model["version"] == MODEL_VERSION
        # The original and the overlay, both loaded (object URLs), side by side.
        original = card.find_element("css selector", "img.original")
        overlay = card.find_element("css selector", "img.overlay")
        for image in (original, overlay):
            assert image.get_attribute("src").startswith("blob:")
            wait_loaded(image)
        assert overlay.get_property("naturalWidth") == 256
        assert original.location["x"] < overlay.location["x"]

    # The first card: the opacity slider by keyboard, then another class explained.
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    card = cards(browser)[0]
    overlay = card.find_element("css selector", "img.overlay")
    slider = card.find_element("css selector", "input.opacity")
    assert overlay.value_of_css_property("opacity") == "0.7"
    slider.send_keys(Keys.HOME)
    wait_for(lambda: overlay.value_of_css_property("opacity") == "0", what="opacity 0")
    slider.send_keys(Keys.END)
    wait_for(lambda: overlay.value_of_css_property("opacity") == "1", what="opacity 1")
    assert card.find_element("css selector", ".opacity-value").text == "100 %"
    for _ in range(6):
        slider.send_keys(Keys.ARROW_LEFT)
    wait_for(lambda: overlay.value_of_css_property("opacity") == "0.7", what="opacity 0.7")

    predicted = card.get_attribute("data-predicted-class")
    other = next(name for name in CLASS_NAMES if name != predicted)
    old_overlay = overlay.get_attribute("src")
    Select(card.find_element("css selector", "select.target")).select_by_value(other)
    wait_for(
        lambda: (
            card.get_attribute("data-state") == "done"
            and overlay.get_attribute("src") != old_overlay
        ),
        what="the overlay of another class",
    )
    assert (
        overlay.get_attribute("alt") == f"Grad-CAM heat map for the class {other}, over the image"
    )
    assert card.get_attribute("data-predicted-class") == predicted  # the answer stays
    wait_loaded(overlay, 256)
    assert overlay.value_of_css_property("opacity") == "0.7"

    screenshot(browser, "classify.png")
    assert_accessible(browser)
    assert foreign_requests(browser, web_stack.url) == []
    assert console_problems(browser) == []


def test_history_pages_and_one_records_detail(browser: Any, web_stack: WebStack) -> None:
    from selenium.webdriver.support.ui import Select

    # Twelve inferences of alice's through the API: more than one page (10 a page), most of
    # them with a stored overlay (thumbnails), some without.
    for index in range(11):
        path, query = ("/predict", {}) if index % 4 == 1 else ("/gradcam", {"format": "json"})
        api_answer(web_stack, path, film(CLASS_NAMES[index % 3], 100 + index), **query)
    newest = api_answer(web_stack, "/gradcam", film("covid", 99), format="json")

    signed_in(browser, web_stack.url, ALICE)
    by_css(browser, "#nav-history").click()
    wait_for(lambda: visible(browser, "#history-table"), what="the history table")
    rows = all_css(browser, "#history-rows tr")
    assert len(rows) == 10
    assert rows[0].get_attribute("data-id") == newest["id"]  # newest first
    thumbnail = rows[0].find_element("css selector", ".thumb img")
    wait_loaded(thumbnail, 256)
    assert thumbnail.get_attribute("src").startswith("blob:")
    assert "Page 1" in by_css(browser, "#history-status").text

    first_page = [row.get_attribute("data-id") for row in rows]
    by_css(browser, "#history-next").click()
    wait_for(lambda: "Page 2" in by_css(browser, "#history-status").text, what="page 2")
    second_page = [row.get_attribute("data-id") for row in all_css(browser, "#history-rows tr")]
    assert second_page
    assert not set(second_page) & set(first_page)
    by_css(browser, "#history-first").click()
    wait_for(lambda: "Page 1" in by_css(browser, "#history-status").text, what="page 1")

    # A date range without inferences.
    browser.execute_script(
        "document.querySelector('#history-from').value = '2020-01-01';"
        "document.querySelector('#history-to').value = '2020-01-31';"
    )
    by_css(browser, "#history-show").click()
    wait_for(
        lambda: "No inferences" in by_css(browser, "#history-status").text, what="an empty range"
    )
    assert not visible(browser, "#history-table")
    browser.execute_script(
        "const day = (n) => { const d = new Date(); d.setDate(d.getDate() - n);"
        " const pad = v => String(v).padStart(2, '0');"
        " return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`; };"
        "document.querySelector('#history-from').value = day(6);"
        "document.querySelector('#history-to').value = day(0);"
    )
    by_css(browser, "#history-show").click()
    wait_for(lambda: visible(browser, "#history-table"), what="the history again")

    # Only one decision: every row has it, the newest among them.
    Select(by_css(browser, "#history-decision")).select_by_value(newest["decision"])
    by_css(browser, "#history-show").click()
    wait_for(
        lambda: (
            {row.get_attribute("data-decision") for row in all_css(browser, "#history-rows tr")}
            == {newest["decision"]}
        ),
        what="the filtered history",
    )
    assert all_css(browser, "#history-rows tr")[0].get_attribute("data-id") == newest["id"]
    Select(by_css(browser, "#history-decision")).select_by_value("")
    by_css(browser, "#history-show").click()
    wait_for(lambda: len(all_css(browser, "#history-rows tr")) == 10, what="every decision")
    rows = all_css(browser, "#history-rows tr")
    for row in rows[:5]:
        images = row.find_elements("css selector", ".thumb img")
        if images:
            wait_loaded(images[0])
    screenshot(browser, "history.png")
    assert_accessible(browser)

    rows[0].find_element("css selector", "a.details-link").click()
    wait_for(lambda: visible(browser, "#view-record"), what="the record view")
    detail = wait_for(
        lambda: (
            by_css(browser, "#record-detail").get_attribute("data-inference-id") == newest["id"]
            and by_css(browser, "#record-detail")
        ),
        what="the record",
    )
    overlay = detail.find_element("css selector", "img.record-overlay")
    wait_loaded(overlay, 256)
    text = detail.text
    assert newest["predicted_class"] in text
    assert f"cnn_vit version {MODEL_VERSION}" in text
    for label, probability in newest["probabilities"].items():
        assert percentages(detail)[label] == pytest.approx(probability, abs=0.0006)
    screenshot(browser, "record.png")
    assert_accessible(browser)

    browser.back()
    wait_for(lambda: visible(browser, "#history-table"), what="back to the history")
    assert all_css(browser, "#history-rows tr")[0].get_attribute("data-id") == newest["id"]
    assert foreign_requests(browser, web_stack.url) == []
    assert console_problems(browser) == []


def test_a_film_dropped_on_the_zone_is_classified(browser: Any, web_stack: WebStack) -> None:
    """Drag and drop: a `drop` event carrying a file, as a browser sends it."""
    data = film("no-covid", 21)
    expected = api_answer(web_stack, "/predict", data)
    signed_in(browser, web_stack.url, ALICE)
    browser.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
        const zone = document.querySelector("#drop-zone");
        for (const type of ["dragenter", "dragover", "drop"]) {
          zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true,
                                                   cancelable: true }));
        }
        """,
        base64.b64encode(data).decode(),
    )
    card = wait_settled(browser, 1)[0]
    assert card.find_element("css selector", ".file-name").text == "dropped.png"
    assert card.get_attribute("data-predicted-class") == expected["predicted_class"]
    assert "dragging" not in (by_css(browser, "#drop-zone").get_attribute("class") or "")


def test_a_dicom_file_is_classified_and_said_to_be_dicom(
    browser: Any, web_stack: WebStack, images_folder: Path
) -> None:
    """A .dcm file chosen like any image: the server converts it; the page says the browser
    cannot show it and shows the heat map over the image as the model saw it."""
    from tests.functions.sample_dicom import dataset, scaled, to_bytes

    image = generate_xray("covid", np.random.default_rng([5, 5])).image
    data = to_bytes(dataset(scaled(image, 12), bits_stored=12))
    path = images_folder / "chest.dcm"
    path.write_bytes(data)
    signed_in(browser, web_stack.url, ALICE)
    choose_files(browser, [path])
    card = wait_settled(browser, 1)[0]
    assert card.get_attribute("data-inference-id")
    assert card.get_attribute("data-predicted-class") in CLASS_NAMES
    caption = card.find_element("css selector", ".images figure figcaption").text
    assert "DICOM" in caption
    overlay = card.find_element("css selector", ".overlay")
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) > 0
    stored = requests.get(
        f"{web_stack.url}/history/{card.get_attribute('data-inference-id')}",
        headers={"Authorization": f"Bearer {web_stack.token()}"},
        timeout=10,
    ).json()
    assert stored["input"]["format"] == "DICOM"


def test_a_referred_answer_is_shown_as_refer(
    browser: Any, web_stack: WebStack, images_folder: Path
) -> None:
    """A deployment that refers every answer below 100 % (REFER_BELOW=1): the page says so."""
    path = images_folder / "covid.png"
    path.write_bytes(film("covid", 11))
    with web_stack.another_gateway(REFER_BELOW="1") as gateway:
        expected = api_answer(web_stack, "/predict", path.read_bytes(), base_url=gateway.url)
        assert expected["decision"] == "refer"
        signed_in(browser, gateway.url, ALICE)
        choose_files(browser, [path])
        card = wait_settled(browser, 1)[0]
        assert card.get_attribute("data-decision") == "refer"
        decision = card.find_element("css selector", ".decision").text.split("\n")
        assert decision == ["Refer", "A radiologist should read this"]
        note = card.find_element("css selector", ".decision-note").text
        top = expected["probabilities"][expected["predicted_class"]]
        assert note == (
            f"The model is not sure enough: its best guess is “{expected['predicted_class']}” at "
            f"{top * 100:.1f} %, below the 100.0 % it needs."
        )
        assert card.find_element("css selector", ".state").text == "Done: refer"


def test_an_image_that_is_not_a_chest_film_is_refused_in_words_then_classified_on_request(
    browser: Any, web_stack: WebStack, images_folder: Path
) -> None:
    import numpy as np

    from training_job.not_chest import generate_not_chest

    path = images_folder / "skull.png"
    path.write_bytes(generate_not_chest("skull", np.random.default_rng(5)))
    signed_in(browser, web_stack.url, ALICE)
    choose_files(browser, [path])
    card = wait_settled(browser, 1)[0]

    assert card.get_attribute("data-state") == "failed"
    message = card.find_element("css selector", ".message").text
    assert message == (
        "This does not look like a chest X-ray: it does not resemble the chest films the model "
        "learned from. The model only reads frontal chest X-rays."
    )
    assert no_spinner(card)
    anyway = card.find_element("css selector", "button.anyway")
    assert anyway.is_displayed()
    assert not card.find_element("css selector", "button.retry").is_displayed()

    anyway.click()
    wait_for(lambda: card.get_attribute("data-state") == "done", 30, "the answer on request")
    note = card.find_element("css selector", ".decision-note").text
    assert "Flagged: this may not be a chest X-ray (answered on request)." in note
    assert console_problems(browser) == []


def test_an_admin_reads_another_users_history(browser: Any, web_stack: WebStack) -> None:
    api_answer(web_stack, "/predict", film("normal", 5))  # alice (user 1) has a record
    signed_in(browser, web_stack.url, ADMIN)
    assert visible(browser, "#account-role")
    by_css(browser, "#nav-history").click()
    wait_for(lambda: visible(browser, "#history-user-field"), what="the user field")
    user = by_css(browser, "#history-user")
    user.send_keys("1")
    by_css(browser, "#history-show").click()
    wait_for(lambda: "of user 1" in by_css(browser, "#history-status").text, what="alice's history")
    assert all_css(browser, "#history-rows tr")
    all_css(browser, "#history-rows a.details-link")[0].click()
    wait_for(lambda: "User id\n1" in by_css(browser, "#record-detail").text, what="alice's record")


def test_errors_are_said_in_words_and_nothing_keeps_spinning(
    browser: Any, web_stack: WebStack, images_folder: Path
) -> None:
    text_file = images_folder / "notes.txt"
    text_file.write_text("This is not a picture.\n")
    huge = images_folder / "huge.png"
    with huge.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.truncate(20 * 1024 * 1024)
    signed_in(browser, web_stack.url, ALICE)

    choose_files(browser, [text_file])
    card = wait_settled(browser, 1)[0]
    assert card.get_attribute("data-state") == "failed"
    message = card.find_element("css selector", ".message").text
    assert "not an image" in message
    assert "PNG or JPEG" in message
    assert "{" not in message
    assert no_spinner(card)

    choose_files(browser, [huge])
    card = wait_settled(browser, 2)[0]
    assert "huge.png" in card.text
    assert "too large" in card.find_element("css selector", ".message").text
    assert no_spinner(card)

    film_path = images_folder / "normal.png"
    film_path.write_bytes(film("normal", 3))
    web_stack.model_server.stop()
    try:
        choose_files(browser, [film_path])
        card = wait_settled(browser, 3)[0]
        message = card.find_element("css selector", ".message").text
        assert message == "The model is warming up or unavailable. Try again in 3 seconds."
        assert no_spinner(card)
        screenshot_errors = by_css(browser, "#results").text
        assert "not an image" in screenshot_errors
        assert "too large" in screenshot_errors
    finally:
        web_stack.model_server.start()
    # The card's own "Try again" works once the model is back (the breaker lets a probe through);
    # the files that can never succeed have no such button.
    buttons = [
        card.find_element("css selector", "button.retry").is_displayed() for card in cards(browser)
    ]
    assert buttons == [True, False, False]

    def answered() -> bool:
        if card.get_attribute("data-state") == "failed":
            card.find_element("css selector", "button.retry").click()
        return card.get_attribute("data-state") == "done"

    wait_for(answered, 30, "an answer after the model server's restart")
    assert not card.find_element("css selector", ".message").is_displayed()
    assert no_spinner(card)
    assert console_problems(browser) == []


def test_a_refused_token_and_signing_out_return_to_the_sign_in_form(
    browser: Any, web_stack: WebStack
) -> None:
    signed_in(browser, web_stack.url, BOB)
    web_stack.set_disabled("3", True)  # bob's token is refused from now on (401)
    try:
        by_css(browser, "#nav-history").click()
        wait_for(lambda: visible(browser, "#view-sign-in"), what="the sign-in form")
        notice = by_css(browser, "#notice").text
        assert notice == "You have been signed out (your session ended). Please sign in again."
        assert not visible(browser, "#nav")
    finally:
        web_stack.set_disabled("3", False)
    # Signing in again returns to where the user was going.
    sign_in(browser, BOB)
    wait_for(lambda: visible(browser, "#view-history"), what="the history after sign-in")

    by_css(browser, "#sign-out").click()
    wait_for(lambda: visible(browser, "#view-sign-in"), what="the sign-in form")
    assert by_css(browser, "#notice").text == "You have signed out."
    assert by_css(browser, "#history-rows").text == ""
    browser.get(web_stack.url + "/app/#history")  # nothing to see without signing in
    wait_for(lambda: visible(browser, "#view-sign-in"), what="the sign-in form")
    assert not visible(browser, "#view-history")


def test_the_session_ends_when_the_token_expires(browser: Any, web_stack: WebStack) -> None:
    """The page arms a timer from `expires_in` (an hour here); the page's long timers are run
    early (a shim over setTimeout) so that the test need not wait the hour."""
    open_app(browser, web_stack.url)
    browser.execute_script(
        "const realSetTimeout = window.setTimeout;"
        "window.setTimeout = (callback, delay, ...rest) =>"
        "  realSetTimeout(callback, delay >= 600000 ? 1500 : delay, ...rest);"
    )
    sign_in(browser, ALICE)
    wait_for(lambda: visible(browser, "#view-classify"), what="the classify view")
    wait_for(lambda: visible(browser, "#view-sign-in"), 10, "the sign-in form after expiry")
    assert by_css(browser, "#notice").text == "Your session has expired. Please sign in again."
    assert not visible(browser, "#account")
