"""The "Scheduled jobs" screen in real headless Chromium against a real gunicorn server (with its
scheduler) and the fake provider: create with a server validation error shown on its field, edit,
enable/disable, run now and open the run's session, delete; users see only their own jobs; the
sessions the scheduler ran carry a "scheduler" badge in the sidebar.

The server, browser and helpers are those of tests/test_web_ui.py (one server per module)."""
from __future__ import annotations

import pytest

from .browser import DESKTOP, PHONE, save_screenshot
from .fake_provider import Reply
from .support import wait_until
from .test_web_ui import (click_button, clean_browser, driver, find, server, sign_in,  # noqa: F401  (fixtures)
                          user_key, wait_for)

pytestmark = [pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.timeout(600)]


def field_input(driver, name: str):
    return find(driver, f'.field[data-field="{name}"] [name="{name}"]')


def field_error(driver, name: str) -> str:
    return driver.find_element("css selector", f'.field[data-field="{name}"] .field-error').text


def shown_schedule_inputs(driver) -> list[str]:
    fields = driver.find_elements("css selector", '.dialog .field[data-field^="schedule."]')
    fields = [field for field in fields if field.get_attribute("data-field") != "schedule.kind"]
    return [field.get_attribute("data-field") for field in fields if field.is_displayed()]


def job_row(driver, name: str):
    rows = driver.find_elements("css selector", f'.jobs tr[data-job-name="{name}"]')
    return rows[0] if rows else None


def listed_names(driver) -> list[str]:
    return [row.get_attribute("data-job-name") for row in driver.find_elements("css selector", ".jobs tbody tr")]


def accept_confirmation(driver) -> None:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(expected_conditions.alert_is_present(), "no confirmation asked")
    driver.switch_to.alert.accept()


def create_job(server, key: str, name: str) -> dict:
    created = server.request("POST", "/api/cron/jobs", key,
                             json={"name": name, "prompt": "hello",
                                   "schedule": {"kind": "interval", "every_ms": 3600000}})
    assert created.status_code == 201, created.text
    return created.json()


@pytest.mark.http_errors_expected
def test_job_is_created_fixed_listed_edited_run_and_deleted(driver, server, fake):
    from selenium.webdriver.support.ui import Select

    fake.default = Reply("digest-done: three new items")
    sign_in(driver, server, server.admin_key, "#/cron")
    click_button(driver, ".panel button", "New job")
    field_input(driver, "name").send_keys("daily-digest")
    field_input(driver, "prompt").send_keys("Summarize my inbox")
    kind = Select(field_input(driver, "schedule.kind"))
    wait_for(driver, lambda d: shown_schedule_inputs(d) == ["schedule.expr"], "a new job is not a cron job")
    assert kind.first_selected_option.get_attribute("value") == "cron"
    kind.select_by_value("one_shot")
    wait_for(driver, lambda d: shown_schedule_inputs(d) == ["schedule.at"], "the one-shot input is not the one shown")
    kind.select_by_value("interval")
    wait_for(driver, lambda d: shown_schedule_inputs(d) == ["schedule.every_ms"], "the interval input is not shown")
    kind.select_by_value("cron")
    expr = field_input(driver, "schedule.expr")
    expr.send_keys("99 * * * *")
    click_button(driver, ".dialog button", "Save")
    wait_for(driver, lambda d: "Invalid cron expression" in field_error(d, "schedule.expr"), "no error on the field")
    assert "invalid" in driver.find_element("css selector", '.field[data-field="schedule.expr"]').get_attribute("class")
    assert field_error(driver, "name") == "" and not job_row(driver, "daily-digest")

    expr.clear()
    expr.send_keys("0 9 * * MON-FRI")
    click_button(driver, ".dialog button", "Save")
    wait_for(driver, lambda d: not d.find_elements("css selector", ".dialog"), "the dialog stayed open")
    row = wait_for(driver, lambda d: job_row(d, "daily-digest"), "the new job is not listed")
    assert "0 9 * * MON-FRI" in row.text and "enabled" in row.text
    assert row.find_element("css selector", ".next-run").text != "—"
    save_screenshot(driver, "cron-jobs")

    row.find_element("css selector", "a").click()
    find(driver, ".cron-job h2")
    assert "No runs yet." in find(driver, ".cron-job").text
    timezone = field_input(driver, "timezone")
    timezone.clear()
    timezone.send_keys("Mars/Olympus")
    click_button(driver, ".cron-job form button", "Save")
    wait_for(driver, lambda d: "Unknown timezone" in field_error(d, "timezone"), "no error on the timezone")
    timezone.clear()
    timezone.send_keys("Europe/Rome")
    click_button(driver, ".cron-job form button", "Save")
    wait_for(driver, lambda d: "Europe/Rome" in d.find_element("css selector", ".facts").text, "the edit was not saved")
    assert server.get("/api/cron/jobs/daily-digest", server.admin_key).json()["timezone"] == "Europe/Rome"

    click_button(driver, ".cron-job button", "Disable")
    wait_for(driver, lambda d: "disabled" in d.find_element("css selector", ".facts").text, "not disabled")
    assert server.get("/api/cron/jobs/daily-digest", server.admin_key).json()["enabled"] is False
    click_button(driver, ".cron-job button", "Enable")
    wait_for(driver, lambda d: "enabled" in d.find_element("css selector", ".facts").text, "not enabled again")

    click_button(driver, ".cron-job button", "Run now")
    wait_for(driver, lambda d: d.find_elements("css selector", ".runs .badge.status-success"),
             "the run did not succeed", timeout=90)
    assert "digest-done" in find(driver, ".runs .run-result").text
    driver.execute_script("document.querySelector('.cron-job').scrollTop = 0")
    save_screenshot(driver, "cron-job")
    # a script click: the notification toasts in the corner may cover the link
    driver.execute_script("arguments[0].click()", find(driver, ".runs .open-session"))
    wait_for(driver, lambda d: "#/chat/" in d.current_url, "the run's session did not open")
    wait_for(driver, lambda d: any("digest-done" in reply.text
                                   for reply in d.find_elements("css selector", ".log .message.assistant")),
             "the run's reply is not in the chat view")

    driver.back()
    click_button(driver, ".cron-job button", "Delete")
    accept_confirmation(driver)
    wait_for(driver, lambda d: d.current_url.endswith("#/cron"), "not back at the list")
    wait_for(driver, lambda d: d.find_elements("css selector", ".cron .jobs, .cron p.muted")
             and not job_row(d, "daily-digest"), "the deleted job is still listed")
    assert server.get("/api/cron/jobs/daily-digest", server.admin_key).status_code == 404


