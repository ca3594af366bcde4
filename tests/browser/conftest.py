"""Browser tests drive Debian's Chromium (never a downloaded browser)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import IN_CI

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The pages' scripts are the subject here, which no database engine
    changes: CI runs these in its PostgreSQL pass only (one_engine)."""
    for item in items:
        if "tests/browser/" in item.nodeid:
            item.add_marker(pytest.mark.one_engine)


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module: Playwright's sync API holds an event loop
    in this thread while it lives, so it must end before async tests run."""
    if not shutil.which(CHROMIUM):
        message = f"needs Debian's chromium at {CHROMIUM} (apt install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own
    # ORM calls are still plain synchronous code (Playwright's documented advice).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            yield chromium
            chromium.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser, live_server, gpu_worker, test_checkpoints):
    """A signed-in tab (a person with 10 credits) on the live server, the test
    models, ControlNets and LoRAs in the catalog and served; `page.errors` collects
    the page's script errors."""
    from django.conf import settings
    from django.test import Client

    from billing.ledger import credits_grant
    from catalog.seeds import (
        catalog_register_test_checkpoints,
        catalog_register_test_controlnets,
        catalog_register_test_loras,
    )
    from tests.conftest import make_user
    from workers.testweights import RANDOM_CONTROLNETS, RANDOM_LORAS

    catalog_register_test_checkpoints(test_checkpoints.values())
    catalog_register_test_controlnets(RANDOM_CONTROLNETS)
    catalog_register_test_loras(RANDOM_LORAS)
    user = make_user("dana@example.com", password="a-long-pass-phrase-9")
    credits_grant(user=user, amount=10, ref="g:dana")
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    # Signed in with a session of the test client's (the sign-in form has
    # its own tests: tests/test_accounts.py).
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}])
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.user, tab.errors = user, errors
    yield tab
    context.close()


def result_in_place(page, *, timeout: float = 120_000) -> None:
    """After a submit on the create page: the page follows the new job in
    place (static/js/results.js); wait for its first picture there."""
    previous = page.get_attribute("#studio-job-link", "href")
    page.wait_for_function(
        "previous => { const link = document.getElementById('studio-job-link');"
        " return !document.getElementById('studio-results').hidden && link.getAttribute('href') !== previous; }",
        arg=previous,
    )
    page.wait_for_selector("#studio-images img[alt='Result 1']", timeout=timeout)
    assert "/create/" in page.url


def open_job_page(page) -> None:
    """From the results in place, the job's own page."""
    page.click("#studio-job-link")
    page.wait_for_url("**/jobs/*/")
