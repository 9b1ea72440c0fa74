"""The web UI at `/` in real headless Chromium against a real gunicorn server and the fake provider.

One server and one browser serve the whole module.  Every test signs in through `?token=` (which
also proves the token is taken out of the address bar) and must leave no error in the browser
console.  The server-restart test runs last because it restarts the shared server.
"""
from __future__ import annotations

import base64
import gzip
import re
import threading

import pytest
import requests

from starpod.db import database
from starpod.config import Config
from starpod.notify import notify

from . import appdb
from .browser import PHONE, DESKTOP, WAIT_SECS, save_screenshot, start_chromium
from .fake_provider import Failure, Reply, ToolCall
from .support import LiveServer

pytestmark = [pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.timeout(600)]

PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    home = tmp_path_factory.mktemp("web") / "home"
    live = LiveServer(home, env=fake.environ(STARPOD_WS_PING_SECS="5")).start()
    live.admin_key = live.generated_admin_key()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def user_key(server):
    return server.create_user(server.admin_key, label="browser", display_name="Bob")[1]["key"]


@pytest.fixture(scope="module")
def driver():
    browser = start_chromium()
    yield browser
    browser.quit()


@pytest.fixture(autouse=True)
def clean_browser(request, fake):
    """Reset the fake's script, then fail the test if the page logged any error."""
    fake.reset()
    if "driver" not in request.fixturenames:
        yield
        return
    browser = request.getfixturevalue("driver")
    browser.set_window_size(*DESKTOP)
    browser.get_log("browser")  # drop what earlier tests left
    yield
    if request.node.get_closest_marker("console_errors_expected"):
        return
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    if request.node.get_closest_marker("http_errors_expected"):  # Chrome logs every 4xx answer
        errors = [entry for entry in errors if entry["source"] != "network"]
    assert not errors, f"browser console errors: {errors}"


# --- helpers -------------------------------------------------------------------------------

def wait_for(driver, condition, message: str = "", timeout: float = WAIT_SECS):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: condition(d), message)


def find(driver, selector: str):
    return wait_for(driver, lambda d: _visible(d, selector), f"no visible {selector}")


def _visible(driver, selector):
    for element in driver.find_elements("css selector", selector):
        if element.is_displayed():
            return element
    return None


def sign_in(driver, server, key: str, hash_: str = "") -> None:
    """Open the UI with `?token=` and wait until the app shell is up and connected."""
    driver.get(f"{server.base_url}/?token={key}{hash_}")
    find(driver, ".shell .topbar")
    wait_for(driver, lambda d: d.find_element("css selector", ".connection").get_attribute("data-state") == "online",
             "the socket did not connect")


def click_button(driver, selector: str, label: str) -> None:
    """Click the visible button labelled `label`, retrying while the page re-renders under us."""
    def attempt(d):
        buttons = [b for b in d.find_elements("css selector", selector) if b.is_displayed() and b.text == label]
        if buttons:
            buttons[-1].click()
            return True
        return False
    wait_for(driver, attempt, f"no {label!r} button")


def send_message(driver, text: str) -> None:
    box = find(driver, ".composer-input")
    box.send_keys(text)
    from selenium.webdriver.common.keys import Keys
    box.send_keys(Keys.ENTER)


def last_reply(driver):
    return wait_for(driver, lambda d: (d.find_elements("css selector", ".log .message.assistant") or [None])[-1],
                    "no assistant reply")


def finished_replies(driver) -> list:
    return [m for m in driver.find_elements("css selector", ".log .message.assistant")
            if "streaming" not in m.get_attribute("class")]


def reply_finished(driver, before: int = 0):
    """The newest finished reply, once more than `before` replies have finished."""
    return wait_for(driver, lambda d: len(finished_replies(d)) > before and finished_replies(d)[-1],
                    "the reply did not finish")


# --- serving ------------------------------------------------------------------------------

