"""What the browser tests do on the page: sign in, choose files, wait, read, check a11y, shoot."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.functions.gateway_process import ROOT

# The checked-in pictures (README) are rewritten only when asked (UPDATE_SCREENSHOTS=1): a plain
# test run writes them to a temporary folder, so `make test` leaves the checkout clean.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "xray-web-screenshots"
)
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | bool | None], timeout: float = 20.0, what: str = "condition"
) -> T:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value  # type: ignore[return-value]
        except Exception as error:
            last_error = error
        time.sleep(0.05)
    raise AssertionError(
        f"timed out waiting for {what}" + (f": {last_error}" if last_error else "")
    )


def by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def visible(driver: Any, selector: str) -> bool:
    found = all_css(driver, selector)
    return bool(found) and bool(found[0].is_displayed())


def open_app(driver: Any, base_url: str) -> None:
    """A fresh page load: the app starts signed out (the token lives in page memory only)."""
    driver.get(base_url + "/")
    wait_for(lambda: visible(driver, "#view-sign-in"), what="the sign-in form")


def sign_in(driver: Any, user: tuple[str, str]) -> None:
    """Sign in with the keyboard only: type, Tab to the password, Enter."""
    from selenium.webdriver.common.keys import Keys

    email = by_css(driver, "#sign-in-email")
    email.clear()
    email.send_keys(user[0])
    driver.switch_to.active_element.send_keys(Keys.TAB)
    password = driver.switch_to.active_element
    assert password.get_attribute("id") == "sign-in-password"
    password.clear()
    password.send_keys(user[1], Keys.ENTER)


def signed_in(driver: Any, base_url: str, user: tuple[str, str]) -> None:
    open_app(driver, base_url)
    sign_in(driver, user)
    wait_for(lambda: visible(driver, "#view-classify"), what="the classify view after sign-in")
    assert by_css(driver, "#account-email").text == user[0]


def choose_files(driver: Any, paths: list[Path]) -> None:
    by_css(driver, "#file-input").send_keys("\n".join(str(path) for path in paths))


def cards(driver: Any) -> list[Any]:
    return all_css(driver, "#results > li")


def wait_settled(driver: Any, count: int, timeout: float = 60.0) -> list[Any]:
    """The first `count` result cards once none is waiting or working."""

    def settled() -> list[Any] | None:
        found = cards(driver)
        states = [card.get_attribute("data-state") for card in found]
        if len(found) >= count and all(state in ("done", "failed") for state in states):
            return found
        return None

    return wait_for(settled, timeout, "the results to settle")


def no_spinner(card: Any) -> bool:
    return not any(spinner.is_displayed() for spinner in all_css(card, ".spinner"))


def wait_loaded(image: Any, width: int | None = None) -> None:
    """Until an <img> has decoded its picture (of `width` pixels, when given)."""

    def loaded() -> bool:
        natural = int(image.get_property("naturalWidth"))
        return natural > 0 if width is None else natural == width

    wait_for(loaded, what=f"the image {image.get_attribute('alt')!r} to load")


def percentages(card: Any) -> dict[str, float]:
    """Class -> the probability the card shows (its text, "95.9 %"), as a fraction."""
    shown = {}
    for row in all_css(card, ".bar-row"):
        match = re.fullmatch(
            r"(\d+(?:\.\d+)?) %", row.find_element("css selector", ".bar-value").text
        )
        assert match, row.text
        shown[row.get_attribute("data-class")] = float(match.group(1)) / 100
    return shown


def axe_violations(driver: Any, *impacts: str) -> list[dict[str, Any]]:
    """axe-core's violations of the given impacts on the page as it is now."""
    from axe_selenium_python import Axe

    axe = Axe(driver)
    axe.inject()
    results = axe.run()
    return [
        {
            "id": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "nodes": [node["html"] for node in violation["nodes"]][:5],
        }
        for violation in results["violations"]
        if violation["impact"] in impacts
    ]


def assert_accessible(driver: Any) -> None:
    problems = axe_violations(driver, "serious", "critical")
    assert not problems, problems


def foreign_requests(driver: Any, base_url: str) -> list[str]:
    """Every resource the page loaded that is neither same-origin nor a blob: URL."""
    names: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);"
    )
    return [
        name for name in names if not (name.startswith(base_url + "/") or name.startswith("blob:"))
    ]


def console_problems(driver: Any) -> list[str]:
    """Script errors and CSP violations in the browser's console since the last call.

    Refused requests the app shows in words (a 4xx/5xx answer) are logged by Chromium as
    'Failed to load resource'; those are expected and left out.
    """
    entries = driver.get_log("browser")
    return [
        entry["message"]
        for entry in entries
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


def screenshot(driver: Any, name: str, size: tuple[int, int] = (1280, 900)) -> Path:
    """Save the top `size` of the page to docs/screenshots/<name> (focus ring removed).

    Chromium's own capture (DevTools) renders beyond the viewport, so the picture is the full
    1280 x 900 even though the window's frame takes some of its height."""
    import base64

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script(
        "document.activeElement && document.activeElement.blur(); scrollTo(0, 0);"
    )
    time.sleep(0.15)  # let transitions end
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
        },
    )
    path = SCREENSHOTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
