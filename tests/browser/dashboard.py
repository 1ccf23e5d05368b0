#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium driven by Selenium.

What it does, as an operator would:
  - starts the real teal binary (env TEAL_BIN, default target/debug/teal; `cargo build` first)
    with a config in a temp dir: pools blue and green on four `teal upstream` processes, a pool
    gray whose one server is a closed port (so a switch to it is refused with 409), active health
    checks, an admin token, every port on 127.0.0.1 picked free;
  - puts load on the proxy (a bounded loop of GETs in a thread);
  - opens http://127.0.0.1:ADMIN/ : without the token the page shows no state and asks for it;
  - enters the token; sees blue live and every server of blue and green, fed by the event stream;
  - holds three slow requests open on blue, presses "Switch to green"; sees green live on the
    page within seconds and in GET /status, the switch in the event list, blue draining with its
    3 open requests, and later blue drained;
  - presses "Switch to gray" and sees the API's 409 reason with gray's server on the page;
  - with a wrong token, an action gets 401 and the page asks for the token again;
  - takes screenshots at 1280x800 and 390x844 (no sideways scrolling on the phone) into
    env TEAL_SCREENSHOTS (default: a new temp dir) and prints the folder;
  - fails on any Content-Security-Policy violation or script error in the browser console.

TEAL_DASHBOARD_WARMUP=50 runs that many seconds of load before the switch, so the charts of the
1280x800 screenshot cover most of a minute (docs/dashboard.png was taken so).

Exit status: 0 passed, 1 failed, 0 with a loud "!!!!! SKIPPED" line when selenium, chromium or
chromedriver are missing. Needs: python3, `pip install selenium`, Debian `chromium` and
`chromium-driver`. Run: cargo build && python3 tests/browser/dashboard.py
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "dash-test-token-3f9a1c"


def skip(why):
    print(f"!!!!! SKIPPED tests/browser/dashboard.py: {why} !!!!!", flush=True)
    sys.exit(0)


try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    skip("python selenium is missing (pip install --break-system-packages selenium)")


def find_exe(*names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def admin(port, method, path, body=None, token=TOKEN):
    """One admin API call: (status, JSON document)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Host": f"127.0.0.1:{port}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    raw = r.read()
    c.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw.decode(errors="replace")


class Load(threading.Thread):
    """GETs on the proxy's default route, bounded in count and time."""

    def __init__(self, port, max_requests=20000, max_seconds=180):
        super().__init__(daemon=True)
        self.port, self.max_requests, self.max_seconds = port, max_requests, max_seconds
        self.stop = threading.Event()
        self.ok = 0
        self.failed = []

    def run(self):
        end = time.time() + self.max_seconds
        conn = None
        n = 0
        while not self.stop.is_set() and n < self.max_requests and time.time() < end:
            n += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/")
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"request {n}: {r.status}")
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is recorded
                self.failed.append(f"request {n}: {e!r}")
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.01)
        if conn is not None:
            conn.close()


def slow_requests(port, n, delay_ms):
    """n requests held open by the upstream for delay_ms, each in its own thread: [status]."""
    results = []

    def one():
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=delay_ms / 1000 + 15)
            c.request("GET", f"/?delay_ms={delay_ms}")
            r = c.getresponse()
            r.read()
            results.append(r.status)
            c.close()
        except Exception as e:  # noqa: BLE001 - recorded, asserted on
            results.append(repr(e))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


class Env:
    """teal and its upstreams, in a temp dir, on free loopback ports."""

    def __init__(self, teal_bin):
        self.dir = tempfile.mkdtemp(prefix="teal-dash-")
        self.procs = []
        self.servers = {
            "blue": [f"127.0.0.1:{free_port()}" for _ in range(2)],
            "green": [f"127.0.0.1:{free_port()}" for _ in range(2)],
        }
        self.dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        self.proxy_port = free_port()
        self.admin_port = free_port()
        for pool, addrs in self.servers.items():
            for i, addr in enumerate(addrs, 1):
                log = open(os.path.join(self.dir, f"{pool}{i}.log"), "w")
                p = subprocess.Popen(
                    [teal_bin, "upstream", "--listen", addr, "--pool", pool, "--name", f"{pool}-{i}"],
                    stdout=log, stderr=subprocess.STDOUT)
                self.procs.append(p)
                wait_port(int(addr.rsplit(":", 1)[1]), p, f"upstream {pool}-{i}")
        health = ('path = "/"\ninterval = "300ms"\ntimeout = "250ms"\n'
                  'healthy_after = 1\nunhealthy_after = 1\n')
        cfg = (f'active = "blue"\n\n[proxy]\nlisten = "127.0.0.1:{self.proxy_port}"\n\n'
               f'[admin]\nlisten = "127.0.0.1:{self.admin_port}"\ntoken = "{TOKEN}"\n\n'
               f'[log]\naccess = false\n\n')
        for pool, addrs in list(self.servers.items()) + [("gray", [self.dead])]:
            cfg += f'[pools.{pool}]\nservers = {json.dumps(addrs)}\n\n[pools.{pool}.health]\n{health}\n'
        self.config = os.path.join(self.dir, "teal.toml")
        with open(self.config, "w") as f:
            f.write(cfg)
        self.log = os.path.join(self.dir, "teal.log")
        p = subprocess.Popen([teal_bin, "run", "-c", self.config],
                             stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        self.teal = p
        wait_port(self.admin_port, p, "teal admin")
        wait_port(self.proxy_port, p, "teal proxy")

    def wait_ready(self, pools, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            code, doc = admin(self.admin_port, "GET", "/status")
            if code == 200 and all(doc["pools"][p]["ready"] for p in pools):
                return doc
            time.sleep(0.1)
        raise AssertionError(f"pools {pools} not ready within {timeout}s: {doc}")

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def browser():
    chromium = os.environ.get("CHROMIUM") or find_exe("chromium", "chromium-browser", "google-chrome")
    driver = os.environ.get("CHROMEDRIVER") or find_exe("chromedriver")
    if not chromium:
        skip("no chromium (Debian: apt-get install chromium chromium-driver)")
    if not driver:
        skip("no chromedriver (Debian: apt-get install chromium-driver)")
    opts = Options()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,800", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(driver), options=opts)
    except Exception as e:  # noqa: BLE001
        skip(f"chromium would not start under chromedriver: {e}")


def viewport(d, w, h, mobile):
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile})


