"""Fixtures for the web app's browser tests: the real stack and one headless Chromium.

The tests need Debian's chromium and chromium-driver. Without them they skip, except in CI
(`CI=true`), where a missing browser fails the run instead of hiding it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.stack import WebStack, start_web_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_browser() -> None:
    """Skip without chromium, chromedriver or selenium; in CI, fail instead."""
    problems = [f"{path} is missing" for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    for module in ("selenium", "axe_selenium_python"):
        try:
            __import__(module)
        except ImportError:
            problems.append(f"the Python package {module} is not installed")
    if not problems:
        return
    reason = "browser tests need chromium, chromium-driver and selenium: " + "; ".join(problems)
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the browser tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


def _export_with_ood_check(trained: Any, films: list[Any], export_dir: Path) -> Path:
    """The session's demo model exported as the training job would: with the "not a chest
    X-ray" check fitted on held-out films."""
    from model_export.export import export_saved_model
    from tests.trained_models import GRADCAM_LAYER, MODEL_NAME, RUN_ID, fitted_ood_check

    export_saved_model(
        trained.model,
        trained.config,
        export_dir,
        model_name=MODEL_NAME,
        run_id=RUN_ID,
        gradcam_layer=GRADCAM_LAYER,
        ood=fitted_ood_check(trained, films),
    )
    return export_dir


@pytest.fixture(scope="module")
def web_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebStack]:
    """Model server (the session's exported demo model, label `stable`) + gateway, for the
    module."""
    require_browser()  # before the export, which costs seconds
    export = _export_with_ood_check(
        request.getfixturevalue("trained"),
        request.getfixturevalue("test_films"),
        tmp_path_factory.mktemp("web-export") / "model",
    )
    stack = start_web_stack(export, tmp_path_factory.mktemp("web"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser(web_stack: WebStack) -> Iterator[Any]:
    """One headless Chromium for the module (each test signs in on a fresh page load)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--lang=en-GB",
        "--disable-extensions",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--force-color-profile=srgb",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(*WINDOW)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def images_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    return folder