def test_page_and_assets_are_public_with_security_and_cache_headers(server):
    page = requests.get(f"{server.base_url}/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert f"connect-src 'self' ws://127.0.0.1:{server.port} wss://127.0.0.1:{server.port}" in csp
    odd_host = requests.get(f"{server.base_url}/", headers={"Host": "x; script-src *"}, timeout=30)
    assert "script-src *" not in odd_host.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "<script" in page.text and not re.search(r"<script>|\sstyle=|\son\w+=", page.text)
    app_js = re.search(r'src="(/ui/[0-9a-f]+/app\.js)"', page.text).group(1)
    asset = requests.get(f"{server.base_url}{app_js}", headers={"Accept-Encoding": "gzip"}, timeout=30, stream=True)
    assert asset.status_code == 200 and asset.headers["Content-Type"].startswith("text/javascript")
    assert "max-age=31536000" in asset.headers["Cache-Control"] and "immutable" in asset.headers["Cache-Control"]
    assert asset.headers["Content-Encoding"] == "gzip"
    assert b"import" in gzip.decompress(asset.raw.read())
    assert asset.headers["Content-Security-Policy"] == csp
    stale = requests.get(f"{server.base_url}/ui/000000000000/app.js", timeout=30)
    assert stale.status_code == 200 and stale.headers["Cache-Control"] == "no-cache"
    assert requests.get(f"{server.base_url}/ui/x/missing.js", timeout=30).status_code == 404
    again = requests.get(f"{server.base_url}{app_js}", headers={"If-None-Match": asset.headers["ETag"]}, timeout=30)
    assert again.status_code == 304


# --- login ----------------------------------------------------------------------------------

def test_bad_key_is_refused_and_a_good_key_is_kept(driver, server):
    driver.get(f"{server.base_url}/")
    driver.execute_script("localStorage.clear(); sessionStorage.clear();")
    driver.get(f"{server.base_url}/")
    field = find(driver, ".login input[name=api_key]")
    field.send_keys("sp_live_" + "0" * 40)
    find(driver, ".login button[type=submit]").click()
    wait_for(driver, lambda d: "not accepted" in d.find_element("css selector", ".login-error").text)
    assert not driver.find_elements("css selector", ".shell")
    save_screenshot(driver, "login")
    field.clear()
    field.send_keys(server.admin_key)
    find(driver, ".login button[type=submit]").click()
    find(driver, ".shell .topbar")
    driver.refresh()
    find(driver, ".shell .topbar")
    assert driver.execute_script("return localStorage.getItem('starpod.apiKey')") == server.admin_key


@pytest.mark.http_errors_expected
def test_sign_out_and_a_revoked_key_return_to_the_login_screen(driver, server):
    admin_id = server.get("/api/auth/verify", server.admin_key).json()["user"]["id"]
    created = server.request("POST", f"/api/settings/auth/users/{admin_id}/api-keys", server.admin_key,
                             json={"label": "short-lived"}).json()
    sign_in(driver, server, created["key"], "#/chat")
    find(driver, ".topbar .logout").click()
    find(driver, ".login input[name=api_key]")
    assert driver.execute_script("return localStorage.getItem('starpod.apiKey')") is None
    sign_in(driver, server, created["key"], "#/memory")
    server.request("POST", f"/api/settings/auth/api-keys/{created['meta']['id']}/revoke", server.admin_key)
    find(driver, ".search input[type=search]").send_keys("anything")
    find(driver, ".search button").click()
    error = find(driver, ".login .login-error")
    assert "no longer valid" in error.text


def test_token_in_url_logs_in_once_and_leaves_the_address_bar(driver, server):
    driver.get(f"{server.base_url}/")
    driver.execute_script("localStorage.clear();")
    sign_in(driver, server, server.admin_key, "#/memory")
    assert "token" not in driver.current_url and driver.current_url.endswith("#/memory")
    assert driver.execute_script("return localStorage.getItem('starpod.apiKey')") == server.admin_key


# --- chat -----------------------------------------------------------------------------------

def test_chat_streams_tokens_shows_tool_card_and_renders_markdown(driver, server, fake):
    sign_in(driver, server, server.admin_key, "#/chat")
    gate = threading.Event()
    words = " ".join(f"word{i}" for i in range(30))
    fake.script(Reply("**Bold** start", tool_calls=[ToolCall("MemorySearch", {"query": "zebra"})], chunks=3),
                gated(Reply(words, chunks=30, chunk_delay=0.02), gate))
    send_message(driver, "Find zebras please")
    streaming = wait_for(driver, lambda d: _visible(d, ".message.assistant.streaming .text"), "no streamed text")
    wait_for(driver, lambda d: streaming.text == "**Bold** start", "partial text not shown while streaming")
    card = find(driver, ".message.assistant.streaming .tool-card")
    assert "MemorySearch" in card.text
    wait_for(driver, lambda d: card.find_element("css selector", ".tool-status").text == "done", "no tool result")
    gate.set()
    reply = reply_finished(driver)
    strong = wait_for(driver, lambda d: reply.find_elements("css selector", ".text strong"), "markdown not rendered")
    assert strong[0].text == "Bold"
    wait_for(driver, lambda d: words in reply.text, "the rest of the reply is missing")
    assert re.search(r"\d+ turns? · \d+ in / \d+ out tokens · \$", reply.find_element("css selector", ".usage-line").text)
    card.find_element("css selector", "summary").click()
    assert '"zebra"' in card.find_element("css selector", ".tool-input").text
    save_screenshot(driver, "chat")
    user_bubble = driver.find_elements("css selector", ".message.user")[-1]
    assert "Find zebras please" in user_bubble.text


def test_shift_enter_adds_a_newline_and_errors_show_in_place(driver, server, fake):
    from selenium.webdriver.common.keys import Keys

    sign_in(driver, server, server.admin_key, "#/chat")
    fake.script(Reply("first line seen"))
    box = find(driver, ".composer-input")
    box.send_keys("line one")
    box.send_keys(Keys.SHIFT, Keys.ENTER)
    box.send_keys("line two")
    assert box.get_attribute("value") == "line one\nline two"
    box.send_keys(Keys.ENTER)
    reply_finished(driver)
    assert fake.requests[-1].body["messages"][-1]["content"][-1]["text"].startswith("line one\nline two")
    fake.script(Failure(400, "provider exploded", error_type="invalid_request_error"))
    send_message(driver, "this one fails")
    reply = reply_finished(driver, before=1)
    assert "provider exploded" in reply.find_element("css selector", ".error-box").text


def test_attachment_is_previewed_and_sent(driver, server, fake, tmp_path):
    sign_in(driver, server, server.admin_key, "#/chat")
    image = tmp_path / "dot.png"
    image.write_bytes(PNG_BYTES)
    driver.find_element("css selector", ".composer input[type=file]").send_keys(str(image))
    thumb = find(driver, ".composer .attachment img.thumb")
    assert thumb.get_attribute("src").startswith("blob:")
    fake.script(Reply("nice picture"))
    send_message(driver, "What is this?")
    reply_finished(driver)
    assert find(driver, ".message.user .attachment img.thumb")
    blocks = fake.requests[-1].body["messages"][0]["content"]
    assert any(block.get("type") == "image" for block in blocks)
    assert any("dot.png" in block.get("text", "") for block in blocks)
    assert not driver.find_elements("css selector", ".composer .attachment")
    driver.execute_script("""
        const transfer = new DataTransfer();
        transfer.items.add(new File(['hello'], 'notes.txt', {type: 'text/plain'}));
        document.querySelector('.chat').dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
    """)
    dropped = find(driver, ".composer .attachment .file-name")
    assert dropped.text == "notes.txt"


def gated(reply: Reply, gate: threading.Event):
    """A script entry that answers only once the test opens `gate` (so a run is surely mid-stream)."""
    def entry(_recorded):
        assert gate.wait(WAIT_SECS * 2), "the test never opened the gate"
        return reply
    return entry


def test_reload_mid_stream_resumes_the_same_reply_without_gap_or_duplicate(driver, server, fake):
    sign_in(driver, server, server.admin_key, "#/chat")
    gate = threading.Event()
    first = [f"early{i}" for i in range(10)]
    rest = [f"late{i}" for i in range(20)]
    fake.script(Reply(" ".join(first), tool_calls=[ToolCall("MemorySearch", {"query": "story"})], chunks=10),
                gated(Reply(" " + " ".join(rest), chunks=20, chunk_delay=0.05), gate))
    send_message(driver, "Tell me a long story")
    wait_for(driver, lambda d: "early9" in (_visible(d, ".message.assistant.streaming .text") or _Empty()).text,
             "the stream did not start")
    find(driver, ".message.assistant.streaming .tool-card")
    driver.refresh()
    restored = wait_for(driver, lambda d: _visible(d, ".message.assistant.streaming .text"), "reply not restored")
    assert restored.text.split() == first
    assert len(driver.find_elements("css selector", ".log .tool-card")) == 1
    gate.set()
    reply = reply_finished(driver)
    wait_for(driver, lambda d: "late19" in reply.text, "the rest of the reply did not arrive")
    assert " ".join(t.text for t in reply.find_elements("css selector", ".text")).split() == first + rest
    assert len(driver.find_elements("css selector", ".log .message.assistant")) == 1
    assert len(driver.find_elements("css selector", ".log .tool-card")) == 1
    assert "Tell me a long story" in driver.find_element("css selector", ".log .message.user").text


def test_follow_up_while_streaming_is_accepted(driver, server, fake):
    sign_in(driver, server, server.admin_key, "#/chat")
    gate = threading.Event()
    fake.default = Reply("got your follow-up")
    fake.script(Reply("thinking", tool_calls=[ToolCall("MemorySearch", {"query": "x"})]),
                gated(Reply("first answer"), gate))
    send_message(driver, "start something")
    wait_for(driver, lambda d: _visible(d, ".message.assistant.streaming .text"), "no stream")
    send_message(driver, "and one more thing")
    find(driver, ".message.user.followup")
    gate.set()
    wait_for(driver, lambda d: any("and one more thing" in str(r.body["messages"]) for r in list(fake.requests)),
             "the follow-up never reached the model")
    wait_for(driver, lambda d: not d.find_elements("css selector", ".message.assistant.streaming")
             and "first answer" in d.find_element("css selector", ".log").text, "the run did not finish")


class _Empty:
    text = ""


def test_stop_button_stops_the_streaming_reply_and_the_chat_is_ready_again(driver, server, fake):
    sign_in(driver, server, server.admin_key, "#/chat")
    story = "".join(f"<{i:03d}>" for i in range(200))
    fake.script(Reply(story, chunks=200, chunk_delay=0.1), Reply("ready again"))
    stop = driver.find_element("css selector", ".composer .stop")
    assert not stop.is_displayed()
    send_message(driver, "Tell me an endless story")
    wait_for(driver, lambda d: "<003>" in (_visible(d, ".message.assistant.streaming .text") or _Empty()).text,
             "the stream did not start")
    assert find(driver, ".composer .stop").text == "Stop" and find(driver, ".composer .send").is_displayed()
    stop.click()
    reply = reply_finished(driver)
    assert find(driver, ".log .stopped-note").text == "Stopped."
    assert not reply.find_elements("css selector", ".error-box")
    wait_for(driver, lambda d: not stop.is_displayed(), "the Stop button stayed")
    shown = reply.find_element("css selector", ".text").text
    assert shown and story.startswith(shown) and shown != story
    session_id = driver.current_url.rsplit("/", 1)[-1]
    rows = server.get(f"/api/sessions/{session_id}/messages", server.admin_key).json()
    assert [(r["role"], r["content"]) for r in rows] == [("user", "Tell me an endless story"), ("assistant", shown)]
    send_message(driver, "Are you still there?")
    wait_for(driver, lambda d: len(finished_replies(d)) == 2 and "ready again" in finished_replies(d)[-1].text,
             "the next message got no reply")


def test_stored_script_renders_inert(driver, server, fake):
    fake.script(Reply('Look: <script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2"> done'))
    answer = server.request("POST", "/api/chat", server.admin_key, json={"text": "inert please"}).json()
    sign_in(driver, server, server.admin_key, f"#/chat/{answer['session_id']}")
    reply = reply_finished(driver)
    assert "done" in reply.text
    assert driver.execute_script("return window.__pwned === undefined")
    assert not driver.find_elements("css selector", ".log script, .log [onerror]")


# --- sessions, notifications ------------------------------------------------------------------

def test_sessions_sidebar_lists_newest_first_with_unread_markers_and_full_history(driver, server, fake):
    fake.script(Reply(tool_calls=[ToolCall("MemorySearch", {"query": "older"})]), Reply("older answer"))
    older = server.request("POST", "/api/chat", server.admin_key, json={"text": "Older topic"}).json()["session_id"]
    fake.script(Reply("newer answer"))
    newer = server.request("POST", "/api/chat", server.admin_key, json={"text": "Newer topic"}).json()["session_id"]
    server.request("POST", f"/api/sessions/{older}/read", server.admin_key, json={"is_read": False})
    sign_in(driver, server, server.admin_key, "#/chat")
    wait_for(driver, lambda d: d.find_elements("css selector", f'.session[data-session-id="{older}"]'), "no session")
    ids = [li.get_attribute("data-session-id") for li in driver.find_elements("css selector", ".session")]
    assert ids.index(newer) < ids.index(older)
    item = driver.find_element("css selector", f'.session[data-session-id="{older}"]')
    assert "unread" in item.get_attribute("class") and item.find_elements("css selector", ".unread-dot")
    assert "main" in item.find_element("css selector", ".badge").text
    save_screenshot(driver, "sessions")
    item.find_element("css selector", "a").click()
    wait_for(driver, lambda d: "older answer" in d.find_element("css selector", ".log").text, "history not shown")
    assert "MemorySearch" in find(driver, ".log .tool-card").text
    wait_for(driver, lambda d: server.get(f"/api/sessions/{older}", server.admin_key).json()["is_read"],
             "the session was not marked read")
    find(driver, ".new-chat").click()
    find(driver, ".welcome")


def test_notification_toast_opens_its_session(driver, server, fake):
    fake.script(Reply("digest body"))
    session_id = server.request("POST", "/api/chat", server.admin_key, json={"text": "Digest run"}).json()["session_id"]
    sign_in(driver, server, server.admin_key, "#/memory")
    appdb.open_app_database(server.home)
    try:
        notify("daily-digest", session_id, "Your digest is ready", True, config=Config(home=server.home))
    finally:
        database.close_all()
    toast = find(driver, ".toast .toast-body")
    assert "daily-digest" in toast.text and "Your digest is ready" in toast.text
    toast.click()
    wait_for(driver, lambda d: "digest body" in d.find_element("css selector", ".log").text, "session not opened")
    assert driver.current_url.endswith(f"#/chat/{session_id}")


def test_welcome_shows_greeting_and_prompt_chips_to_every_user(driver, server, fake, user_key):
    server.request("PUT", "/api/settings/frontend", server.admin_key,
                   json={"greeting": "Welcome aboard", "prompts": ["Plan my day", "What is new?"]})
    sign_in(driver, server, user_key, "#/chat")
    welcome = find(driver, ".welcome")
    wait_for(driver, lambda d: "Welcome aboard" in welcome.text, "greeting not shown")
    chips = welcome.find_elements("css selector", ".chip")
    assert [chip.text for chip in chips] == ["Plan my day", "What is new?"]
    fake.script(Reply("Here is your plan"))
    chips[0].click()
    wait_for(driver, lambda d: "Here is your plan" in d.find_element("css selector", ".log").text, "no answer")
    assert "Plan my day" in driver.find_element("css selector", ".message.user").text
    driver.execute_script("localStorage.clear()")


# --- memory, settings, keys -----------------------------------------------------------------

def test_memory_search_shows_source_lines_and_highlights(driver, server):
    notes = server.home / "knowledge" / "animals.md"
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text("# Animals\n\nThe quokka lives on Rottnest Island.\n")
    server.request("POST", "/api/memory/reindex", server.admin_key)
    sign_in(driver, server, server.admin_key, "#/memory")
    field = find(driver, ".search input[type=search]")
    field.send_keys("quokka")
    find(driver, ".search button").click()
    hit = find(driver, ".hit")
    assert "animals.md" in hit.find_element("css selector", ".hit-source").text
    assert re.search(r"lines \d+–\d+", hit.text)
    assert hit.find_element("css selector", "mark").text.lower() == "quokka"
    save_screenshot(driver, "memory")


@pytest.mark.http_errors_expected
def test_settings_save_shows_the_validation_error_next_to_its_field(driver, server):
    sign_in(driver, server, server.admin_key, "#/settings/general")
    field = find(driver, "input[name=max_turns]")
    wait_for(driver, lambda d: field.get_attribute("value") != "", "settings not loaded")
    field.clear()
    field.send_keys("0")
    find(driver, ".settings-form button[type=submit]").click()
    error = find(driver, '.field[data-field="max_turns"] .field-error')
    assert "must be" in error.text
    assert "invalid" in driver.find_element("css selector", '.field[data-field="max_turns"]').get_attribute("class")
    save_screenshot(driver, "settings")
    field.clear()
    field.send_keys("12")
    find(driver, ".settings-form button[type=submit]").click()
    wait_for(driver, lambda d: d.find_element("css selector", ".form-status").text == "Saved.", "not saved")
    assert server.get("/api/settings/general", server.admin_key).json()["max_turns"] == 12


def test_api_key_is_created_shown_once_and_revoked(driver, server):
    from selenium.webdriver.common.keys import Keys

    admin_id = server.get("/api/auth/verify", server.admin_key).json()["user"]["id"]
    sign_in(driver, server, server.admin_key, "#/users")
    find(driver, f'tr[data-user-id="{admin_id}"] a').click()
    find(driver, "input[name=label]").send_keys("laptop")
    find(driver, ".user-detail form button[type=submit]").click()
    secret = find(driver, "dialog .secret").get_attribute("value")
    assert secret.startswith("sp_live_")
    assert server.get("/api/auth/verify", secret).json()["authenticated"] is True
    find(driver, "dialog .copy").click()
    save_screenshot(driver, "new-key")
    driver.find_element("css selector", "dialog").send_keys(Keys.ESCAPE)
    wait_for(driver, lambda d: not d.find_elements("css selector", "dialog"), "Esc did not close the dialog")
    row = wait_for(driver, lambda d: [r for r in d.find_elements("css selector", ".keys tr")
                                      if r.text.startswith("laptop")], "new key not listed")[0]
    assert secret not in driver.page_source
    row.find_element("css selector", "button.revoke").click()
    wait_for(driver, lambda d: any(r.text.startswith("laptop") and "revoked" in r.text
                                   for r in d.find_elements("css selector", ".keys tr")), "not revoked")
    assert server.get("/api/auth/verify", secret).json()["authenticated"] is False
    find(driver, ".telegram input[type=number]").send_keys("424242")
    find(driver, ".telegram button[type=submit]").click()
    wait_for(driver, lambda d: "424242" in find(d, ".telegram-link").text, "telegram not linked")
    assert server.get(f"/api/settings/auth/users/{admin_id}/telegram", server.admin_key).json()["telegram_id"] == 424242
    save_screenshot(driver, "users")


def test_users_are_created_promoted_deactivated_and_their_memory_edited(driver, server):
    from selenium.webdriver.support.ui import Select

    sign_in(driver, server, server.admin_key, "#/users")
    find(driver, "input[name=display_name]").send_keys("Carol")
    find(driver, "input[name=email]").send_keys("carol@example.com")
    find(driver, ".panel form button[type=submit]").click()
    wait_for(driver, lambda d: "Carol" in find(d, ".user-detail h2").text, "user page not shown")
    user_id = driver.current_url.rsplit("/", 1)[-1]
    Select(find(driver, "select[aria-label=Role]")).select_by_value("admin")
    wait_for(driver, lambda d: server.get(f"/api/settings/auth/users/{user_id}", server.admin_key).json()["role"] == "admin",
             "role not changed")
    wait_for(driver, lambda d: find(d, "select[aria-label=Role]").get_attribute("value") == "admin"
             and d.find_elements("css selector", ".user-detail .keys"), "the page did not show the new role")
    click_button(driver, ".user-detail button", "Deactivate")
    wait_for(driver, lambda d: not server.get(f"/api/settings/auth/users/{user_id}", server.admin_key).json()["is_active"],
             "user not deactivated")
    wait_for(driver, lambda d: [b for b in d.find_elements("css selector", ".user-detail button") if b.text == "Activate"],
             "the page did not show the new state")
    editor = find(driver, ".user-detail textarea.file-editor")
    wait_for(driver, lambda d: d.find_elements("css selector", ".user-detail .form-status")[-1].text == "", "not loaded")
    editor.send_keys("Prefers tea.")
    click_button(driver, ".user-detail .form-actions button", "Save")
    wait_for(driver, lambda d: "Prefers tea." in server.get(f"/api/settings/users/{user_id}", server.admin_key).json()["user_md"],
             "USER.md not saved")


def test_non_admin_sees_no_admin_screens(driver, server, user_key):
    sign_in(driver, server, user_key, "#/chat")
    nav = find(driver, ".nav").text
    assert "Memory" in nav and "Settings" not in nav and "Users" not in nav and "Instances" not in nav
    driver.get(f"{server.base_url}/#/settings/general")
    heading = find(driver, ".panel h2")
    assert heading.text == "Admins only"
    assert not driver.find_elements("css selector", "input[name=max_turns]")
    driver.execute_script("localStorage.clear()")


def test_phone_width_is_one_column_with_a_sidebar_drawer(driver, server):
    from selenium.webdriver.common.keys import Keys

    sign_in(driver, server, server.admin_key, "#/chat")
    driver.set_window_size(*PHONE)
    menu = find(driver, ".topbar .menu")
    sidebar = driver.find_element("css selector", ".sidebar")
    left_edge = lambda: driver.execute_script("return arguments[0].getBoundingClientRect().right", sidebar)
    wait_for(driver, lambda d: left_edge() <= 0, "sidebar visible at phone width")
    main_width = driver.execute_script("return document.querySelector('main.main').getBoundingClientRect().width")
    viewport = driver.execute_script("return window.innerWidth")
    assert main_width >= viewport - 2
    menu.click()
    wait_for(driver, lambda d: left_edge() > 100, "drawer did not open")
    save_screenshot(driver, "phone-drawer")
    driver.find_element("css selector", "body").send_keys(Keys.ESCAPE)
    wait_for(driver, lambda d: left_edge() <= 0, "Esc did not close the drawer")


def test_admin_screens_usage_skills_instances_and_agent_files(driver, server, fake):
    fake.script(Reply("counted"))
    server.request("POST", "/api/chat", server.admin_key, json={"text": "count me"})
    sign_in(driver, server, server.admin_key, "#/usage")
    total = find(driver, ".usage-total")
    assert re.search(r"[1-9]\d* runs", total.text)
    assert driver.find_elements("css selector", "svg.chart rect")
    save_screenshot(driver, "usage")
    driver.get(f"{server.base_url}/#/skills/new")
    find(driver, "input[name=name]").send_keys("daily-plan")
    find(driver, "input[name=prompt]").send_keys("plan my day")
    fake.script(Reply('```json\n{"description": "Plans the day", "body": "Make a plan."}\n```'))
    find(driver, "button.draft").click()
    wait_for(driver, lambda d: find(d, "input[name=description]").get_attribute("value") == "Plans the day",
             "no draft")
    assert "plan my day" in fake.requests[-1].body["messages"][-1]["content"][0]["text"]
    find(driver, ".settings-form button[type=submit]").click()
    link = wait_for(driver, lambda d: [a for a in d.find_elements("css selector", ".card a") if a.text == "daily-plan"],
                    "skill not listed")[0]
    assert server.get("/api/settings/skills/daily-plan", server.admin_key).json()["body"].strip() == "Make a plan."
    link.click()
    wait_for(driver, lambda d: "Make a plan." in find(d, "textarea[name=body]").get_attribute("value"), "skill not loaded")
    driver.get(f"{server.base_url}/#/instances")
    find(driver, ".panel h2")
    assert find(driver, ".panel h2").text == "Instances"
    driver.get(f"{server.base_url}/#/settings/files")
    editor = find(driver, "textarea.file-editor")
    wait_for(driver, lambda d: d.find_element("css selector", ".form-status").text == "", "file not loaded")
    editor.send_keys("\nBe brief.")
    wait_for(driver, lambda d: d.find_element("css selector", ".form-status").text == "Unsaved changes", "no warning")
    find(driver, ".form-actions button.primary").click()
    wait_for(driver, lambda d: d.find_element("css selector", ".form-status").text == "Saved.", "not saved")
    soul = server.get("/api/settings/files/SOUL.md", server.admin_key).json()["content"]
    assert soul.endswith("Be brief.")


def test_dark_mode_follows_the_system_setting(driver, server):
    sign_in(driver, server, server.admin_key, "#/chat")
    background = "return getComputedStyle(document.body).backgroundColor"
    light = driver.execute_script(background)
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        wait_for(driver, lambda d: d.execute_script(background) != light, "no dark colours")
        save_screenshot(driver, "chat-dark")
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


# --- restart (last: restarts the shared server) ----------------------------------------------

@pytest.mark.console_errors_expected  # the browser logs the failed reconnect attempts
def test_server_restart_mid_stream_resumes_the_reply(driver, server, fake):
    sign_in(driver, server, server.admin_key, "#/chat")
    gate = threading.Event()
    words = [f"chunk{i}" for i in range(30)]
    fake.script(Reply("before", tool_calls=[ToolCall("MemorySearch", {"query": "restart"})]),
                gated(Reply(" ".join(words), chunks=30, chunk_delay=0.1), gate))
    send_message(driver, "Keep going through a restart")
    wait_for(driver, lambda d: "before" in (_visible(d, ".message.assistant.streaming .text") or _Empty()).text,
             "the stream did not start")
    gate.set()
    server.stop(timeout=60)  # gunicorn lets the run finish (and store its frames) before exiting
    wait_for(driver, lambda d: d.find_element("css selector", ".connection").get_attribute("data-state") != "online",
             "the UI did not notice the server going away")
    server.start()
    reply = reply_finished(driver)
    wait_for(driver, lambda d: "chunk29" in reply.text, "the rest of the reply did not arrive")
    texts = " ".join(t.text for t in reply.find_elements("css selector", ".text")).split()
    assert texts == ["before"] + words
    assert len(driver.find_elements("css selector", ".log .message.assistant")) == 1
