"""The chat page in a real browser: headless Chromium driven by Selenium.

Run by scripts/browser-test.sh (and so by scripts/test.sh). It starts three `chatroom`
instances on the script's Redis itself, so that it can kill and restart one, and stops
them at the end; the outbox tests start a redis-server of their own (by its PID, so that
they can stop and start it) with two instances on it. Screenshots go to
$CHATROOM_SCREENSHOTS (default .build/browser-screenshots).
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
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


def stop_process(process, timeout):
    """Ends a process this test started: SIGTERM, then SIGKILL after `timeout` seconds."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Instance:
    """One chatroom process this test started, by its PID."""

    def __init__(self, *extra, redis_url=REDIS_URL, log_level="warning"):
        self.port = free_port()
        self.extra = list(extra)
        self.redis_url = redis_url
        self.log_level = log_level
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            # A short grace period, so that leaving shows within the tests' waits.
            [BINARY, "--port", str(self.port), "--redis-url", self.redis_url, "--log-level", self.log_level, "--presence-grace", "2", *self.extra],
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
        stop_process(self.process, timeout=15)

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


class Redis:
    """A redis-server of a test's own, without persistence, stopped and started by its PID."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chatroom-browser-redis.")
        self.process = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "", "--appendonly", "no", "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.answers, message=f"redis-server on port {self.port}")

    def answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Peer:
    """Someone else, over HTTP: an identity (the uid cookie the page issues) that posts."""

    def __init__(self, instance):
        self.instance = instance
        with urllib.request.urlopen(instance.url, timeout=5) as response:
            cookie = next(value for key, value in response.getheaders() if key.lower() == "set-cookie" and value.startswith("uid="))
        self.cookie = cookie.split(";")[0]
        self.id = self.cookie.split("=", 1)[1].split(".")[0]

    def send(self, data, channel, name=None):
        fields = {"data": data, "channel": channel}
        if name:
            fields["name"] = name
        request = urllib.request.Request(self.instance.url + "send/", data=urllib.parse.urlencode(fields).encode(), headers={"Cookie": self.cookie})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()


def browser(width=1000, height=760, network_log=False):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    if network_log:
        # Chrome's performance log carries the DevTools Network events: every request the page makes.
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    return driver


def requests_made(driver, path):
    """The URLs of the requests to `path` the page made since the last call (from the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        if event.get("method") == "Network.requestWillBeSent":
            url = event["params"]["request"]["url"]
            if urllib.parse.urlsplit(url).path == path:
                urls.append(url)
    return urls


# Run before the page's own script: while window.holdSockets is true, the server looks
# unreachable to the page. Every WebSocket it opens goes to a closed port, so it fails and
# the page retries as it would offline; and /healthz and /events fail too, so the page
# does not take the failed sockets for a proxy that blocks WebSocket (it would fall back
# to the event stream, which answers).
HOLD_SOCKETS = """
(() => {
  const Real = window.WebSocket;
  window.holdSockets = true;
  function HeldWebSocket(url, protocols) {
    return new Real(window.holdSockets ? "ws://127.0.0.1:9/held" : url, protocols);
  }
  HeldWebSocket.prototype = Real.prototype;
  for (const name of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) HeldWebSocket[name] = Real[name];
  window.WebSocket = HeldWebSocket;
  const realFetch = window.fetch.bind(window);
  window.fetch = (resource, options) => {
    const path = new URL(resource instanceof Request ? resource.url : String(resource), location.href).pathname;
    if (window.holdSockets && (path === "/healthz" || path === "/events")) return Promise.reject(new TypeError("held"));
    return realFetch(resource, options);
  };
  const RealEventSource = window.EventSource;
  function HeldEventSource(url, options) {
    return new RealEventSource(window.holdSockets ? "http://127.0.0.1:9/held" : url, options);
  }
  HeldEventSource.prototype = RealEventSource.prototype;
  for (const name of ["CONNECTING", "OPEN", "CLOSED"]) HeldEventSource[name] = RealEventSource[name];
  window.EventSource = HeldEventSource;
})();
"""


# Run before the page's own script: while window.blackHole is true, the page's sockets
# stay open but nothing gets through either way (what a dead network without the
# browser noticing looks like: no close, no offline event).
BLACK_HOLE = """
(() => {
  const Real = window.WebSocket;
  window.blackHole = false;
  function HoleWebSocket(url, protocols) {
    const socket = new Real(url, protocols);
    const send = socket.send.bind(socket);
    socket.send = (data) => {
      if (!window.blackHole) send(data);
    };
    socket.addEventListener("message", (event) => {
      if (window.blackHole) event.stopImmediatePropagation();
    });
    return socket;
  }
  HoleWebSocket.prototype = Real.prototype;
  for (const name of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) HoleWebSocket[name] = Real[name];
  window.WebSocket = HoleWebSocket;
})();
"""


# Run before the page's own script: window.Notification records what the page shows
# (permission "default" until asked, as in a fresh browser), and document.hidden says
# what window.__hidden says, so that a test can hide the page.
FAKE_NOTIFICATIONS = """
(() => {
  window.__notes = [];
  window.__asked = 0;
  window.__hidden = false;
  Object.defineProperty(document, "hidden", { configurable: true, get: () => window.__hidden });
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (window.__hidden ? "hidden" : "visible") });
  class RecordedNotification {
    constructor(title, options = {}) {
      window.__notes.push({ title, body: options.body ?? "", tag: options.tag ?? "" });
    }
    static requestPermission() {
      window.__asked++;
      RecordedNotification.permission = "granted";
      return Promise.resolve("granted");
    }
  }
  RecordedNotification.permission = "default";
  window.Notification = RecordedNotification;
})();
"""


def shifted_clock(days):
    """A script that moves the page's clock (Date.now(), new Date()) `days` ahead; dates of given times stay."""
    return """
(() => {
  const Real = Date;
  const shift = %d * 86400000;
  function Shifted(...args) {
    if (!new.target) return new Real(Real.now() + shift).toString();
    return args.length ? new Real(...args) : new Real(Real.now() + shift);
  }
  Shifted.prototype = Real.prototype;
  Shifted.now = () => Real.now() + shift;
  Shifted.UTC = Real.UTC;
  Shifted.parse = Real.parse;
  window.Date = Shifted;
})();
""" % days


def languages(*tags):
    """A script that makes navigator.languages say `tags`."""
    return "Object.defineProperty(Navigator.prototype, 'languages', { configurable: true, get: () => %s });" % json.dumps(list(tags))


def set_offline(driver, offline):
    """Takes the browser off the network (DevTools network emulation) or back on it."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})


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

    def open(self, instance, path="", width=1000, height=760, network_log=False, scripts=(), connected="Connected"):
        """A new browser on `instance`; `scripts` run in every document before the page's own."""
        driver = browser(width, height, network_log)
        self.drivers.append(driver)
        for script in scripts:
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})
        driver.get(instance.url + path)
        wait_until(lambda: self.status(driver) == connected, message=connected)
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
    def bubble(driver, text):
        """The message item whose text is `text` (or starts so), by XPath-free search."""
        return driver.execute_script("return [...document.querySelectorAll('#messages li[data-offset]')].find(li => li.querySelector('.text').textContent.startsWith(arguments[0])) ?? null", text)

    @staticmethod
    def outgoing(driver):
        """The outbox's items in the list: [state, text, what the item says]."""
        return driver.execute_script("return [...document.querySelectorAll('#messages li.outgoing')].map(e => [e.dataset.state, e.querySelector('.text').textContent, e.querySelector('.send-state').textContent])")

    @staticmethod
    def outbox(driver):
        """The texts of the messages kept in localStorage until acknowledged."""
        return driver.execute_script("return Object.keys(localStorage).filter(k => k.startsWith('chatroom.outbox.')).map(k => JSON.parse(localStorage.getItem(k)).data).sort()")

    @staticmethod
    def badge(driver, channel):
        return driver.execute_script("const t = document.getElementById(arguments[0]); if (!t) return null; const b = t.querySelector('.badge'); return b.hidden ? '' : b.textContent", f"tab-{channel}")

    def assert_once_in_order(self, texts, expected):
        for text in expected:
            self.assertEqual(texts.count(text), 1, f"{text!r} exactly once in {texts}")
        self.assertEqual([text for text in texts if text in expected], expected, "in the order typed")

    @staticmethod
    def cookie(driver, name):
        value = driver.get_cookie(name)
        return urllib.parse.unquote(value["value"]) if value else None

    def select_tab(self, driver, channel):
        driver.find_element(By.ID, f"tab-{channel}").click()
        wait_until(lambda: self.cookie(driver, "channel") == channel, message=f"cookie {channel}")
        wait_until(lambda: self.status(driver) == "Connected", message="Connected after switching")

    def select_tab_anyway(self, driver, channel):
        """Chooses a tab without waiting for "Connected" (the tab left may be refused)."""
        driver.find_element(By.ID, f"tab-{channel}").click()
        wait_until(lambda: self.cookie(driver, "channel") == channel, message=f"cookie {channel}")

    @staticmethod
    def composer_state(driver):
        return driver.execute_script("const t = document.getElementById('text'); return [t.disabled, t.placeholder]")

    def open_menu(self, driver, person):
        """Opens the people list and `person`'s moderation menu (with the mouse); answers the menu.

        The list is drawn again when someone comes or goes (presence): an element found just
        before may be gone by the click, and is then found again (a few times at most)."""
        for attempt in range(5):
            try:
                toggle = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, f'#people-list li[data-person="{person}"] .mod-toggle'), message="the person's ⋯ button")[0]
                if not driver.execute_script("return document.getElementById('people').open"):
                    driver.find_element(By.ID, "presence").click()
                menu_id = toggle.get_attribute("aria-controls")
                toggle.click()
                # Found afresh each time: a redraw keeps the menu open in new elements.
                opened = lambda: driver.execute_script(
                    "const m = document.getElementById(arguments[0]); return m !== null && !m.hidden && m.offsetParent !== null"
                    " && m.closest('li').querySelector('.mod-toggle').getAttribute('aria-expanded') === 'true'",
                    menu_id,
                )
                wait_until(opened, message="the menu open")
                return driver.find_element(By.ID, menu_id)
            except StaleElementReferenceException:
                if attempt == 4:
                    raise
                time.sleep(0.1)

    def choose(self, driver, person, action):
        menu = self.open_menu(driver, person)
        menu.find_element(By.CSS_SELECTOR, f'[data-action="{action}"]').click()

    def result(self, driver):
        return driver.execute_script("const r = document.querySelector('.mod-result'); return r && !r.hidden ? r.textContent : ''")

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
        badge = lambda: self.badge(driver, "channel_2")
        wait_until(lambda: badge() == "1", timeout=5, message="a badge of 1 on channel_2")
        self.shot(driver, "unread")
        # Instance c allows one publish, then one per 5 s: the second is refused with 429
        # (nack with retryAfter), which the page shows next to it and then sends again.
        self.type_message(driver, "first")
        wait_until(lambda: "first" in self.texts(driver), message="first")
        self.type_message(driver, "second")
        self.assertEqual(driver.find_element(By.ID, "text").get_attribute("value"), "", "the message went to the outbox")
        wait_until(lambda: any(state == "retrying" and "Too many messages" in said for state, _, said in self.outgoing(driver)), message="the refusal shown next to the message")
        self.shot(driver, "retrying")
        wait_until(lambda: "second" in self.texts(driver), timeout=15, message="second, sent again after retryAfter")
        self.assertEqual(self.outgoing(driver), [])
        self.assert_once_in_order(self.texts(driver), ["first", "second"])
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

    # the README's screenshots: a conversation, wide and at 360 px, light and dark
    def test_8_screenshots(self):
        # An instance of its own, with labelled channels of this run's own (a clean history).
        suffix = int(time.time() * 1000) % 100000
        lobby, desk = f"lobby{suffix}", f"help{suffix}"
        shots = Instance("--send-rate", "0", "--channels", f"{lobby}=Lobby,{desk}=Help desk")
        try:
            self.take_screenshots(shots, lobby, desk)
        finally:
            shots.stop()

    def take_screenshots(self, shots, lobby, desk):
        for name, text in [
            ("Ada", "Has anyone tried the new build?"),
            ("Grace", "Yes, the resume after a restart is seamless. Notes: https://example.com/builds/1234"),
            ("Grace", "Start it with `--presence-grace 2` to see people leave sooner."),
        ]:
            self.assertEqual(shots.send(text, lobby, name=name), "ok")
        wide = self.open(shots, width=1000, height=700)
        wait_until(lambda: len(self.texts(wide)) == 3, message="the conversation")
        self.assertEqual(shots.send("Is the help desk open today?", desk, name="Lin"), "ok")
        self.assertEqual(wide.find_element(By.CSS_SELECTOR, '#tabs [aria-selected="true"] .tab-name').text, "Lobby")
        # A reaction to Ada's question, from the picker.
        question = wide.execute_script("return document.querySelector('#messages li[data-offset]')")
        ActionChains(wide).move_to_element(question).perform()
        question.find_element(By.CSS_SELECTOR, ".actions .react").click()
        question.find_element(By.CSS_SELECTOR, '.picker [data-emoji="👍"]').click()
        wait_until(lambda: wide.execute_script("return [...document.querySelectorAll('#messages .chip')].map(c => c.textContent)") == ["👍 1"], message="the reaction")
        wide.find_element(By.ID, "name").send_keys("You")
        box = wide.find_element(By.ID, "text")
        box.click()
        box.send_keys("Looks good here too.")
        box.send_keys(Keys.SHIFT, Keys.ENTER)
        box.send_keys("Shift+Enter makes a second line", Keys.ENTER)
        wait_until(lambda: "Looks good here too.\nShift+Enter makes a second line" in self.texts(wide), message="two lines, one message")
        wait_until(lambda: wide.execute_script("return document.querySelector('#messages li.own') !== null"), message="own message")
        wait_until(lambda: self.badge(wide, desk) == "1", message="the help desk's question unread")
        self.assertEqual(wide.execute_script("return [...document.querySelectorAll('#messages .text a')].map(a => a.textContent)"), ["https://example.com/builds/1234"])
        wide.execute_script("document.activeElement.blur()")
        self.shot(wide, "page-wide")
        # Headless Chromium's window is at least 500 px wide: emulate a 360 px phone.
        narrow = browser()
        self.drivers.append(narrow)
        narrow.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": True})
        narrow.get(shots.url)
        wait_until(lambda: self.status(narrow) == "Connected", message="Connected at 360 px")
        wait_until(lambda: "Looks good here too.\nShift+Enter makes a second line" in self.texts(narrow), message="the conversation at 360 px")
        self.assertEqual(narrow.execute_script("return window.innerWidth"), 360)
        overflow = narrow.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        self.assertLessEqual(overflow, 0, "nothing wider than 360 px")
        self.assertFalse(narrow.find_element(By.ID, "name").is_displayed(), "the name folded away")
        self.shot(narrow, "page-360")
        toggle = narrow.find_element(By.ID, "name-toggle")
        toggle.click()
        self.assertTrue(narrow.find_element(By.ID, "name").is_displayed(), "the name behind its button")
        self.assertEqual(toggle.get_attribute("aria-expanded"), "true")
        toggle.click()
        # Many tabs: the one chosen is scrolled into view.
        for number in range(6):
            narrow.execute_script("location.hash = arguments[0]", f"#channel=narrow-tab-{number}")
            wait_until(lambda: self.cookie(narrow, "channel") == f"narrow-tab-{number}", message=f"tab {number}")
        in_view = "const t = document.querySelector('#tabs [aria-selected=true]').getBoundingClientRect(), n = document.getElementById('tabs').getBoundingClientRect(); return t.left >= n.left - 1 && t.right <= n.right + 1"
        wait_until(lambda: narrow.execute_script(in_view), message="the chosen tab in view")
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
        # Without names, each is "Anonymous XYZ" from their id: told apart, and the same after a reload.
        bob_id = self.cookie(bob, "uid").split(".")[0]
        anonymous_bob = "Anonymous " + re.sub("[^A-Za-z0-9]", "", bob_id)[:3].upper()
        wait_until(lambda: anonymous_bob in self.people(ada), message=f"{anonymous_bob} in Ada's list")
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
        wait_until(lambda: tab() == ["@Ada", "1"], timeout=5, message="an @Ada tab with 1 unread in Bob's window")
        self.assertEqual(self.cookie(bob, "channel"), channel, "Bob is not moved")
        self.shot(bob, "one-to-one-notice")
        # Bob opens the room from that tab, and finds the message in its history.
        bob.find_element(By.ID, f"tab-{room}").click()
        wait_until(lambda: self.cookie(bob, "channel") == room, message="Bob in the same room")
        wait_until(lambda: "just between us" in self.texts(bob), message="the message in Bob's window")
        self.type_message(bob, "agreed")
        wait_until(lambda: "agreed" in self.texts(ada), message="Bob's answer in Ada's window")
        self.shot(ada, "one-to-one")
        # Ada shows another name: Bob's tab follows it, and is never named by the room's id.
        field = ada.find_element(By.ID, "name")
        field.clear()
        field.send_keys("Ada L.", Keys.TAB)
        bob_tab = lambda: bob.execute_script("const t = document.getElementById(arguments[0]); return [t.querySelector('.tab-name').textContent, t.getAttribute('aria-label')]", f"tab-{room}")
        wait_until(lambda: bob_tab()[0] == "@Ada L.", message="Bob's tab says @Ada L.")
        self.assertFalse(bob_tab()[1].startswith("dm:"), f"accessible name {bob_tab()[1]!r}")
        self.assertIn("@Ada L.", bob_tab()[1])
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
        # Nothing can be written there: the field says why.
        text = second.find_element(By.ID, "text")
        wait_until(lambda: not text.is_enabled(), message="the message field disabled")
        self.assertIn("This room is full", text.get_attribute("placeholder"))
        self.assertFalse(second.find_element(By.ID, "send").is_enabled())
        self.shot(second, "room-full")
        # Another tab of the same page takes messages again.
        self.select_tab_anyway(second, "channel_1")
        wait_until(lambda: text.is_enabled(), message="the field enabled in another room")
        self.close(second)
        self.close(first)