def text(d, css):
    return d.find_element(By.CSS_SELECTOR, css).text


def number(s):
    try:
        return float(s)
    except ValueError:
        return 0.0


def wait_for(d, what, cond, timeout=5):
    try:
        # The page re-renders lists as the stream delivers: an element found a moment ago can be
        # gone when its text is read; that is "not yet", and the next poll finds the new one.
        wait = WebDriverWait(d, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,))
        return wait.until(lambda _: cond())
    except Exception as e:
        raise AssertionError(f"within {timeout}s: {what}; page said:\n{text(d, 'body')[:2000]}") from e


def main():
    teal_bin = os.environ.get("TEAL_BIN") or os.path.join(ROOT, "target", "debug", "teal")
    if not os.access(teal_bin, os.X_OK):
        print(f"FAIL: no teal binary at {teal_bin}: run cargo build (or set TEAL_BIN)")
        return 1
    shots = os.environ.get("TEAL_SCREENSHOTS") or tempfile.mkdtemp(prefix="teal-dash-shots-")
    os.makedirs(shots, exist_ok=True)
    d = browser()
    env = None
    load = None
    try:
        env = Env(teal_bin)
        a = env.admin_port
        env.wait_ready(["blue", "green"])
        load = Load(env.proxy_port)
        load.start()
        url = f"http://127.0.0.1:{a}/"
        viewport(d, 1280, 800, False)
        d.get(url)

        # Without the token the page shows no state, and asks for it.
        wait_for(d, "the page asks for the token", lambda: d.find_element(By.ID, "token").is_displayed()
                 and "token" in text(d, "#message").lower())
        assert text(d, "#active-pool") == "?", "state shown without the token"

        d.find_element(By.ID, "token").send_keys(TOKEN)
        d.find_element(By.ID, "token-save").click()
        assert d.execute_script("return sessionStorage.getItem('teal-admin-token')") == TOKEN
        assert TOKEN not in d.current_url and not d.get_cookies(), "token in the URL or a cookie"

        # Blue live, fed by the event stream; every server of blue and green listed, healthy.
        wait_for(d, "blue shown live", lambda: text(d, "#active-pool") == "blue")
        wait_for(d, "the event stream is used", lambda: "event stream" in text(d, "#conn"))
        for pool, addrs in env.servers.items():
            for addr in addrs:
                sel = f'[data-pool="{pool}"] tr[data-server="{addr}"]'
                wait_for(d, f"{pool}'s server {addr} shown healthy with its last check",
                         lambda: d.find_elements(By.CSS_SELECTOR, sel + " .badge.state-healthy")
                         and d.find_elements(By.CSS_SELECTOR, sel + " .badge.ok"))
        assert "LIVE" in text(d, '[data-pool="blue"] h3'), text(d, '[data-pool="blue"] h3')
        assert "LIVE" not in text(d, '[data-pool="green"] h3')
        wait_for(d, "blue's charts show traffic",
                 lambda: d.find_elements(By.CSS_SELECTOR, '[data-pool="blue"] .charts svg polyline')
                 and number(text(d, '[data-pool="blue"] .charts .chart-value')) > 0, timeout=8)

        # TEAL_DASHBOARD_WARMUP=45: that many more seconds of load first, so the screenshot's
        # charts show most of a minute (for README's docs/dashboard.png).
        warmup = float(os.environ.get("TEAL_DASHBOARD_WARMUP", "0"))
        if warmup:
            print(f"warming up for {warmup:.0f}s")
            time.sleep(min(warmup, 90))

        # Three slow requests on blue, so the page has a drain to show after the switch.
        slow, slow_results = slow_requests(env.proxy_port, 3, 9000)
        deadline = time.time() + 5
        while admin(a, "GET", "/status")[1]["pools"]["blue"]["in_flight"] < 3:
            assert time.time() < deadline, "the slow requests never reached blue"
            time.sleep(0.05)

        # Switch to green from the page.
        d.find_element(By.CSS_SELECTOR, 'button[data-switch="green"]').click()
        t0 = time.time()
        wait_for(d, "green shown live after the switch", lambda: text(d, "#active-pool") == "green")
        print(f"green live on the page {time.time() - t0:.2f}s after the click")
        code, doc = admin(a, "GET", "/status")
        assert code == 200 and doc["active"] == "green", (code, doc)
        wait_for(d, "the switch in the event list",
                 lambda: any("green" in e.text for e in d.find_elements(By.CSS_SELECTOR, "#events li.kind-switch")))
        assert "switched to green" in text(d, "#message"), text(d, "#message")
        assert "LIVE" in text(d, '[data-pool="green"] h3')
        wait_for(d, "blue's drain shown: the 3 slow requests still open",
                 lambda: d.find_elements(By.CSS_SELECTOR, '[data-pool="blue"] .drain')
                 and "draining" in text(d, '[data-pool="blue"] .drain')
                 and "3 open" in text(d, '[data-pool="blue"] .drain')
                 and "since" in text(d, '[data-pool="blue"] .drain'))
        time.sleep(2)  # a couple of seconds of green traffic for the screenshot's charts

        viewport(d, 1280, 800, False)
        wide = os.path.join(shots, "dashboard-1280x800.png")
        d.save_screenshot(wide)

        # A refused action shows the API's reason: gray has no healthy server (409).
        d.find_element(By.CSS_SELECTOR, 'button[data-switch="gray"]').click()
        wait_for(d, "the 409 and its reason shown",
                 lambda: "409" in text(d, "#message") and "gray" in text(d, "#message")
                 and env.dead in text(d, "#message"))
        print("refused switch shown as:", text(d, "#message").replace("\n", " | "))
        code, doc = admin(a, "GET", "/status")
        assert doc["active"] == "green", doc
        refused = os.path.join(shots, "dashboard-refused-1280x800.png")
        d.save_screenshot(refused)

        # A wrong token: the action gets 401 and the page asks for the token again.
        d.find_element(By.ID, "token-forget").click()
        d.find_element(By.ID, "token").send_keys("not-the-token")
        d.find_element(By.ID, "token-save").click()
        d.find_element(By.CSS_SELECTOR, 'button[data-switch="blue"]').click()
        wait_for(d, "a 401 asks for the token again",
                 lambda: d.find_element(By.ID, "token").is_displayed() and "401" in text(d, "#message"))
        code, doc = admin(a, "GET", "/status")
        assert doc["active"] == "green", doc
        d.find_element(By.ID, "token").send_keys(TOKEN)
        d.find_element(By.ID, "token-save").click()
        wait_for(d, "back on the stream after the token", lambda: "event stream" in text(d, "#conn"))

        # The phone: one column, nothing wider than the screen.
        viewport(d, 390, 844, True)
        time.sleep(1.2)
        wait_for(d, "green still live at 390x844", lambda: text(d, "#active-pool") == "green")
        width = d.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide on a 390px screen"
        cols = d.execute_script("return getComputedStyle(document.querySelector('main')).gridTemplateColumns")
        assert len(cols.split()) == 1, f"not one column at 390px: {cols}"
        narrow = os.path.join(shots, "dashboard-390x844.png")
        d.save_screenshot(narrow)

        # Blue's drain ends on the page once the slow requests are answered.
        for t in slow:
            t.join(20)
        assert slow_results == [200, 200, 200], f"slow requests across the switch: {slow_results}"
        wait_for(d, "blue shown drained", lambda: "drained: nothing open" in text(d, '[data-pool="blue"]'))

        # No CSP violation, no script error.
        bad = [e for e in d.get_log("browser") if e["level"] == "SEVERE"
               and "401" not in e["message"] and "409" not in e["message"]]
        assert not bad, f"browser console errors: {bad}"

        load.stop.set()
        load.join(10)
        print(f"load: {load.ok} requests answered 200, {len(load.failed)} failed")
        assert load.ok > 100, f"too little load went through: {load.ok}"
        assert not load.failed, f"requests failed around the switch: {load.failed[:5]}"
        print(f"screenshots in {shots}:")
        for p in (wide, refused, narrow):
            print("  " + p)
        print("PASS tests/browser/dashboard.py")
        return 0
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        try:
            fail = os.path.join(shots, "failure.png")
            d.save_screenshot(fail)
            print(f"screenshot of the failure: {fail}")
        except Exception:  # noqa: BLE001
            pass
        if env is not None:
            print(f"teal's log: {env.log}")
            with open(env.log, errors="replace") as f:
                print("".join(f.readlines()[-40:]))
        print(f"screenshots in {shots}")
        print("FAIL tests/browser/dashboard.py")
        return 1
    finally:
        if load is not None:
            load.stop.set()
        d.quit()
        if env is not None:
            env.stop()


if __name__ == "__main__":
    sys.exit(main())
