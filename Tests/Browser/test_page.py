"""The chat page in a real browser: headless Chromium driven by Selenium.

Run by scripts/browser-test.sh (and so by scripts/test.sh). It starts two `chatroom`
instances on one Redis itself, so that it can kill and restart one, and stops them at the
end. Screenshots go to $CHATROOM_SCREENSHOTS (default .build/browser-screenshots).
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

BINARY = os.environ["CHATROOM_BINARY"]
REDIS_URL = os.environ["CHATROOM_TEST_REDIS_URL"]
SHOTS = os.environ.get("CHATROOM_SCREENSHOTS", ".build/browser-screenshots")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout=10.0, step=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {message} (last: {last!r})")


class Instance:
    """One chatroom process this test started, by its PID."""

    def __init__(self, *extra):
        self.port = free_port()
        self.extra = list(extra)
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            # A short grace period, so that leaving shows within the tests' waits.
            [BINARY, "--port", str(self.port), "--redis-url", REDIS_URL, "--log-level", "warning", "--presence-grace", "2", *self.extra],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: self.answers(), message=f"chatroom on port {self.port}")

    def answers(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def send(self, data, channel, name=None):
        fields = {"data": data, "channel": channel}
        if name:
            fields["name"] = name
        body = urllib.parse.urlencode(fields).encode()
        with urllib.request.urlopen(urllib.request.Request(self.url + "send/", data=body), timeout=5) as response:
            return response.read().decode()


def browser(width=1000, height=760):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    return driver


INSTANCES = {}


def setUpModule():
    os.makedirs(SHOTS, exist_ok=True)
    INSTANCES["a"] = Instance("--send-rate", "0")
    INSTANCES["b"] = Instance("--send-rate", "0")
    # Allows one publish now and then one every 5 s (for the refusal shown on the page),
    # and has a room for one.
    INSTANCES["c"] = Instance("--send-rate", "0.2", "--send-burst", "1", "--channels", "channel_1,channel_2,tiny:1")


def tearDownModule():
    for instance in INSTANCES.values():
        instance.stop()


class PageTestCase(unittest.TestCase):
    """Three instances on one Redis (a, b, c), browsers, and what the tests share."""

    @classmethod
    def setUpClass(cls):
        cls.a, cls.b, cls.c = INSTANCES["a"], INSTANCES["b"], INSTANCES["c"]
        cls.drivers = []

    @classmethod
    def tearDownClass(cls):
        for driver in cls.drivers:
            driver.quit()

    def open(self, instance, path="", width=1000, height=760):
        driver = browser(width, height)
        self.drivers.append(driver)
        driver.get(instance.url + path)
        wait_until(lambda: self.status(driver) == "Connected", message="Connected")
        return driver

    def close(self, driver):
        driver.quit()
        self.drivers.remove(driver)

    def shot(self, driver, name):
        driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))

    @staticmethod
    def status(driver):
        return driver.find_element(By.ID, "status").text

    @staticmethod
    def texts(driver):
        return driver.execute_script("return [...document.querySelectorAll('#messages li[data-offset] .text')].map(e => e.textContent)")

    @staticmethod
    def cookie(driver, name):
        value = driver.get_cookie(name)
        return urllib.parse.unquote(value["value"]) if value else None

    def select_tab(self, driver, channel):
        driver.find_element(By.ID, f"tab-{channel}").click()
        wait_until(lambda: self.cookie(driver, "channel") == channel, message=f"cookie {channel}")
        wait_until(lambda: self.status(driver) == "Connected", message="Connected after switching")

    def type_message(self, driver, text):
        box = driver.find_element(By.ID, "text")
        box.click()
        box.send_keys(text)
        box.send_keys(Keys.ENTER)


class ChatPageTests(PageTestCase):
    # 1, 2: tabs, cookie, only the chosen channel's messages
    def test_1_tabs_switch_the_channel_cookie_and_only_that_channel_arrives(self):
        driver = self.open(self.a)
        tabs = [tab.get_attribute("data-channel") for tab in driver.find_elements(By.CSS_SELECTOR, "#tabs [role=tab]")]
        self.assertEqual(tabs[:2], ["channel_1", "channel_2"])
        self.select_tab(driver, "channel_2")
        self.a.send("for two", "channel_2")
        self.a.send("for one", "channel_1")
        wait_until(lambda: "for two" in self.texts(driver), message="the channel_2 message")
        time.sleep(0.5)
        self.assertNotIn("for one", self.texts(driver))
        self.select_tab(driver, "channel_1")
        wait_until(lambda: "for one" in self.texts(driver), message="channel_1's history")
        self.assertNotIn("for two", self.texts(driver))
        self.shot(driver, "tabs")
        self.close(driver)

    # 3, 4: a message from the form reaches a second window on the other instance; presence
    def test_2_form_message_reaches_another_instance_and_presence_counts_windows(self):
        channel = f"room{int(time.time() * 1000) % 100000}"
        first = self.open(self.a, f"#channel={channel}")
        second = self.open(self.b, f"#channel={channel}")
        self.assertEqual(self.cookie(first, "channel"), channel)
        presence = lambda d: d.find_element(By.ID, "presence").text
        wait_until(lambda: presence(first) == "2 online" and presence(second) == "2 online", message="2 online in both")
        first.find_element(By.ID, "name").send_keys("Ada")
        self.type_message(first, "hello from the form")
        wait_until(lambda: "hello from the form" in self.texts(second), message="the message in the second window")
        who = second.execute_script("return [...document.querySelectorAll('#messages li[data-offset]')].at(-1).querySelector('.who').textContent")
        self.assertEqual(who, "Ada")
        wait_until(lambda: first.execute_script("return document.querySelector('#messages li.own') !== null"), message="own message marked")
        self.shot(first, "form-and-presence")
        self.close(second)
        wait_until(lambda: presence(first) == "1 online", message="back to 1 online")
        self.close(first)

    # 5: killed and restarted: reconnecting, connected, messages of the outage exactly once
    def test_3_a_killed_server_comes_back_and_nothing_is_missed_or_doubled(self):
        channel = f"outage{int(time.time() * 1000) % 100000}"
        driver = self.open(self.a, f"#channel={channel}")
        self.a.send("before", channel)
        wait_until(lambda: "before" in self.texts(driver), message="before")
        self.a.kill()
        wait_until(lambda: self.status(driver).startswith("Reconnecting"), message="Reconnecting")
        self.shot(driver, "reconnecting")
        during = [f"during {n}" for n in range(1, 6)]
        for text in during:
            self.assertEqual(self.b.send(text, channel), "ok")
        self.a.start()
        wait_until(lambda: self.status(driver) == "Connected", timeout=30, message="Connected again")
        wait_until(lambda: all(text in self.texts(driver) for text in during), message="the outage's messages")
        time.sleep(0.5)
        texts = self.texts(driver)
        for text in ["before", *during]:
            self.assertEqual(texts.count(text), 1, f"{text} exactly once in {texts}")
        self.close(driver)

    # 6: markup in a message is text
    def test_4_markup_in_a_message_renders_as_text_and_runs_nothing(self):
        channel = f"xss{int(time.time() * 1000) % 100000}"
        driver = self.open(self.a, f"#channel={channel}")
        payload = "<img src=x onerror=alert(1)>"
        self.a.send(payload, channel, name="<b>bold</b>")
        wait_until(lambda: payload in self.texts(driver), message="the payload as text")
        self.assertEqual(driver.execute_script("return document.querySelectorAll('#messages img, #messages b').length"), 0)
        with self.assertRaises(NoAlertPresentException):
            driver.switch_to.alert.text
        self.close(driver)

    # 7: keyboard only
    def test_5_keyboard_alone_switches_tabs(self):
        driver = self.open(self.a)
        body = driver.find_element(By.TAG_NAME, "body")
        for _ in range(10):
            if driver.execute_script("return document.activeElement.getAttribute('role')") == "tab":
                break
            body.send_keys(Keys.TAB)
        active = driver.switch_to.active_element
        self.assertEqual(active.get_attribute("role"), "tab", "Tab reaches the tablist")
        start = active.get_attribute("data-channel")
        active.send_keys(Keys.ARROW_RIGHT)
        now = driver.switch_to.active_element.get_attribute("data-channel")
        self.assertNotEqual(now, start)
        wait_until(lambda: self.cookie(driver, "channel") == now, message="cookie follows the arrow key")
        self.assertEqual(driver.switch_to.active_element.get_attribute("aria-selected"), "true")
        outline = driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
        self.assertNotEqual(outline, "none", "focus is visible")
        self.close(driver)

    # unread badges, the server's refusals shown, the counter
    def test_6_unread_badges_refusals_and_the_counter(self):
        driver = self.open(self.c)
        self.a.send("unread one", "channel_2")
        badge = lambda: driver.execute_script("const b = document.querySelector('#tab-channel_2 .badge'); return b.hidden ? '' : b.textContent")
        wait_until(lambda: badge() == "1", timeout=12, message="a badge of 1 on channel_2")
        self.shot(driver, "unread")
        # Instance c allows one publish, then one per 5 s: the second is refused with 429.
        self.type_message(driver, "first")
        wait_until(lambda: "first" in self.texts(driver), message="first")
        self.type_message(driver, "second")
        error = driver.find_element(By.ID, "send-error")
        wait_until(lambda: error.is_displayed() and "429" in error.text, message="the refusal shown")
        self.assertIn("Too many messages", error.text)
        self.assertEqual(driver.find_element(By.ID, "text").get_attribute("value"), "second", "the text is kept to try again")
        self.select_tab(driver, "channel_2")
        wait_until(lambda: badge() == "", message="badge cleared when read")
        # The counter warns near the server's limit and stops a message over it.
        driver.execute_script("const t = document.getElementById('text'); t.value = 'é'.repeat(32769); t.dispatchEvent(new Event('input'))")
        counter = driver.find_element(By.ID, "counter")
        self.assertEqual(counter.text, "65,538 / 65,536 bytes")
        self.assertIn("over", counter.get_attribute("class"))
        self.assertFalse(driver.find_element(By.ID, "send").is_enabled())
        self.close(driver)

    # 4 (long history): 10,000 messages in a burst do not freeze the page
    def test_7_ten_thousand_messages_in_a_burst_keep_the_page_responsive(self):
        channel = f"burst{int(time.time() * 1000) % 100000}"
        driver = self.open(self.a, f"#channel={channel}")
        driver.execute_script(
            """
            window.__gaps = []; let last = performance.now();
            window.__timer = setInterval(() => { const now = performance.now(); window.__gaps.push(now - last); last = now; }, 20);
            """
        )
        count = 10_000
        started = time.monotonic()
        post_burst(self.a.port, channel, count)
        posted = time.monotonic() - started
        wait_until(lambda: driver.execute_script("return Number(document.querySelector('#messages li[data-offset]:last-child')?.dataset.offset ?? 0)") == count, timeout=60, message="the last message shown")
        stats = driver.execute_script("clearInterval(window.__timer); const g = window.__gaps.slice().sort((a, b) => a - b); return {max: g.at(-1), p99: g[Math.floor(g.length * 0.99)], n: g.length, dom: document.querySelectorAll('#messages li').length}")
        self.shot(driver, "burst")
        print(f"\nburst: {count} messages posted in {posted:.1f} s; page timer gaps max {stats['max']:.0f} ms, p99 {stats['p99']:.0f} ms over {stats['n']} ticks; {stats['dom']} items in the page", file=sys.stderr)
        with open(os.path.join(SHOTS, "burst.json"), "w") as file:
            json.dump({"messages": count, "posted_seconds": posted, **stats}, file)
        self.assertLessEqual(stats["dom"], 300 + 5, "the page keeps at most a few hundred messages")
        # Drawing 10,000 messages at once freezes the page for seconds; batching keeps each
        # tick short. 1.5 s leaves room for a loaded machine (here: at most 0.3 s).
        self.assertLess(stats["max"], 1500, "no freeze of 1.5 s or more")
        # Load earlier brings older messages from /history.
        before = driver.execute_script("return Number(document.querySelector('#messages li[data-offset]').dataset.offset)")
        driver.execute_script("document.getElementById('scroller').scrollTop = 0")
        driver.find_element(By.ID, "load-earlier").click()
        wait_until(lambda: driver.execute_script("return Number(document.querySelector('#messages li[data-offset]').dataset.offset)") < before, message="earlier messages")
        # Reading older messages: a new one does not move the page; a marker counts it.
        driver.execute_script("document.getElementById('scroller').scrollTop = 0")
        top = driver.execute_script("return document.getElementById('scroller').scrollTop")
        self.a.send("while you read", channel)
        jump = driver.find_element(By.ID, "new-messages")
        wait_until(lambda: jump.is_displayed() and jump.text == "1 new message ↓", message="the new-messages marker")
        self.assertEqual(driver.execute_script("return document.getElementById('scroller').scrollTop"), top, "not yanked away")
        jump.click()
        wait_until(lambda: self.texts(driver)[-1] == "while you read", message="the newest after the jump")
        self.assertFalse(jump.is_displayed())
        self.close(driver)

    # the README's screenshots: a conversation, wide and at 360 px
    def test_8_screenshots(self):
        channel = "channel_1"
        for name, text in [("Ada", "Has anyone tried the new build?"), ("Grace", "Yes, the resume after a restart is seamless.")]:
            self.a.send(text, channel, name=name)
        wide = self.open(self.a, width=1000, height=700)
        wait_until(lambda: "Yes, the resume after a restart is seamless." in self.texts(wide), message="the conversation")
        wide.find_element(By.ID, "name").send_keys("You")
        box = wide.find_element(By.ID, "text")
        box.click()
        box.send_keys("Looks good here too.")
        box.send_keys(Keys.SHIFT, Keys.ENTER)
        box.send_keys("Shift+Enter makes a second line", Keys.ENTER)
        wait_until(lambda: "Looks good here too.\nShift+Enter makes a second line" in self.texts(wide), message="two lines, one message")
        wait_until(lambda: wide.execute_script("return document.querySelector('#messages li.own') !== null"), message="own message")
        self.shot(wide, "page-wide")
        # Headless Chromium's window is at least 500 px wide: emulate a 360 px phone.
        narrow = browser()
        self.drivers.append(narrow)
        narrow.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": True})
        narrow.get(self.a.url)
        wait_until(lambda: self.status(narrow) == "Connected", message="Connected at 360 px")
        wait_until(lambda: "Yes, the resume after a restart is seamless." in self.texts(narrow), message="the conversation at 360 px")
        self.assertEqual(narrow.execute_script("return window.innerWidth"), 360)
        overflow = narrow.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        self.assertLessEqual(overflow, 0, "nothing wider than 360 px")
        self.shot(narrow, "page-360")
        self.close(narrow)
        wide.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        self.assertEqual(wide.execute_script("return getComputedStyle(document.body).backgroundColor"), "rgb(20, 23, 28)", "the dark theme")
        self.shot(wide, "page-dark")
        self.close(wide)


class RoomTests(PageTestCase):
    """Rooms: one-to-one from the online list, a full room."""

    def people(self, driver):
        return driver.execute_script("return [...document.querySelectorAll('#people-list li')].map(li => li.textContent)")

    def test_9_a_one_to_one_room_opens_from_the_online_list(self):
        channel = f"lobby{int(time.time() * 1000) % 100000}"
        ada = self.open(self.a, f"#channel={channel}")
        bob = self.open(self.b, f"#channel={channel}")
        for driver, name in ((ada, "Ada"), (bob, "Bob")):
            field = driver.find_element(By.ID, "name")
            field.send_keys(name, Keys.TAB)  # change → the socket says the new name
        wait_until(lambda: "Bob" in self.people(ada) and "Ada" in self.people(bob), message="each in the other's list")
        self.assertIn("Ada (you)", self.people(ada))
        ada.find_element(By.ID, "presence").click()
        ada.find_element(By.CSS_SELECTOR, "#people-list button").click()
        wait_until(lambda: (self.cookie(ada, "channel") or "").startswith("dm:"), message="Ada in the one-to-one room")
        room = self.cookie(ada, "channel")
        self.assertEqual(ada.find_element(By.CSS_SELECTOR, '#tabs [aria-selected="true"] .tab-name').text, "@Bob")
        wait_until(lambda: self.status(ada) == "Connected", message="Ada connected to the room")
        self.type_message(ada, "just between us")
        wait_until(lambda: "just between us" in self.texts(ada), message="Ada sees her message")
        # Bob, still in the lobby, is told: a tab "@Ada" appears, with the message unread.
        tab = lambda: bob.execute_script(
            "const t = document.getElementById(arguments[0]); if (!t) return null;"
            "const b = t.querySelector('.badge'); return [t.querySelector('.tab-name').textContent, b.hidden ? '' : b.textContent]",
            f"tab-{room}",
        )
        wait_until(lambda: tab() == ["@Ada", "1"], timeout=20, message="an @Ada tab with 1 unread in Bob's window")
        self.assertEqual(self.cookie(bob, "channel"), channel, "Bob is not moved")
        self.shot(bob, "one-to-one-notice")
        # Bob opens the room from that tab, and finds the message in its history.
        bob.find_element(By.ID, f"tab-{room}").click()
        wait_until(lambda: self.cookie(bob, "channel") == room, message="Bob in the same room")
        wait_until(lambda: "just between us" in self.texts(bob), message="the message in Bob's window")
        self.type_message(bob, "agreed")
        wait_until(lambda: "agreed" in self.texts(ada), message="Bob's answer in Ada's window")
        self.shot(ada, "one-to-one")
        # Anyone else who tries the room's address is refused, and told so.
        eve = self.open(self.a)
        eve.get(self.a.url + f"#channel={room}")
        eve.refresh()
        wait_until(lambda: "private one-to-one room" in self.status(eve), message="Eve refused")
        self.assertNotIn("just between us", self.texts(eve))
        for driver in (ada, bob, eve):
            self.close(driver)

    def test_10_a_full_room_says_so(self):
        first = self.open(self.c, "#channel=tiny")
        second = browser()
        self.drivers.append(second)
        second.get(self.c.url + "#channel=tiny")
        wait_until(lambda: self.status(second) == "This room is full: it holds at most 1 person.", message="the room is full")
        self.shot(second, "room-full")
        self.close(second)
        self.close(first)


def post_burst(port, channel, count, lanes=8):
    """Posts `count` messages ('burst 1' … in order per lane) as fast as keep-alive allows."""
    def lane(index):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for number in range(index + 1, count + 1, lanes):
            body = urllib.parse.urlencode({"data": f"burst {number}", "channel": channel})
            connection.request("POST", "/send/", body, {"Content-Type": "application/x-www-form-urlencoded"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
        connection.close()

    threads = [threading.Thread(target=lane, args=(index,)) for index in range(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    unittest.main(verbosity=2)