class LiveTests(PageTestCase):
    """One chat.v2 socket brings everything: nothing is polled."""

    def test_11_unread_badge_and_one_to_one_notice_arrive_live_without_reading_history(self):
        driver = self.open(self.a, network_log=True)
        me = self.cookie(driver, "uid").split(".")[0]
        # What the page reads on opening (the newest messages of its tab) is not polling.
        wait_until(lambda: driver.find_element(By.ID, "presence").text.endswith("online"), message="subscribed to the tab on screen")
        time.sleep(1)
        self.assertNotEqual(requests_made(driver, "/app.js"), [], "the performance log sees the page's requests")
        # Idle: the page used to read /history for every other tab and its inbox every 5 s.
        time.sleep(12)
        self.assertEqual(requests_made(driver, "/history"), [], "no /history read while idle for 12 s")
        # Someone on the other instance writes in a tab in the background, and to us one to one.
        ada = Peer(self.b)
        started = time.monotonic()
        self.assertEqual(ada.send("in the background", "channel_2", name="Ada"), "ok")
        wait_until(lambda: self.badge(driver, "channel_2") == "1", timeout=5, message="a badge of 1 on channel_2")
        badge_after = time.monotonic() - started
        room = "dm:" + ":".join(sorted([me, ada.id]))
        started = time.monotonic()
        self.assertEqual(ada.send("just to you", room, name="Ada"), "ok")
        tab = lambda: driver.execute_script("const t = document.getElementById(arguments[0]); return t ? [t.querySelector('.tab-name').textContent, t.querySelector('.badge').hidden ? '' : t.querySelector('.badge').textContent] : null", f"tab-{room}")
        wait_until(lambda: tab() == ["@Ada", "1"], timeout=5, message="an @Ada tab with 1 unread")
        notice_after = time.monotonic() - started
        print(f"\nlive: badge after {badge_after:.2f} s, one-to-one notice after {notice_after:.2f} s", file=sys.stderr)
        self.assertLess(badge_after, 2, "the badge within 2 s")
        self.assertLess(notice_after, 2, "the notice within 2 s")
        self.assertEqual(self.cookie(driver, "channel"), "channel_1", "the reader is not moved")
        self.assertEqual(requests_made(driver, "/history"), [], "the badge and the notice came over the socket, not from /history")
        self.shot(driver, "live-notice")
        # Opening the tab shows the message (this may read /history: the tab's newest).
        driver.find_element(By.ID, f"tab-{room}").click()
        wait_until(lambda: "just to you" in self.texts(driver), message="the one-to-one message")
        self.close(driver)

    def test_12_a_refused_message_is_shown_with_the_servers_words_and_kept_for_editing(self):
        channel = f"refuse{int(time.time() * 1000) % 100000}"
        driver = self.open(self.a, f"#channel={channel}")
        # A control character: the server refuses it (nack 400); the page does not check it itself.
        driver.execute_script("const t = document.getElementById('text'); t.value = 'bell \\u0007 here'; t.dispatchEvent(new Event('input'))")
        driver.find_element(By.ID, "send").click()
        wait_until(lambda: any(state == "failed" for state, _, _ in self.outgoing(driver)), message="the refusal")
        [(state, text, said)] = self.outgoing(driver)
        self.assertIn("control characters", said)
        self.assertIn("control characters", driver.find_element(By.ID, "send-error").text)
        self.shot(driver, "refused-message")
        # The next message of the channel is not held up by the refused one.
        self.type_message(driver, "after the refusal")
        wait_until(lambda: "after the refusal" in self.texts(driver), message="the next message")
        # Edit puts the text back into the composer and takes it out of the outbox.
        driver.find_element(By.CSS_SELECTOR, "#messages li.outgoing.failed [data-action=edit]").click()
        self.assertEqual(driver.find_element(By.ID, "text").get_attribute("value"), "bell \u0007 here")
        self.assertEqual(self.outgoing(driver), [])
        self.assertEqual(self.outbox(driver), [])
        self.close(driver)