def test_users_see_only_their_own_jobs_and_admins_filter_by_user(driver, server, user_key):
    from selenium.webdriver.support.ui import Select

    bob = server.get("/api/auth/verify", user_key).json()["user"]
    create_job(server, user_key, "bob-reminder")
    create_job(server, server.admin_key, "admin-report")

    sign_in(driver, server, user_key, "#/cron")
    wait_for(driver, lambda d: job_row(d, "bob-reminder"), "the user's job is not listed")
    assert listed_names(driver) == ["bob-reminder"]
    headings = [th.text for th in driver.find_elements("css selector", ".jobs th")]
    assert "Owner" not in headings and "every 1 h" in job_row(driver, "bob-reminder").text
    assert not driver.find_element("css selector", ".cron select").is_displayed()
    driver.execute_script("localStorage.clear()")

    sign_in(driver, server, server.admin_key, "#/cron")
    wait_for(driver, lambda d: {"bob-reminder", "admin-report"} <= set(listed_names(d)), "admins see every job")
    wait_for(driver, lambda d: job_row(d, "bob-reminder").find_element("css selector", ".owner").text == "Bob",
             "the owner's name is not shown")
    picker = find(driver, ".cron select")
    wait_for(driver, lambda d: len(Select(picker).options) > 1, "no users to filter by")
    Select(picker).select_by_value(bob["id"])
    wait_for(driver, lambda d: listed_names(d) == ["bob-reminder"], "the user filter did not apply")

    driver.set_window_size(*PHONE)  # the wide table scrolls inside its box, the page does not
    wait_for(driver, lambda d: d.execute_script("return innerWidth") < 500, "the window did not shrink")
    assert driver.execute_script("const panel = document.querySelector('.cron');"
                                 "return panel.scrollWidth <= panel.clientWidth")
    driver.set_window_size(*DESKTOP)
    job_row(driver, "bob-reminder").find_element("css selector", "a").click()
    wait_for(driver, lambda d: "Owner Bob" in d.find_element("css selector", ".facts").text,
             "another user's job did not open")


def session_of_run(server, name: str) -> str:
    """The session of the job's newest run, once it succeeded."""
    def finished():
        runs = server.get(f"/api/cron/jobs/{name}/runs", server.admin_key).json()
        return runs and runs[0]["status"] == "success" and runs[0]["session_id"]
    return wait_until(finished, f"a successful run of {name}", timeout=90)


def test_sessions_the_scheduler_ran_carry_a_scheduler_badge(driver, server, fake):
    fake.default = Reply("scheduled answer")
    sessions = {}
    for name, mode in (("badge-isolated", "isolated"), ("badge-main", "main")):
        created = server.request("POST", "/api/cron/jobs", server.admin_key,
                                 json={"name": name, "prompt": "hello", "session_mode": mode,
                                       "schedule": {"kind": "interval", "every_ms": 3600000}})
        assert created.status_code == 201, created.text
        assert server.request("POST", f"/api/cron/jobs/{name}/run", server.admin_key).status_code == 202
        sessions[name] = session_of_run(server, name)
    chat = server.request("POST", "/api/chat", server.admin_key, json={"text": "typed by hand"}).json()
    sessions["chat"] = chat["session_id"]
    for session_id, origin in zip(sessions.values(), ("scheduler", "scheduler", "main")):
        stored = server.get(f"/api/sessions/{session_id}", server.admin_key).json()
        assert stored["channel"] == "main" and stored["origin"] == origin

    sign_in(driver, server, server.admin_key, "#/chat")

    def badge(session_id: str):
        items = driver.find_elements("css selector", f'.session[data-session-id="{session_id}"] .badge')
        return items[0] if items else None

    wait_for(driver, lambda d: all(badge(s) for s in sessions.values()), "a session is not listed")
    for name in ("badge-isolated", "badge-main"):
        assert badge(sessions[name]).text == "scheduler"
        assert "channel-scheduler" in badge(sessions[name]).get_attribute("class")
    assert badge(sessions["chat"]).text == "main"
    for name in ("badge-isolated", "badge-main"):
        server.request("DELETE", f"/api/cron/jobs/{name}", server.admin_key)
