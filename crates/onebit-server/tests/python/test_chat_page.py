"""The chat page in headless Chromium: type a prompt, send it, see streamed text appear,
stop a long reply. A screenshot is kept as a test artifact (target/chat-page.png)."""
import os
import time

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

from conftest import ROOT  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("Chromium and chromedriver are not installed (.ci/run installs them)")
    # Chromium's profile and its singleton socket folder (made under TMPDIR) go in pytest's own
    # temporary folder, which pytest prunes; left to themselves they collect in /tmp run after run.
    scratch = tmp_path_factory.mktemp("chromium")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={scratch / 'profile'}")
    service = webdriver.ChromeService(executable_path=DRIVER, env={**os.environ, "TMPDIR": str(scratch)})
    b = webdriver.Chrome(service=service, options=opts)
    yield b
    b.quit()


def wait(cond, seconds=30):
    end = time.time() + seconds
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_typing_a_prompt_streams_a_reply(server, browser):
    browser.get(server + "/")
    browser.find_element(By.ID, "api_key").send_keys("test-key")
    browser.execute_script("document.getElementById('api_key').onchange(); loadModel();")
    wait(lambda: browser.find_element(By.ID, "model").text == "austen")
    browser.find_element(By.ID, "max_tokens").clear()
    browser.find_element(By.ID, "max_tokens").send_keys("40")
    # Count the updates of the reply bubble as they happen: a streamed reply is written piece by
    # piece, a whole one at once (polling from here could miss fast pieces).
    browser.execute_script("""
        window.replyUpdates = 0;
        new MutationObserver((ms) => {
            for (const m of ms) if (m.target.classList && m.target.classList.contains('assistant')) window.replyUpdates++;
        }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
    """)
    browser.find_element(By.ID, "prompt").send_keys("Tell me about Anne Elliot.")
    browser.find_element(By.ID, "send").click()
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".msg.user"))
    reply = wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".msg.assistant"))[0]
    wait(lambda: browser.find_element(By.ID, "send").is_enabled() and reply.text)
    assert len(reply.text) > 10
    assert browser.execute_script("return window.replyUpdates") > 5, "the reply should arrive in pieces"
    meta = browser.find_elements(By.CLASS_NAME, "meta")
    assert meta and "tokens" in meta[-1].text
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    browser.save_screenshot(os.path.join(ROOT, "target", "chat-page.png"))


def test_stop_button_ends_a_reply(server, browser):
    browser.find_element(By.ID, "max_tokens").clear()
    browser.find_element(By.ID, "max_tokens").send_keys("200")
    browser.find_element(By.ID, "prompt").send_keys("Write a long letter.")
    # The reply of this small model takes milliseconds, so Stop is pressed in the same task
    # as Send: send() enables Stop before its first await, and the click aborts the request.
    browser.execute_script("document.getElementById('send').click(); document.getElementById('stop').click();")
    wait(lambda: browser.find_element(By.ID, "send").is_enabled())
    assert any("stopped" in m.text for m in browser.find_elements(By.CLASS_NAME, "meta"))
    assert not browser.find_element(By.ID, "stop").is_enabled()