class OutboxTests(PageTestCase):
    """The outbox: what is typed arrives once, in order, across the network going, Redis restarting and a reload.

    A redis-server of this class's own, so that it can be stopped and started, with two
    instances on it: the writer's window on one, the reader's on the other.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = Redis()
        # The identity secret is given, not kept in Redis: a Redis without persistence loses it.
        # Errors only: with Redis stopped, every retry of the instances would be a warning.
        secret = ("--identity-secret", "browser-tests-secret")
        cls.d = Instance("--send-rate", "0", *secret, redis_url=cls.redis.url, log_level="error")
        cls.e = Instance("--send-rate", "0", *secret, redis_url=cls.redis.url, log_level="error")

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.d.stop()
        cls.e.stop()
        cls.redis.remove()

    def writer_and_reader(self, prefix):
        channel = f"{prefix}{int(time.time() * 1000) % 100000}"
        writer = self.open(self.d, f"#channel={channel}")
        reader = self.open(self.e, f"#channel={channel}")
        self.type_message(writer, "before")
        wait_until(lambda: "before" in self.texts(reader), message="before, in the reader's window")
        return channel, writer, reader

    def test_13_typed_while_offline_arrives_once_in_order_on_the_other_instance(self):
        channel, writer, reader = self.writer_and_reader("offline")
        set_offline(writer, True)
        wait_until(lambda: self.status(writer).startswith("Offline"), message="Offline")
        typed = [f"offline {n}" for n in range(1, 6)]
        for text in typed:
            self.type_message(writer, text)
        wait_until(lambda: len(self.outgoing(writer)) == len(typed), message="the messages shown as sending")
        self.assertEqual([state for state, _, _ in self.outgoing(writer)], ["sending"] * len(typed))
        self.assertEqual(self.outbox(writer), sorted(typed), "kept in localStorage")
        self.shot(writer, "offline-outbox")
        time.sleep(1)
        self.assertEqual([text for text in self.texts(reader) if text in typed], [], "nothing left while offline")
        set_offline(writer, False)
        wait_until(lambda: all(text in self.texts(reader) for text in typed), timeout=20, message="the messages in the reader's window")
        wait_until(lambda: self.outgoing(writer) == [] and self.outbox(writer) == [], message="the outbox empty")
        time.sleep(1)
        self.assert_once_in_order(self.texts(reader), ["before", *typed])
        self.assert_once_in_order(self.texts(writer), ["before", *typed])
        self.close(writer)
        self.close(reader)

    def test_14_typed_while_redis_restarts_arrives_once_in_order_on_the_other_instance(self):
        channel, writer, reader = self.writer_and_reader("redis")
        self.redis.stop()
        typed = [f"during {n}" for n in range(1, 5)]
        for text in typed:
            self.type_message(writer, text)
            time.sleep(0.3)
        wait_until(lambda: any(state == "retrying" for state, _, _ in self.outgoing(writer)), timeout=10, message="the server's 503 shown")
        self.shot(writer, "redis-down")
        time.sleep(2)
        self.redis.start()
        wait_until(lambda: all(text in self.texts(reader) for text in typed), timeout=30, message="the messages in the reader's window")
        wait_until(lambda: self.outgoing(writer) == [] and self.outbox(writer) == [], message="the outbox empty")
        time.sleep(1)
        self.assert_once_in_order(self.texts(reader), typed)
        self.assert_once_in_order(self.texts(writer), typed)
        self.close(writer)
        self.close(reader)

    def test_32_a_dead_socket_is_noticed_soon_after_a_send_and_the_message_goes_on_the_next(self):
        channel = f"void{int(time.time() * 1000) % 100000}"
        writer = self.open(self.d, f"#channel={channel}", scripts=[BLACK_HOLE])
        reader = self.open(self.e, f"#channel={channel}")
        writer.execute_script("window.blackHole = true")
        self.type_message(writer, "into the void")
        started = time.monotonic()
        wait_until(lambda: self.status(writer) != "Connected", timeout=10, message="the dead socket noticed")
        noticed = time.monotonic() - started
        self.assertLess(noticed, 6.5, "sooner than the heartbeat's 10 s of silence")
        self.assertEqual([state for state, _, _ in self.outgoing(writer)], ["sending"], "still to be sent, not lost")
        writer.execute_script("window.blackHole = false")
        wait_until(lambda: self.status(writer) == "Connected", timeout=30, message="Connected again")
        wait_until(lambda: "into the void" in self.texts(reader), timeout=15, message="the message on the next socket")
        wait_until(lambda: self.outbox(writer) == [], message="the outbox empty")
        time.sleep(0.5)
        self.assertEqual(self.texts(reader).count("into the void"), 1)
        self.close(writer)
        self.close(reader)

    def test_33_a_channel_opened_while_offline_shows_its_messages_once_back(self):
        channel = f"opened{int(time.time() * 1000) % 100000}"
        for number in range(3):
            self.assertEqual(self.e.send(f"waiting {number}", channel), "ok")
        driver = self.open(self.d)
        set_offline(driver, True)
        wait_until(lambda: self.status(driver).startswith("Offline"), message="Offline")
        driver.execute_script("location.hash = arguments[0]", f"#channel={channel}")
        wait_until(lambda: self.cookie(driver, "channel") == channel, message="the channel chosen offline")
        set_offline(driver, False)
        wait_until(lambda: self.status(driver) == "Connected", timeout=20, message="Connected again")
        wait_until(lambda: self.texts(driver) == ["waiting 0", "waiting 1", "waiting 2"], message="the channel's messages")
        self.assertFalse(driver.find_element(By.ID, "empty").is_displayed())
        # And it is live.
        self.assertEqual(self.e.send("and now", channel), "ok")
        wait_until(lambda: "and now" in self.texts(driver), message="a live message")
        self.close(driver)

    def test_16_a_tab_opened_while_redis_is_down_is_refused_then_subscribed_again(self):
        driver = self.open(self.d)
        self.redis.stop()
        try:
            channel = f"later{int(time.time() * 1000) % 100000}"
            field = driver.find_element(By.ID, "channel-name")
            field.send_keys(channel, Keys.ENTER)
            # refused 4503: the server's words for that tab, and tried again with backoff.
            wait_until(lambda: driver.find_element(By.ID, "status").get_attribute("data-state") == "refused", message="the tab refused")
            self.assertIn("unavailable", self.status(driver))
            self.assertIn("refused", driver.find_element(By.ID, f"tab-{channel}").get_attribute("class"))
            self.shot(driver, "tab-refused-redis-down")
        finally:
            self.redis.start()
        wait_until(lambda: self.status(driver) == "Connected", timeout=30, message="subscribed once Redis is back")
        self.assertNotIn("refused", driver.find_element(By.ID, f"tab-{channel}").get_attribute("class"))
        # The subscription is live: a message posted on the other instance arrives.
        def posted():
            try:
                return self.e.send("after the outage", channel) == "ok"
            except urllib.error.HTTPError:
                return False  # the instance has not reconnected to Redis yet (503)

        wait_until(posted, timeout=15, step=0.5, message="a publish on the other instance")
        wait_until(lambda: "after the outage" in self.texts(driver), message="the message in the tab")
        self.close(driver)

    def test_15_a_reload_with_messages_in_the_outbox_sends_them_once_in_order(self):
        channel, writer, reader = self.writer_and_reader("reload")
        set_offline(writer, True)
        wait_until(lambda: self.status(writer).startswith("Offline"), message="Offline")
        typed = [f"reloaded {n}" for n in range(1, 5)]
        for text in typed:
            self.type_message(writer, text)
        wait_until(lambda: len(self.outgoing(writer)) == len(typed), message="the messages shown as sending")
        # Sockets are held back from here on, in this page and the next: Chromium tells a
        # page it is online for a moment while it navigates away under offline emulation
        # (and the page rightly sends then), and the test wants to see the reloaded page
        # show what its outbox kept before it sends it. (DevTools' URL blocking does not
        # apply to WebSockets.)
        writer.execute_script(HOLD_SOCKETS)
        writer.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_SOCKETS})
        # Reloaded while still offline: the browser shows its own error page.
        writer.refresh()
        time.sleep(0.5)
        self.assertEqual([text for text in self.texts(reader) if text in typed], [], "nothing left before the reload")
        # Back online, and loaded again.
        set_offline(writer, False)
        writer.get(self.d.url + f"#channel={channel}")
        wait_until(lambda: len(self.outgoing(writer)) == len(typed), message="the outbox's messages after the reload")
        self.assertEqual([text for _, text, _ in self.outgoing(writer)], typed, "in the order typed")
        self.shot(writer, "reloaded-outbox")
        writer.execute_script("window.holdSockets = false")
        wait_until(lambda: all(text in self.texts(reader) for text in typed), timeout=30, message="the messages in the reader's window")
        wait_until(lambda: self.outgoing(writer) == [] and self.outbox(writer) == [], message="the outbox empty")
        time.sleep(1)
        self.assert_once_in_order(self.texts(reader), ["before", *typed])
        self.close(writer)
        self.close(reader)


class ReadingTests(PageTestCase):
    """What a message looks like (links, code, groups, days), and how the page is found and left."""

    @staticmethod
    def items(driver):
        """The list's items: [kind, text] with kind "day", "grouped", "message" or "notice"."""
        return driver.execute_script(
            "return [...document.querySelectorAll('#messages > li')].map(li => li.classList.contains('day') ? ['day', li.textContent]"
            " : li.dataset.offset ? [li.classList.contains('grouped') ? 'grouped' : 'message', li.querySelector('.text').textContent] : ['notice', li.textContent])"
        )

    def test_17_links_open_safely_code_is_monospace_and_script_is_text(self):
        channel = f"links{int(time.time() * 1000) % 100000}"
        driver = self.open(self.a, f"#channel={channel}")
        self.a.send("see https://example.com/a_(b). and `x = 1` then <script>window.__ran = 1</script>", channel, name="Ada")
        self.a.send("```\nlet a = '<b>no</b>';\n```\nafter the block", channel, name="Ada")
        wait_until(lambda: len(self.texts(driver)) == 2, message="both messages")
        links = driver.execute_script("return [...document.querySelectorAll('#messages .text a')].map(a => [a.getAttribute('href'), a.textContent, a.rel, a.target])")
        self.assertEqual(links, [["https://example.com/a_(b)", "https://example.com/a_(b)", "noopener noreferrer", "_blank"]], "the link without the sentence's full stop")
        first, second = self.texts(driver)
        self.assertEqual(first, "see https://example.com/a_(b). and x = 1 then <script>window.__ran = 1</script>")
        self.assertIn("<script>", first, "markup shows as text")
        code = driver.execute_script("return [...document.querySelectorAll('#messages .text code')].map(c => [c.parentElement.tagName, c.textContent, getComputedStyle(c).fontFamily])")
        self.assertEqual([(parent, text) for parent, text, _ in code], [("DIV", "x = 1"), ("PRE", "let a = '<b>no</b>';")])
        for _, _, family in code:
            self.assertIn("monospace", family)
        self.assertEqual(second, "let a = '<b>no</b>';after the block")
        self.assertEqual(driver.execute_script("return document.querySelectorAll('#messages script, #messages b').length"), 0, "no element from the text")
        self.assertIsNone(driver.execute_script("return window.__ran ?? null"), "the script did not run")
        # A click on the link opens a new window (target=_blank) that cannot reach the page.
        handles = set(driver.window_handles)
        driver.find_element(By.CSS_SELECTOR, "#messages .text a").click()
        wait_until(lambda: len(driver.window_handles) == len(handles) + 1, message="the link opened a window")
        [opened] = set(driver.window_handles) - handles
        driver.switch_to.window(opened)
        self.assertIsNone(driver.execute_script("return window.opener"), "noopener")
        driver.close()
        driver.switch_to.window(next(iter(handles)))
        self.shot(driver, "links-and-code")
        self.close(driver)

    def test_18_one_senders_run_shares_a_name_and_days_are_separated(self):
        channel = f"groups{int(time.time() * 1000) % 100000}"
        for name, text in [("Ada", "one"), ("Ada", "two"), ("Bob", "three"), ("Ada", "four")]:
            self.a.send(text, channel, name=name)
        driver = self.open(self.a, f"#channel={channel}")
        wait_until(lambda: len(self.texts(driver)) == 4, message="the four messages")
        self.assertEqual(self.items(driver), [["day", "Today"], ["message", "one"], ["grouped", "two"], ["message", "three"], ["message", "four"]])
        names = driver.execute_script("return [...document.querySelectorAll('#messages li[data-offset] .who')].map(w => w.offsetParent !== null)")
        self.assertEqual(names, [True, False, True, True], "the name shows once per run")
        # The same messages seen from tomorrow and from three days on.
        tomorrow = self.open(self.a, f"#channel={channel}", scripts=[shifted_clock(1)])
        wait_until(lambda: len(self.texts(tomorrow)) == 4, message="the messages, tomorrow")
        self.assertEqual(self.items(tomorrow)[0], ["day", "Yesterday"])
        later = self.open(self.a, f"#channel={channel}", scripts=[shifted_clock(3)])
        wait_until(lambda: len(self.texts(later)) == 4, message="the messages, three days on")
        [kind, label] = self.items(later)[0]
        self.assertEqual(kind, "day")
        self.assertNotIn(label, ("Today", "Yesterday"))
        self.assertIn(str(time.localtime().tm_year), label, "a date")
        for other in (tomorrow, later):
            self.close(other)
        self.close(driver)

    def test_34_a_run_of_one_sender_breaks_after_five_minutes(self):
        # The page's own message list module, fed entries whose times the test chooses
        # (a server's times cannot be chosen).
        driver = self.open(self.a)
        minute = 60_000
        items = driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const { createMessageList } = await import("/messages.js");
            const scroller = document.createElement("div"), list = document.createElement("ol");
            scroller.append(list);
            document.body.append(scroller);
            const words = { today: "Today", yesterday: "Yesterday", anonymous: "Anonymous", edited: "(edited)", deleted: "deleted", seen: "Seen",
              showMore: "more", showLess: "less", addReaction: "react", edit: "Edit", delete: "Delete", sending: "sending", sent: "sent",
              jumpToNewest: "newest", newMessages: (n) => `${n} new`, reactionLabel: (e, n) => `${e} ${n}` };
            const messages = createMessageList({ list, scroller, jumpButton: document.createElement("button"), earlierButton: document.createElement("button"),
              loadEarlier: async () => ({ messages: [] }), onEdit() {}, onDiscard() {}, onRetry() {}, words });
            const t0 = new Date(new Date().getFullYear(), new Date().getMonth(), new Date().getDate(), 9, 0).getTime();
            const at = [["ada", 0, "one"], ["ada", 1, "two"], ["ada", 5, "three"], ["ada", 11, "four"], ["bob", 12, "five"], ["ada", 13, "six"]];
            at.forEach(([from, minutes, data], index) => messages.message({ type: "message", channel: "c", epoch: "e", offset: index + 1, time: t0 + minutes * arguments[0], from, data }));
            setTimeout(() => {
              done([...list.children].map((li) => li.classList.contains("day") ? "day" : `${li.querySelector(".text").textContent}${li.classList.contains("grouped") ? " (grouped)" : ""}`));
              scroller.remove();
            }, 200);
            """,
            minute,
        )
        # two: 1 min after one; three: 4 min after two (the run counts from the message before);
        # four: 6 min after three; five: another sender; six: after another sender.
        self.assertEqual(items, ["day", "one", "two (grouped)", "three (grouped)", "four", "five", "six"])
        self.close(driver)

    def test_19_a_changed_hash_opens_the_channel_which_stays_until_its_tab_is_closed(self):
        channel = f"hash{int(time.time() * 1000) % 100000}"
        self.a.send("found by the hash", channel)
        driver = self.open(self.a)
        driver.execute_script("location.hash = arguments[0]", f"#channel={channel}")
        wait_until(lambda: self.cookie(driver, "channel") == channel, message="the hash's channel chosen")
        wait_until(lambda: "found by the hash" in self.texts(driver), message="its message")
        self.assertEqual(driver.find_element(By.CSS_SELECTOR, '#tabs [aria-selected="true"]').get_attribute("data-channel"), channel)
        # Loaded again without the hash: the tab is still there (and chosen: the cookie says so).
        driver.get(self.a.url)
        wait_until(lambda: self.status(driver) == "Connected", message="Connected after the reload")
        self.assertIn(channel, [tab.get_attribute("data-channel") for tab in driver.find_elements(By.CSS_SELECTOR, "#tabs [role=tab]")])
        # Configured tabs cannot be closed; this one can, and then it does not come back.
        self.assertEqual(driver.find_elements(By.CSS_SELECTOR, "#tab-channel_1 .close"), [])
        driver.find_element(By.CSS_SELECTOR, f"#tab-{channel} .close").click()
        wait_until(lambda: driver.find_elements(By.ID, f"tab-{channel}") == [], message="the tab closed")
        self.assertEqual(self.cookie(driver, "channel"), "channel_1", "back to the first channel")
        driver.get(self.a.url)
        wait_until(lambda: self.status(driver) == "Connected", message="Connected after the second reload")
        self.assertEqual(driver.find_elements(By.ID, f"tab-{channel}"), [], "a closed tab stays closed")
        # The keyboard closes one too: Delete on the tab.
        driver.execute_script("location.hash = arguments[0]", f"#channel={channel}")
        wait_until(lambda: driver.find_elements(By.ID, f"tab-{channel}") != [], message="opened again by the hash")
        driver.find_element(By.ID, f"tab-{channel}").send_keys(Keys.DELETE)
        wait_until(lambda: driver.find_elements(By.ID, f"tab-{channel}") == [], message="closed with Delete")
        self.close(driver)

    def test_20_a_mention_while_hidden_raises_a_notification_and_counts_in_the_title(self):
        channel = f"notify{int(time.time() * 1000) % 100000}"
        driver = self.open(self.a, f"#channel={channel}", scripts=[FAKE_NOTIFICATIONS])
        title = driver.title
        # Permission is asked on a click, never on load.
        enable = driver.find_element(By.ID, "enable-notifications")
        self.assertTrue(enable.is_displayed())
        self.assertEqual(driver.execute_script("return window.__asked"), 0, "not asked on load")
        enable.click()
        wait_until(lambda: not enable.is_displayed(), message="the control gone once granted")
        self.assertEqual(driver.execute_script("return window.__asked"), 1)
        field = driver.find_element(By.ID, "name")
        field.send_keys("Grace", Keys.TAB)
        wait_until(lambda: self.status(driver) == "Connected", message="Connected under the new name")
        driver.execute_script("window.__hidden = true; document.dispatchEvent(new Event('visibilitychange'))")
        self.a.send("nothing for you", channel, name="Ada")
        self.a.send("@Grace can you look?", channel, name="Ada")
        wait_until(lambda: driver.execute_script("return window.__notes.length") == 1, message="one notification")
        [note] = driver.execute_script("return window.__notes")
        self.assertEqual(note["body"], "@Grace can you look?")
        self.assertIn("Ada", note["title"])
        self.assertIn(channel, note["title"])
        wait_until(lambda: driver.title == f"(2) {title}", message="the title counts what came while hidden")
        time.sleep(0.5)
        self.assertEqual(driver.execute_script("return window.__notes.length"), 1, "only the mention is notified")
        mention = driver.execute_script("return [...document.querySelectorAll('#messages mark.mention.me')].map(m => m.textContent)")
        self.assertEqual(mention, ["@Grace"], "the mention is highlighted")
        driver.execute_script("window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'))")
        wait_until(lambda: driver.title == title, message="the count cleared when visible")
        # Visible: no notification.
        self.a.send("@Grace again", channel, name="Ada")
        wait_until(lambda: "@Grace again" in self.texts(driver), message="the next mention")
        time.sleep(0.3)
        self.assertEqual(driver.execute_script("return window.__notes.length"), 1, "nothing notified while visible")
        self.close(driver)

    def test_21_an_empty_channel_says_so_a_long_message_folds_and_sending_brings_the_reader_down(self):
        channel = f"long{int(time.time() * 1000) % 100000}"
        driver = self.open(self.a, f"#channel={channel}", height=600)
        empty = driver.find_element(By.ID, "empty")
        wait_until(lambda: empty.is_displayed(), message="No messages yet")
        self.assertEqual(empty.text, "No messages yet")
        long_text = ("A long message that goes on. " * 173)[:5000]
        self.a.send(long_text, channel, name="Ada")
        wait_until(lambda: long_text in self.texts(driver), message="the long message")
        self.assertFalse(empty.is_displayed())
        height = lambda: driver.execute_script("return document.querySelector('#messages li[data-offset] .text').getBoundingClientRect().height")
        folded = height()
        fold = driver.find_element(By.CSS_SELECTOR, "#messages li[data-offset] .fold")
        self.assertEqual(fold.text, "Show more")
        self.assertLess(folded, 250, "folded")
        fold.click()
        self.assertEqual(fold.get_attribute("aria-expanded"), "true")
        self.assertEqual(fold.text, "Show less")
        self.assertGreater(height(), folded * 2, "unfolded")
        fold.click()
        self.assertEqual(fold.text, "Show more")
        self.assertEqual(height(), folded, "folded again")
        driver.execute_script("document.getElementById('scroller').scrollTop = 1e9")
        # Scrolled up when someone writes: the next message of one's own brings one down.
        for number in range(20):
            self.a.send(f"filler {number}", channel)
        wait_until(lambda: "filler 19" in self.texts(driver), message="the fillers")
        driver.execute_script("document.getElementById('scroller').scrollTop = 0")
        self.a.send("while scrolled up", channel)
        jump = driver.find_element(By.ID, "new-messages")
        wait_until(lambda: jump.is_displayed(), message="the new-messages marker")
        self.type_message(driver, "my answer")
        wait_until(lambda: "my answer" in self.texts(driver), message="my message")
        at_bottom = lambda: driver.execute_script("const s = document.getElementById('scroller'); return s.scrollHeight - s.scrollTop - s.clientHeight < 48")
        wait_until(at_bottom, message="scrolled down to my message")
        self.assertFalse(jump.is_displayed())
        self.assertIn("while scrolled up", self.texts(driver))
        self.close(driver)

    def test_22_a_backed_off_reconnect_can_be_made_now(self):
        driver = browser()
        self.drivers.append(driver)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_SOCKETS})
        driver.get(self.a.url)
        button = driver.find_element(By.ID, "reconnect-now")
        waiting = lambda: (lambda match: int(match.group(1)) if match else 0)(re.match(r"Reconnecting in (\d+) s", self.status(driver)))
        wait_until(lambda: waiting() >= 3, timeout=20, message="a retry 3 s or more away")
        self.assertTrue(button.is_displayed(), "Reconnect now offered")
        self.shot(driver, "reconnect-now")
        driver.execute_script("window.holdSockets = false")
        started = time.monotonic()
        button.click()
        wait_until(lambda: self.status(driver) == "Connected", timeout=3, message="Connected at once")
        self.assertLess(time.monotonic() - started, 2.5, "sooner than the retry")
        self.assertFalse(button.is_displayed())
        self.close(driver)

    def test_23_the_page_speaks_chinese_when_the_browser_does(self):
        for tags, lang, connected, send in [(("zh-TW", "en"), "zh-Hant", "已連線", "送出"), (("zh-CN",), "zh-Hans", "已连接", "发送"), (("zh-HK",), "zh-Hant", "已連線", "送出")]:
            driver = self.open(self.a, scripts=[languages(*tags)], connected=connected)
            self.assertEqual(driver.execute_script("return document.documentElement.lang"), lang)
            self.assertEqual(driver.find_element(By.ID, "send").text, send)
            if tags[0] == "zh-TW":
                self.shot(driver, "page-zh-hant")
            self.close(driver)

    def test_24_contrast_roles_and_the_people_list_affordance(self):
        channel = f"contrast{int(time.time() * 1000) % 100000}"
        self.a.send("a bubble", channel, name="Ada")
        driver = self.open(self.a, f"#channel={channel}")
        wait_until(lambda: "a bubble" in self.texts(driver), message="a bubble")
        measure = """
        const rgb = (c) => c.match(/[\d.]+/g).slice(0, 3).map(Number);
        const lum = (c) => { const [r, g, b] = rgb(c).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
        const page = getComputedStyle(document.body).backgroundColor;
        const badge = getComputedStyle(document.querySelector('#tabs .badge'));
        return {
          badge: ratio(badge.color, badge.backgroundColor),
          field: ratio(getComputedStyle(document.getElementById('text')).borderTopColor, page),
          bubble: ratio(getComputedStyle(document.querySelector('#messages li[data-offset]')).borderTopColor, page),
        };
        """
        for scheme in ("light", "dark"):
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
            ratios = driver.execute_script(measure)
            self.assertGreaterEqual(ratios["badge"], 4.5, f"{scheme}: unread badge text {ratios}")
            self.assertGreaterEqual(ratios["field"], 3, f"{scheme}: field border {ratios}")
            self.assertGreaterEqual(ratios["bubble"], 3, f"{scheme}: bubble border {ratios}")
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        self.assertEqual(driver.find_element(By.ID, "messages").get_attribute("role"), "log")
        self.assertIsNone(driver.find_element(By.ID, "presence").get_attribute("aria-live"), "the online count is not announced at every change")
        # The people list looks like a control, and closes on Escape and on a click outside.
        presence = driver.find_element(By.ID, "presence")
        wait_until(lambda: presence.text.endswith("online"), message="the online count")
        self.assertNotEqual(driver.execute_script("return getComputedStyle(arguments[0]).borderTopStyle", presence), "none", "a visible affordance")
        is_open = lambda: driver.execute_script("return document.getElementById('people').open")
        presence.click()
        self.assertTrue(is_open())
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        wait_until(lambda: not is_open(), message="closed by Escape")
        presence.click()
        self.assertTrue(is_open())
        driver.find_element(By.ID, "scroller").click()
        wait_until(lambda: not is_open(), message="closed by a click outside")
        self.close(driver)


class ConversationTests(PageTestCase):
    """What chat.v2 says beyond messages: who sent it, typing, edits, deletes, reactions, what was read."""

    @staticmethod
    def act_on(driver, item, action):
        """Clicks a message's action (shown on hover) as the mouse would."""
        ActionChains(driver).move_to_element(item).perform()
        item.find_element(By.CSS_SELECTOR, f".actions .{action}").click()

    @staticmethod
    def chips(driver, text):
        return driver.execute_script(
            "const li = [...document.querySelectorAll('#messages li[data-offset]')].find(li => li.querySelector('.text').textContent.startsWith(arguments[0]));"
            "return li ? [...li.querySelectorAll('.reactions .chip')].map(c => [c.textContent, c.getAttribute('aria-pressed')]) : null",
            text,
        )

    def two_windows(self, prefix):
        """A fresh channel, and a window on it on each of instances a and b (two people)."""
        channel = f"{prefix}{int(time.time() * 1000) % 100000}"
        return channel, self.open(self.a, f"#channel={channel}"), self.open(self.b, f"#channel={channel}")

    def same_person(self, instance, driver, path=""):
        """A second browser with `driver`'s uid cookie: the same person, in another window."""
        other = browser()
        self.drivers.append(other)
        other.get(instance.url + "favicon.svg")
        other.add_cookie({"name": "uid", "value": driver.get_cookie("uid")["value"], "path": "/"})
        other.get(instance.url + path)
        wait_until(lambda: self.status(other) == "Connected", message="the second window connected")
        return other

    def test_25_typing_shows_in_the_other_window_and_ends(self):
        _, ada, bob = self.two_windows("typing")
        field = bob.find_element(By.ID, "name")
        field.send_keys("Bob", Keys.TAB)
        wait_until(lambda: self.status(bob) == "Connected", message="Bob connected under his name")
        line = lambda driver: driver.find_element(By.ID, "typing").text
        bob.find_element(By.ID, "text").send_keys("I am wri")
        wait_until(lambda: line(ada) == "Bob is typing…", timeout=5, message="Bob typing, in Ada's window")
        self.assertEqual(line(bob), "", "one's own typing is not shown")
        self.shot(ada, "typing")
        started = time.monotonic()
        wait_until(lambda: line(ada) == "", timeout=8, message="the line gone after Bob stopped")
        self.assertGreater(time.monotonic() - started, 3, "it lasts about 5 s")
        # Typing again, then sending: the line goes with the message.
        bob.find_element(By.ID, "text").send_keys("ting")
        wait_until(lambda: line(ada) == "Bob is typing…", timeout=5, message="Bob typing again")
        bob.find_element(By.ID, "text").send_keys(Keys.ENTER)
        wait_until(lambda: "I am writing" in self.texts(ada), message="Bob's message")
        self.assertEqual(line(ada), "", "the message ends the typing")
        # @Bob is someone in the room: marked in both windows, as Bob's own in his.
        self.type_message(ada, "@Bob thanks, and @nobody")
        marks = lambda driver: driver.execute_script("return [...document.querySelectorAll('#messages mark.mention')].map(m => [m.textContent, m.classList.contains('me')])")
        wait_until(lambda: marks(bob) == [["@Bob", True]], message="the mention, Bob's own, in his window")
        wait_until(lambda: marks(ada) == [["@Bob", False]], message="the mention in Ada's window")
        self.close(bob)
        self.close(ada)

    def test_26_an_edit_and_a_delete_show_in_another_window_and_after_a_reload(self):
        _, writer, reader = self.two_windows("edit")
        for text in ("first draft", "to be removed", "the last one"):
            self.type_message(writer, text)
            wait_until(lambda: text in self.texts(reader), message=f"{text!r} in the reader's window")
        wait_until(lambda: len(writer.find_elements(By.CSS_SELECTOR, "#messages li.own[data-offset]")) == 3, message="three own messages")
        self.assertEqual(reader.find_elements(By.CSS_SELECTOR, "#messages li.own"), [], "not the reader's")
        self.assertEqual(reader.find_elements(By.CSS_SELECTOR, "#messages .actions .edit"), [], "no Edit on others' messages")
        # Edit with the mouse.
        self.act_on(writer, self.bubble(writer, "first draft"), "edit")
        box = writer.find_element(By.CSS_SELECTOR, "#messages .edit-field")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("first draft, better", Keys.ENTER)
        # Delete with the mouse.
        self.act_on(writer, self.bubble(writer, "to be removed"), "delete")
        # Edit with the keyboard: Up arrow in the empty field edits the last own message.
        writer.find_element(By.ID, "text").send_keys(Keys.ARROW_UP)
        box = wait_until(lambda: writer.find_elements(By.CSS_SELECTOR, "#messages .edit-field"), message="the last message in edit")[0]
        self.assertEqual(box.get_attribute("value"), "the last one")
        box.send_keys(" (really)", Keys.ENTER)

        def shows_the_changes(driver):
            texts = self.texts(driver)
            edited = driver.execute_script("return [...document.querySelectorAll('#messages li[data-offset] .edited')].filter(e => e.offsetParent !== null).length")
            return texts == ["first draft, better", "Message deleted", "the last one (really)"] and edited == 2  # both "(edited)" visible

        for driver in (writer, reader):
            wait_until(lambda: shows_the_changes(driver), message="the edits and the delete")
        self.shot(reader, "edited-and-deleted")
        reader.refresh()
        wait_until(lambda: self.status(reader) == "Connected", message="the reader reloaded")
        wait_until(lambda: shows_the_changes(reader), message="the changes after a reload")
        # The writer's messages are still theirs after a reload (the server says who sent them).
        writer.refresh()
        wait_until(lambda: shows_the_changes(writer), message="the changes in the writer's reloaded window")
        self.assertEqual(len(writer.find_elements(By.CSS_SELECTOR, "#messages li.own[data-offset]")), 3, "still own after a reload")
        self.close(writer)
        self.close(reader)

    def test_27_a_reaction_counts_and_toggles(self):
        _, writer, reader = self.two_windows("react")
        self.type_message(writer, "react to me")
        wait_until(lambda: "react to me" in self.texts(reader), message="the message")
        item = self.bubble(reader, "react to me")
        self.act_on(reader, item, "react")
        item.find_element(By.CSS_SELECTOR, '.picker [data-emoji="👍"]').click()
        wait_until(lambda: self.chips(reader, "react to me") == [["👍 1", "true"]], message="the reader's 👍, highlighted")
        wait_until(lambda: self.chips(writer, "react to me") == [["👍 1", "false"]], message="the 👍 in the writer's window")
        # The writer adds theirs with the chip.
        writer.execute_script("arguments[0].querySelector('.reactions .chip').click()", self.bubble(writer, "react to me"))
        wait_until(lambda: self.chips(writer, "react to me") == [["👍 2", "true"]] and self.chips(reader, "react to me") == [["👍 2", "true"]], message="2 for both")
        self.shot(writer, "reactions")
        # The reader takes theirs back.
        reader.execute_script("arguments[0].querySelector('.reactions .chip').click()", self.bubble(reader, "react to me"))
        wait_until(lambda: self.chips(reader, "react to me") == [["👍 1", "false"]], message="back to 1 for the reader")
        reader.refresh()
        wait_until(lambda: self.chips(reader, "react to me") == [["👍 1", "false"]], message="1 after a reload")
        # By keyboard: Tab from the list reaches the message's controls, which show when focused.
        reader.find_element(By.ID, "messages").send_keys(Keys.TAB)
        focused = lambda: reader.execute_script("const e = document.activeElement; return [e.className, e.closest('li')?.querySelector('.text')?.textContent ?? null]")
        self.assertEqual(focused(), ["chip", "react to me"], "the reaction chip first")
        reader.switch_to.active_element.send_keys(Keys.TAB)
        self.assertEqual(focused(), ["react", "react to me"])
        self.assertEqual(reader.execute_script("return getComputedStyle(document.activeElement.closest('.actions')).opacity"), "1", "visible when focused")
        reader.switch_to.active_element.send_keys(Keys.ENTER)
        wait_until(lambda: focused()[0] == "pick", message="the picker open, its first emoji focused")
        reader.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait_until(lambda: focused()[0] == "react", message="Escape closes the picker")
        self.assertTrue(reader.execute_script("return document.querySelector('#messages .picker').hidden"))
        # Enter on the chip toggles the reaction; the message is drawn again and focus stays on the chip.
        reader.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)
        self.assertEqual(focused(), ["chip", "react to me"])
        reader.switch_to.active_element.send_keys(Keys.ENTER)
        wait_until(lambda: self.chips(reader, "react to me") == [["👍 2", "true"]], message="the reader's 👍 again, by keyboard")
        self.assertEqual(focused(), ["chip", "react to me"], "focus kept")
        self.close(writer)
        self.close(reader)

    def test_28_the_unread_badge_follows_the_person_across_windows(self):
        first = self.open(self.a)
        second = self.same_person(self.b, first)
        self.assertEqual(self.cookie(second, "uid"), self.cookie(first, "uid"))
        channel = "channel_2"
        self.assertEqual(self.a.send("for both windows", channel), "ok")
        for driver in (first, second):
            wait_until(lambda: self.badge(driver, channel) == "1", message="a badge of 1 in each window")
        # Read in one window: the badge goes in the other.
        self.select_tab(first, channel)
        wait_until(lambda: "for both windows" in self.texts(first), message="read in the first window")
        wait_until(lambda: self.badge(second, channel) == "", timeout=5, message="the badge gone in the second window")
        # And stays gone after a reload: the server keeps what was read.
        second.refresh()
        wait_until(lambda: self.status(second) == "Connected", message="the second window reloaded")
        time.sleep(1)
        self.assertEqual(self.badge(second, channel), "")
        # A message typed in one window is own in the other too.
        self.type_message(first, "mine in both")
        self.select_tab(second, channel)
        wait_until(lambda: "mine in both" in self.texts(second), message="the message in the second window")
        wait_until(lambda: second.execute_script("return [...document.querySelectorAll('#messages li.own .text')].map(t => t.textContent)") == ["mine in both"], message="own in the second window")
        self.close(second)
        self.close(first)

    def test_29_a_one_to_one_message_notifies_while_hidden_and_the_room_says_seen(self):
        ada = self.open(self.a)
        bob = self.open(self.b, scripts=[FAKE_NOTIFICATIONS])
        bob.find_element(By.ID, "enable-notifications").click()
        bob.execute_script("window.__hidden = true; document.dispatchEvent(new Event('visibilitychange'))")
        bob_id = self.cookie(bob, "uid").split(".")[0]
        ada_id = self.cookie(ada, "uid").split(".")[0]
        room = "dm:" + ":".join(sorted([ada_id, bob_id]))
        ada.execute_script("location.hash = arguments[0]", f"#channel={room}")
        wait_until(lambda: self.cookie(ada, "channel") == room, message="Ada in the room")
        wait_until(lambda: self.status(ada) == "Connected", message="Ada connected to the room")
        self.type_message(ada, "did you see this?")
        wait_until(lambda: ada.find_elements(By.CSS_SELECTOR, "#messages li.own[data-offset]"), message="Ada's message")
        time.sleep(0.5)
        self.assertEqual(ada.find_elements(By.CSS_SELECTOR, "#messages .seen"), [], "not seen yet")
        tab = wait_until(lambda: bob.find_elements(By.ID, f"tab-{room}"), message="the room's tab in Bob's window")[0]
        # Bob's page is hidden: a one-to-one message is notified, under Ada's label.
        notes = wait_until(lambda: bob.execute_script("return window.__notes"), message="Bob notified")
        ada_label = "Anonymous " + re.sub("[^A-Za-z0-9]", "", ada_id)[:3].upper()
        self.assertEqual([note["title"] for note in notes], [f"{ada_label} · @{ada_label}"])
        self.assertTrue(bob.title.startswith("(1) "), bob.title)
        bob.execute_script("window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'))")
        tab.click()
        wait_until(lambda: "did you see this?" in self.texts(bob), message="Bob reads it")
        seen = wait_until(lambda: ada.execute_script("return [...document.querySelectorAll('#messages .seen')].map(s => s.closest('li').querySelector('.text').textContent)"), message="Seen in Ada's window")
        self.assertEqual(seen, ["did you see this?"])
        self.shot(ada, "seen")
        # The room says what the other person has seen when it is opened again, too.
        ada.refresh()
        seen = wait_until(lambda: ada.execute_script("return [...document.querySelectorAll('#messages .seen')].map(s => s.closest('li').querySelector('.text').textContent)"), message="Seen after a reload")
        self.assertEqual(seen, ["did you see this?"])
        self.close(bob)
        self.close(ada)

    def test_31_an_edit_after_the_edit_window_is_refused_with_the_servers_words(self):
        strict = Instance("--send-rate", "0", "--edit-window", "1")
        try:
            channel = f"late{int(time.time() * 1000) % 100000}"
            driver = self.open(strict, f"#channel={channel}")
            self.type_message(driver, "too late to change")
            wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#messages li.own[data-offset]"), message="the own message")
            time.sleep(2)
            driver.find_element(By.ID, "text").send_keys(Keys.ARROW_UP)
            box = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#messages .edit-field"), message="in edit")[0]
            box.send_keys(" (changed)", Keys.ENTER)
            error = driver.find_element(By.ID, "send-error")
            wait_until(lambda: "can no longer be edited" in error.text, message="the server's refusal")
            self.assertEqual(self.texts(driver), ["too late to change"], "unchanged")
            self.assertEqual(driver.find_elements(By.CSS_SELECTOR, "#messages .edited"), [])
            self.close(driver)
        finally:
            strict.stop()

    def test_30_configured_labels_name_the_tabs_and_notifications_and_ids_stay_ids(self):
        labelled = Instance("--send-rate", "0", "--channels", "channel_1=客服1號,channel_2=客服2號")
        try:
            driver = self.open(labelled, scripts=[FAKE_NOTIFICATIONS])
            tabs = driver.execute_script("return [...document.querySelectorAll('#tabs [role=tab]')].map(t => [t.dataset.channel, t.querySelector('.tab-name').textContent, t.getAttribute('aria-label')])")
            self.assertEqual(tabs, [["channel_1", "客服1號", "客服1號"], ["channel_2", "客服2號", "客服2號"]])
            self.assertEqual(labelled.send("to the second desk", "channel_2"), "ok")
            wait_until(lambda: self.badge(driver, "channel_2") == "1", message="a badge on 客服2號")
            self.assertEqual(driver.find_element(By.ID, "tab-channel_2").get_attribute("aria-label"), "客服2號, 1 unread")
            self.select_tab(driver, "channel_2")
            self.assertEqual(self.cookie(driver, "channel"), "channel_2", "the cookie keeps the id")
            driver.find_element(By.ID, "enable-notifications").click()
            driver.find_element(By.ID, "name").send_keys("Lin", Keys.TAB)
            wait_until(lambda: self.status(driver) == "Connected", message="Connected as Lin")
            driver.execute_script("window.__hidden = true; document.dispatchEvent(new Event('visibilitychange'))")
            self.assertEqual(labelled.send("@Lin a customer", "channel_2", name="Desk"), "ok")
            wait_until(lambda: driver.execute_script("return window.__notes.length") == 1, message="the notification")
            self.assertEqual(driver.execute_script("return window.__notes[0].title"), "Desk · 客服2號")
            self.shot(driver, "labels")
            self.close(driver)
        finally:
            labelled.stop()


JWT_SECRET = "browser-tests-jwt-secret-of-32-bytes-at-least"
ADMIN_TOKEN = "browser-tests-admin-token"


def sign_in_token(sub, name, role=None, expires_in=3600, secret=JWT_SECRET):
    """An HS256 JWT for `sub`, minted here as a site's backend would (RFC 7519, no library)."""
    encode = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    claims = {"sub": sub, "name": name, "exp": int(time.time()) + expires_in}
    if role:
        claims["role"] = role
    signed = encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + encode(json.dumps(claims).encode())
    return signed + "." + encode(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())


class ModerationTests(PageTestCase):
    """Signed-in people (JWTs) and moderators on the page: names nobody can take, Delete on
    every message, mute and ban from the people list, and what the muted or banned see.
    Two instances of this class's own (--jwt-secret, --admin-token) on the suite's Redis."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m1 = Instance("--send-rate", "0", "--jwt-secret", JWT_SECRET, "--admin-token", ADMIN_TOKEN)
        cls.m2 = Instance("--send-rate", "0", "--jwt-secret", JWT_SECRET, "--admin-token", ADMIN_TOKEN)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.m1.stop()
        cls.m2.stop()

    def sign_in(self, instance, sub, name, channel, role=None):
        """A window opened by the site for its signed-in person (/?token=…) on `channel`."""
        return self.open(instance, f"?token={sign_in_token(sub, name, role)}#channel={channel}")

    @staticmethod
    def fresh(prefix):
        return f"{prefix}{int(time.time() * 1000) % 100000}"

    @staticmethod
    def identity(driver):
        return driver.execute_script("return document.body.dataset.me")

    def bob_and_a_moderator(self, prefix, number):
        """A fresh room with Bob in it on m2 and Mia, a moderator, on m1: (channel, bob, mia, Bob's identity)."""
        channel = self.fresh(prefix)
        bob = self.sign_in(self.m2, f"bob-{number}", "Bob", channel)
        mia = self.sign_in(self.m1, f"mia-{number}", "Mia", channel, role="moderator")
        return channel, bob, mia, self.identity(bob)

    def api(self, route, **fields):
        """The moderation API with the admin token (POST)."""
        request = urllib.request.Request(self.m1.url + "api/" + route, data=urllib.parse.urlencode(fields).encode(), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            self.assertEqual(response.status, 200)

    @staticmethod
    def notices(driver):
        return driver.execute_script("return [...document.querySelectorAll('#messages li.notice')].map(li => li.textContent)")

    def test_35_a_signed_in_name_is_fixed_and_others_see_it_on_their_messages(self):
        channel = self.fresh("signed")
        ada = self.sign_in(self.m1, "ada-35", "Ada Lovelace", channel)
        reader = self.open(self.m2, f"#channel={channel}")
        field = ada.find_element(By.ID, "name")
        self.assertEqual(field.get_attribute("value"), "Ada Lovelace", "the sign-in's name, not a kept one")
        self.assertTrue(ada.execute_script("return document.getElementById('name').readOnly"))
        field.send_keys("Mallory")
        self.assertEqual(field.get_attribute("value"), "Ada Lovelace", "it cannot be typed over")
        self.type_message(ada, "hello from Ada")
        wait_until(lambda: self.bubble(reader, "hello from Ada") is not None, message="Ada's message in the other window")
        who = lambda driver: driver.execute_script("const li = [...document.querySelectorAll('#messages li[data-offset]')].find(li => li.querySelector('.text').textContent === 'hello from Ada'); return li && li.querySelector('.who').textContent")
        self.assertEqual(who(reader), "Ada Lovelace")
        wait_until(lambda: ada.find_elements(By.CSS_SELECTOR, "#messages li.own[data-offset]"), message="Ada's own message")
        # No moderator: no Delete on others' messages, no menus in the list.
        self.type_message(reader, "hello Ada")
        wait_until(lambda: self.bubble(ada, "hello Ada") is not None, message="the reader's answer")
        self.assertEqual(self.bubble(ada, "hello Ada").find_elements(By.CSS_SELECTOR, ".actions .delete"), [])
        self.assertEqual(ada.find_elements(By.CSS_SELECTOR, "#people-list .mod-toggle"), [])
        self.close(reader)
        self.close(ada)

    def test_36_a_moderator_deletes_someone_elses_message_and_it_goes_in_the_authors_window(self):
        _, bob, mia, _ = self.bob_and_a_moderator("moddelete", 36)
        self.type_message(bob, "buy cheap watches")
        item = wait_until(lambda: self.bubble(mia, "buy cheap watches"), message="Bob's message in Mia's window")
        ActionChains(mia).move_to_element(item).perform()
        item.find_element(By.CSS_SELECTOR, ".actions .delete").click()
        # It asks first; Escape takes it back.
        confirm = item.find_element(By.CSS_SELECTOR, ".actions .confirm")
        self.assertIn("Delete this message for everyone?", confirm.text)
        self.assertEqual(mia.switch_to.active_element.get_attribute("class"), "cancel-delete", "the safe choice has the focus")
        mia.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait_until(lambda: not item.find_elements(By.CSS_SELECTOR, ".actions .confirm"), message="the question gone")
        self.assertEqual(mia.switch_to.active_element.get_attribute("class"), "delete", "focus back on Delete")
        self.assertIn("buy cheap watches", self.texts(bob))
        ActionChains(mia).move_to_element(item).perform()
        item.find_element(By.CSS_SELECTOR, ".actions .delete").click()
        item.find_element(By.CSS_SELECTOR, ".actions .confirm-delete").click()
        for driver in (bob, mia):
            wait_until(lambda: "Message deleted" in self.texts(driver) and "buy cheap watches" not in self.texts(driver), message="the message deleted")
        # Bob, no moderator, has no Delete on Mia's message.
        self.type_message(mia, "please keep it on topic")
        wait_until(lambda: self.bubble(bob, "please keep it on topic"), message="Mia's message in Bob's window")
        self.assertEqual(self.bubble(bob, "please keep it on topic").find_elements(By.CSS_SELECTOR, ".actions .delete"), [])
        self.close(bob)
        self.close(mia)

    def test_37_a_mute_from_the_people_list_blocks_the_composer_until_lifted_or_over(self):
        channel, bob, mia, bob_id = self.bob_and_a_moderator("modmute", 37)
        self.type_message(bob, "so, about that")
        wait_until(lambda: self.bubble(mia, "so, about that"), message="Bob's message")
        # The menu with the keyboard: Down and Up move, Enter chooses.
        menu = self.open_menu(mia, bob_id)
        active = lambda: mia.switch_to.active_element.get_attribute("data-action")
        self.assertEqual(active(), "mute-5m", "the first item has the focus")
        self.assertEqual(menu.get_attribute("role"), "menu")
        self.assertEqual([item.get_attribute("data-action") for item in menu.find_elements(By.CSS_SELECTOR, '[role="menuitem"]')], ["mute-5m", "mute-1h", "unmute", "ban-1d", "ban", "unban"])
        mia.switch_to.active_element.send_keys(Keys.ARROW_UP)
        self.assertEqual(active(), "unban", "Up from the first wraps to the last")
        mia.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
        self.assertEqual(active(), "mute-5m")
        self.shot(mia, "moderation-menu")
        mia.switch_to.active_element.send_keys(Keys.ENTER)
        wait_until(lambda: self.result(mia).startswith("Bob is muted until"), message="Mia told the mute took")
        self.assertEqual(mia.switch_to.active_element.get_attribute("class"), "mod-toggle", "focus back on the menu button")
        self.assertIn("muted until", mia.find_element(By.CSS_SELECTOR, f'#people-list li[data-person="{bob_id}"]').text)
        # Bob: why, and until when (local time), and the composer blocked.
        until = re.compile(r"^You are muted in this room until \d{1,2}:\d{2}")
        wait_until(lambda: until.match(self.status(bob)), message="the mute in Bob's status line")
        disabled, placeholder = self.composer_state(bob)
        self.assertTrue(disabled)
        self.assertRegex(placeholder, until)
        self.assertFalse(bob.find_element(By.ID, "send").is_enabled())
        self.assertTrue(any(until.match(text) for text in self.notices(bob)), self.notices(bob))
        expected = bob.execute_script("return new Date(Date.now() + 300000).toLocaleTimeString('en', {hour: '2-digit', minute: '2-digit'})")
        self.assertIn(expected, self.status(bob), "five minutes from now")
        self.shot(bob, "muted")
        # Lifted from the menu: Bob writes again.
        self.choose(mia, bob_id, "unmute")
        wait_until(lambda: self.composer_state(bob)[0] is False, message="Bob's composer enabled again")
        wait_until(lambda: self.status(bob) == "Connected", message="Bob's status line back")
        self.type_message(bob, "thanks for unmuting")
        wait_until(lambda: self.bubble(mia, "thanks for unmuting"), message="Bob's message after the mute")
        # A mute of two seconds (through the HTTP API) ends by itself in Bob's window.
        self.api("mute", channel=channel, user=bob_id, seconds=2)
        wait_until(lambda: self.composer_state(bob)[0] is True, message="muted for two seconds")
        self.assertRegex(self.status(bob), r"until \d{1,2}:\d{2}:\d{2}", "seconds, for a mute that ends within a minute")
        wait_until(lambda: self.composer_state(bob)[0] is False, timeout=6, message="the short mute over by itself")
        # The menu fits a 360 px phone: it opens in the list, under the person.
        narrow = browser()
        self.drivers.append(narrow)
        narrow.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": True})
        narrow.get(self.m1.url + f"?token={sign_in_token('mia-37', 'Mia', 'moderator')}#channel={channel}")
        wait_until(lambda: self.status(narrow) == "Connected", message="Mia at 360 px")
        menu = self.open_menu(narrow, bob_id)
        left, right = narrow.execute_script("const r = [...arguments[0].querySelectorAll('[role=menuitem]')].map(i => i.getBoundingClientRect()); return [Math.min(...r.map(b => b.left)), Math.max(...r.map(b => b.right))]", menu)
        self.assertGreaterEqual(left, 0, "every item on screen")
        self.assertLessEqual(right, 360, "every item on screen")
        self.assertLessEqual(narrow.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth"), 0, "nothing wider than 360 px")
        self.shot(narrow, "moderation-menu-360")
        self.close(narrow)
        self.close(bob)
        self.close(mia)

    def test_38_a_ban_says_until_when_and_an_unban_lets_them_back_after_a_reload(self):
        _, bob, mia, bob_id = self.bob_and_a_moderator("modban", 38)
        wait_until(lambda: mia.find_elements(By.CSS_SELECTOR, f'#people-list li[data-person="{bob_id}"]'), message="Bob in Mia's list")
        self.choose(mia, bob_id, "ban-1d")
        wait_until(lambda: self.result(mia).startswith("Bob is banned until"), message="Mia told the ban took")
        banned_until = re.compile(r"^You are banned from this room until (?!a moderator).*\d")
        wait_until(lambda: banned_until.match(self.status(bob)), message="Bob told until when")
        self.assertTrue(any(banned_until.match(text) for text in self.notices(bob)), self.notices(bob))
        self.assertTrue(self.composer_state(bob)[0], "nothing to write there")
        self.shot(bob, "banned")
        # Out of the room, Bob stays in Mia's list, marked, with Unban.
        row = lambda: mia.find_element(By.CSS_SELECTOR, f'#people-list li[data-person="{bob_id}"]')
        wait_until(lambda: "banned until" in row().text, message="Bob marked banned")
        offered = lambda: mia.execute_script("return [...document.querySelectorAll(`#people-list li[data-person='${arguments[0]}'] [role=menuitem]`)].map(i => i.dataset.action)", bob_id)
        wait_until(lambda: offered() == ["unban"], message="only Unban, once Bob has left the room")
        menu = self.open_menu(mia, bob_id)
        self.assertEqual([item.get_attribute("data-action") for item in menu.find_elements(By.CSS_SELECTOR, '[role="menuitem"]')], ["unban"])
        menu.find_element(By.CSS_SELECTOR, '[data-action="unban"]').click()
        wait_until(lambda: self.result(mia) == "Bob may come back", message="the unban")
        # An instance with no socket in the room (Bob's is refused) looks bans up in a copy at most 1 s old.
        time.sleep(1.2)
        bob.refresh()
        wait_until(lambda: self.status(bob) == "Connected", message="Bob back after a reload")
        self.assertFalse(self.composer_state(bob)[0])
        self.type_message(bob, "I am back")
        wait_until(lambda: self.bubble(mia, "I am back"), message="Bob's message after the unban")
        # A ban without an end: until a moderator lifts it, also after a reload.
        self.choose(mia, bob_id, "ban")
        wait_until(lambda: self.result(mia) == "Bob is banned until you lift it", message="Mia told the ban took")
        lifted = "You are banned from this room until a moderator lifts it"
        wait_until(lambda: self.status(bob) == lifted, message="a ban until lifted")
        bob.refresh()
        wait_until(lambda: self.status(bob) == lifted, message="still banned after a reload")
        self.assertTrue(self.composer_state(bob)[0])
        self.assertFalse(any("Could not load" in text for text in self.notices(bob)), self.notices(bob))
        self.choose(mia, bob_id, "unban")
        wait_until(lambda: self.result(mia) == "Bob may come back", message="the second unban")
        time.sleep(1.2)
        bob.refresh()
        wait_until(lambda: self.status(bob) == "Connected", message="Bob back again")
        self.close(bob)
        self.close(mia)

    def test_39_slow_mode_holds_a_message_back_with_a_countdown_and_sends_it_by_itself(self):
        channel = self.fresh("modslow")
        self.api("slowmode", channel=channel, seconds=4)
        bob = self.sign_in(self.m2, "bob-40", "Bob", channel)
        self.type_message(bob, "first")
        wait_until(lambda: "first" in self.texts(bob), message="the first message")
        self.type_message(bob, "second, too soon")
        said = lambda: [note for state, text, note in self.outgoing(bob) if text == "second, too soon" and state == "retrying"]
        first_note = wait_until(said, message="held back by slow mode")[0]
        self.assertRegex(first_note, r"^Slow mode: sending in [1-4] s$")
        wait_until(lambda: said() and said()[0] != first_note, timeout=3, message="the countdown")
        wait_until(lambda: "second, too soon" in self.texts(bob), timeout=8, message="sent by itself once allowed")
        self.assertEqual(self.outgoing(bob), [])
        self.close(bob)

    def test_40_an_expired_sign_in_says_signed_out_and_stops_retrying(self):
        token = sign_in_token("late-39", "Late", expires_in=-120)  # past the 30 s leeway
        driver = browser()
        self.drivers.append(driver)
        driver.get(self.m1.url + f"?token={token}")
        signed_out = wait_until(lambda: self.status(driver).startswith("Signed out — Token expired") and self.status(driver), message="signed out")
        time.sleep(3)
        self.assertEqual(self.status(driver), signed_out, "no retry: it cannot help")
        self.assertEqual(self.identity(driver), None, "the page of an expired sign-in knows no person")
        self.assertTrue(driver.find_element(By.ID, "reconnect-now").get_attribute("hidden") is not None)
        self.close(driver)


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



class ArchiveTests(PageTestCase):
    """A server with an archive (SQLite): "Load earlier" goes back past Redis' window and
    across an epoch Redis lost, marked off; the search box finds a message and shows it
    with its neighbours. A Redis of this class's own, restarted without persistence."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis = Redis()
        cls.dir = tempfile.mkdtemp(prefix="chatroom-browser-archive.")
        # Five messages in Redis: everything older is read from the archive.
        cls.archived = Instance(
            "--send-rate", "0", "--history-size", "5", "--identity-secret", "browser-tests-secret",
            "--archive-url", f"sqlite://{cls.dir}/archive.db", redis_url=cls.redis.url, log_level="error",
        )

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.archived.stop()
        cls.redis.remove()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def history(self, query):
        with urllib.request.urlopen(f"{self.archived.url}history?{query}", timeout=5) as response:
            return json.loads(response.read())

    def all_archived(self, channel, count):
        """Waits until the archive has the channel's first `count` messages (Redis keeps five)."""
        wait_until(lambda: len(self.history(f"channel={channel}&since=0&limit=100")["messages"]) >= count and self.history(f"channel={channel}&since=0&limit=1")["firstOffset"] == 1, timeout=20, message="the messages archived")

    def sends(self, text, channel):
        """Whether a send is taken (not while the instance finds Redis again)."""
        try:
            return self.archived.send(text, channel) == "ok"
        except OSError:
            return False

    def first_shown(self, driver):
        return driver.execute_script("const li = document.querySelector('#messages li[data-offset]'); return li ? li.querySelector('.text').textContent : null")

    def test_41_load_earlier_reaches_the_first_message_and_crosses_into_the_epoch_redis_lost(self):
        channel = f"kept{int(time.time() * 1000) % 100000}"
        for number in range(1, 61):
            self.archived.send(f"old {number}", channel)
        self.all_archived(channel, 60)
        # Redis loses everything: the channel starts a new epoch; the old one is archived.
        self.redis.stop()
        self.redis.start()
        wait_until(self.archived.answers, timeout=20, message="the instance ready again")
        wait_until(lambda: self.sends("new 1", channel), timeout=20, message="a send after the restart")
        for number in (2, 3):
            self.archived.send(f"new {number}", channel)
        driver = self.open(self.archived, f"#channel={channel}")
        wait_until(lambda: self.texts(driver)[-3:] == ["new 1", "new 2", "new 3"], message="the new epoch's messages")
        self.assertNotIn("old 60", self.texts(driver), "the old epoch is history, not news")
        earlier = driver.find_element(By.ID, "load-earlier")
        wait_until(earlier.is_displayed, message="Load earlier, for the epoch before")
        earlier.click()
        wait_until(lambda: self.first_shown(driver) == "old 1", message="the old epoch's messages (60 of them, past Redis' five)")
        texts = self.texts(driver)
        self.assertEqual(texts, [f"old {n}" for n in range(1, 61)] + ["new 1", "new 2", "new 3"], "every message once, in order")
        separators = driver.execute_script("return [...document.querySelectorAll('#messages li.epoch-break')].map(li => [li.textContent, li.previousElementSibling.querySelector('.text')?.textContent, li.nextElementSibling.querySelector('.text')?.textContent ?? li.nextElementSibling.nextElementSibling.querySelector('.text').textContent])")
        self.assertEqual(len(separators), 1, separators)
        self.assertEqual(separators[0][1:], ["old 60", "new 1"], "the separator between the epochs")
        self.assertIn("started again", separators[0][0])
        wait_until(lambda: not earlier.is_displayed(), message="nothing earlier than the first message")
        self.shot(driver, "archive-epochs")
        self.close(driver)

    def test_42_a_search_result_opens_the_conversation_around_it(self):
        channel = f"found{int(time.time() * 1000) % 100000}"
        for number in range(1, 41):
            self.archived.send(f"order {number} for the warehouse" if number == 12 else f"chatter {number}", channel)
        self.all_archived(channel, 40)
        driver = self.open(self.archived, f"#channel={channel}")
        wait_until(lambda: self.texts(driver)[-1:] == ["chatter 40"], message="the newest")
        box = driver.find_element(By.ID, "search-words")
        box.send_keys("warehouse ORDER")
        box.send_keys(Keys.ENTER)
        results = lambda: driver.execute_script("return [...document.querySelectorAll('#search-list .search-result .text')].map(e => e.textContent)")
        wait_until(lambda: results() == ["order 12 for the warehouse"], message="one result")
        self.assertEqual(driver.execute_script("return [...document.querySelectorAll('#search-list mark')].map(m => m.textContent)"), ["order", "warehouse"], "the words marked")
        self.assertIn("1 message", driver.find_element(By.ID, "search-summary").text)
        self.shot(driver, "archive-search")
        driver.find_element(By.CSS_SELECTOR, "#search-list .search-result").click()
        wait_until(lambda: "order 12 for the warehouse" in self.texts(driver) and "chatter 40" not in self.texts(driver), message="the conversation around the result")
        self.assertEqual(self.texts(driver), [f"chatter {n}" for n in range(2, 12)] + ["order 12 for the warehouse"] + [f"chatter {n}" for n in range(13, 23)], "ten on each side")
        self.assertEqual(driver.execute_script("return document.querySelector('#messages li.found .text').textContent"), "order 12 for the warehouse")
        jump = driver.find_element(By.ID, "new-messages")
        wait_until(jump.is_displayed, message="Jump to newest")
        jump.click()
        wait_until(lambda: self.texts(driver)[-1:] == ["chatter 40"], message="back to the newest")
        # Nothing found says so; a word too common for nothing is not an error.
        box.clear()
        box.send_keys("zebra")
        box.send_keys(Keys.ENTER)
        wait_until(lambda: "Nothing found" in driver.find_element(By.ID, "search-summary").text, message="nothing found")
        driver.find_element(By.ID, "search-close").click()
        wait_until(lambda: not driver.find_element(By.ID, "search-results").is_displayed(), message="the results closed")
        self.close(driver)

    def test_43_without_an_archive_the_page_has_no_search_box(self):
        driver = self.open(self.a)
        self.assertEqual(driver.find_elements(By.ID, "search"), [])
        self.close(driver)


class Nginx:
    """A real nginx in front of one instance, configured the way that breaks WebSocket:
    no `Upgrade` and `Connection` headers passed on (nginx drops hop-by-hop headers unless
    told to pass them). Started on a spare loopback port, stopped by its PID."""

    def __init__(self, instance):
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="chatroom-nginx-")
        config = os.path.join(self.directory, "nginx.conf")
        with open(config, "w") as file:
            file.write(f"""
daemon off;
worker_processes 1;
pid {self.directory}/nginx.pid;
error_log {self.directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {self.directory}/body;
    proxy_temp_path {self.directory}/proxy;
    fastcgi_temp_path {self.directory}/fastcgi;
    uwsgi_temp_path {self.directory}/uwsgi;
    scgi_temp_path {self.directory}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://127.0.0.1:{instance.port};
            proxy_http_version 1.1;
            proxy_read_timeout 60s;
        }}
    }}
}}
""")
        nginx = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen([nginx, "-e", f"{self.directory}/error.log", "-p", self.directory, "-c", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.answers, message=f"nginx on port {self.port}")

    def answers(self):
        try:
            with urllib.request.urlopen(self.url + "healthz", timeout=1) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def stop(self):
        stop_process(self.process, timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


class CompatibilityModeTests(PageTestCase):
    """Through an nginx that does not pass WebSocket upgrades: the page falls back to
    Server-Sent Events (GET /events) and POST /send/ by itself."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.nginx = Nginx(cls.a)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.nginx.stop()

    def test_35_behind_a_proxy_that_blocks_websocket_the_page_falls_back_to_events_and_loses_nothing(self):
        channel = f"compat{int(time.time() * 1000) % 100000}"
        self.b.send("before", channel)
        driver = browser()
        self.drivers.append(driver)
        driver.get(self.nginx.url + f"#channel={channel}")
        wait_until(lambda: self.status(driver) == "Connected (compatibility mode)", timeout=30, message="compatibility mode")
        wait_until(lambda: "before" in self.texts(driver), message="the channel's newest messages")
        self.shot(driver, "compatibility-mode")
        # Posted on another instance: over Redis, then the stream.
        self.b.send("from b", channel)
        wait_until(lambda: "from b" in self.texts(driver), message="a message posted on another instance")
        # Typed: the outbox sends through POST /send/ with its ids as Idempotency-Key.
        typed = [f"typed {n}" for n in range(1, 4)]
        for text in typed:
            self.type_message(driver, text)
        wait_until(lambda: all(text in self.texts(driver) for text in typed), message="the typed messages")
        wait_until(lambda: self.outgoing(driver) == [] and self.outbox(driver) == [], message="the outbox empty")
        # The instance behind nginx restarts; the stream resumes from its Last-Event-ID.
        self.a.kill()
        during = [f"during {n}" for n in range(1, 6)]
        for text in during:
            self.assertEqual(self.b.send(text, channel), "ok")
        self.a.start()
        wait_until(lambda: all(text in self.texts(driver) for text in during), timeout=40, message="what was sent during the restart")
        wait_until(lambda: self.status(driver) == "Connected (compatibility mode)", timeout=30, message="compatibility mode again")
        self.b.send("after", channel)
        wait_until(lambda: "after" in self.texts(driver), message="live again")
        time.sleep(1)
        self.assert_once_in_order(self.texts(driver), ["before", "from b", *typed, *during, "after"])
        with urllib.request.urlopen(self.a.url + f"history?channel={channel}", timeout=5) as response:
            stored = [message["data"] for message in json.load(response)["messages"]]
        self.assert_once_in_order(stored, ["before", "from b", *typed, *during, "after"])
        self.close(driver)

    def test_36_in_compatibility_mode_a_refused_room_is_said_and_the_others_go_on(self):
        # A one-to-one room of two others: the stream asking for it is refused (403); the
        # page finds which room, says so there, and follows the others without it.
        room = "dm:AAAAAAAAAAAAAAA:zzzzzzzzzzzzzzz"
        driver = browser()
        self.drivers.append(driver)
        driver.get(self.nginx.url + f"#channel={urllib.parse.quote(room)}")
        wait_until(lambda: self.status(driver).startswith("This is a private one-to-one room"), timeout=30, message="the room's refusal")
        self.select_tab_anyway(driver, "channel_1")
        wait_until(lambda: self.status(driver) == "Connected (compatibility mode)", timeout=30, message="the other rooms followed")
        self.b.send("still here", "channel_1")
        wait_until(lambda: "still here" in self.texts(driver), message="a message in another room")
        self.close(driver)

    def test_37_in_compatibility_mode_typing_edits_deletes_reactions_and_read_state_go_over_http(self):
        channel = f"compatchat{int(time.time() * 1000) % 100000}"
        compat = self.open(self.nginx, f"#channel={channel}", connected="Connected (compatibility mode)")
        compat.find_element(By.ID, "name").send_keys("Cleo", Keys.TAB)
        wait_until(lambda: self.status(compat) == "Connected (compatibility mode)", message="compatibility mode under a name")
        other = self.open(self.b, f"#channel={channel}")
        # Typing: POST /typing/, shown in the other window.
        compat.find_element(By.ID, "text").send_keys("I am wri")
        wait_until(lambda: other.find_element(By.ID, "typing").text == "Cleo is typing…", timeout=5, message="Cleo typing, in the other window")
        compat.find_element(By.ID, "text").send_keys("ting", Keys.ENTER)
        for text in ("to be removed",):
            self.type_message(compat, text)
        wait_until(lambda: self.texts(other) == ["I am writing", "to be removed"], message="Cleo's messages in the other window")
        wait_until(lambda: len(compat.find_elements(By.CSS_SELECTOR, "#messages li.own[data-offset]")) == 2, message="her own messages")
        # An edit and a delete: POST /send/ with type and of.
        ConversationTests.act_on(compat, self.bubble(compat, "I am writing"), "edit")
        box = compat.find_element(By.CSS_SELECTOR, "#messages .edit-field")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("I wrote this", Keys.ENTER)
        ConversationTests.act_on(compat, self.bubble(compat, "to be removed"), "delete")
        for driver in (compat, other):
            wait_until(lambda: self.texts(driver) == ["I wrote this", "Message deleted"], message="the edit and the delete")
        # A reaction to the other window's message, toggled on.
        self.type_message(other, "react to me")
        item = wait_until(lambda: self.bubble(compat, "react to me"), message="the other's message")
        ConversationTests.act_on(compat, item, "react")
        item.find_element(By.CSS_SELECTOR, '.picker [data-emoji="👍"]').click()
        wait_until(lambda: ConversationTests.chips(other, "react to me") == [["👍 1", "false"]], message="Cleo's 👍 in the other window")
        wait_until(lambda: ConversationTests.chips(compat, "react to me") == [["👍 1", "true"]], message="her own 👍, highlighted")
        self.shot(compat, "compatibility-mode-conversation")
        # Read state: a second window of the same person (on a socket) loses its badge when
        # the compatibility-mode window reads the room.
        second = ConversationTests.same_person(self, self.b, compat)
        self.assertEqual(self.b.send("for both windows", "channel_2"), "ok")
        for driver in (compat, second):
            wait_until(lambda: self.badge(driver, "channel_2") == "1", message="a badge of 1 in each window")
        compat.find_element(By.ID, "tab-channel_2").click()
        wait_until(lambda: "for both windows" in self.texts(compat), message="read in the compatibility-mode window")
        wait_until(lambda: self.badge(second, "channel_2") == "", timeout=8, message="the badge gone in the other window")
        self.assertEqual(self.outgoing(compat), [], "nothing left waiting for a socket")
        self.close(second)
        self.close(other)
        self.close(compat)

    def test_38_in_compatibility_mode_a_moderator_mutes_from_the_people_list(self):
        instance = Instance("--send-rate", "0", "--jwt-secret", JWT_SECRET)
        proxy = Nginx(instance)
        try:
            channel = f"compatmod{int(time.time() * 1000) % 100000}"
            bob = self.open(instance, f"?token={sign_in_token('bob-c38', 'Bob')}#channel={channel}")
            mia = self.open(proxy, f"?token={sign_in_token('mia-c38', 'Mia', 'moderator')}#channel={channel}", connected="Connected (compatibility mode)")
            bob_id = bob.execute_script("return document.body.dataset.me")
            self.choose(mia, bob_id, "mute-5m")
            wait_until(lambda: self.result(mia).startswith("Bob is muted until"), message="Mia told the mute took")
            wait_until(lambda: self.composer_state(bob)[0] is True, message="Bob's composer blocked")
            self.choose(mia, bob_id, "unmute")
            wait_until(lambda: self.composer_state(bob)[0] is False, message="Bob's composer enabled again")
            self.close(bob)
            self.close(mia)
        finally:
            proxy.stop()
            instance.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
