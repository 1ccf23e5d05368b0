#!/usr/bin/env python3
"""Switch propagation across a teal cluster (run by benches/cluster.sh).

    cluster_propagation.py SWITCHES POLL_MS PROXY:ADMIN [PROXY:ADMIN ...]

Each instance is named by its proxy port and its admin port on 127.0.0.1. For every switch (the
target alternates green, blue, ...): POST /switch {"to": TARGET} to a random instance's admin
API; from its 200 answer on, GET / on every instance at once, each over a keep-alive connection
of its own, a round every POLL_MS ms, until each answers the new pool (bounded at 5 s per
switch). The delay of an instance is from the 200 to the arrival of the answer that showed it
the new pool, so it includes one round trip and up to one poll interval. Prints p50, p99 and max of the delay to
the last instance (all of them serve the new pool) and to the first instance other than the one
switched through, and the switch's own answer time. The instance switched through serves the
new pool before it answers 200, so its delay is the measurement's floor (one poll's round trip). Exits 1 if a switch failed or timed out.
Python 3 standard library only.
"""

import http.client
import json
import math
import random
import select
import sys
import time

TIMEOUT = 5.0
GAP = 0.05  # between one switch's full propagation and the next switch
now = time.perf_counter


class Conn:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port, reopened if the server closes it."""

    def __init__(self, port):
        self.port = port
        self.conn = None
        self.reconnects = 0

    def call(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, data
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
                self.reconnects += 1
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def poll_round(proxies, which):
    """GET / on each of proxies[which] at once; {i: (status, pool, time its answer arrived)}.
    The requests are all sent first and each answer is timed when its socket turns readable,
    so one slow instance does not delay the time taken of another."""
    sent = {}
    for i in which:
        c = proxies[i]
        try:
            if c.conn is None:
                c.conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=TIMEOUT)
            c.conn.request("GET", "/")
            sent[i] = c.conn
        except (OSError, http.client.HTTPException):
            c.close()
            c.reconnects += 1
    answers = {}
    deadline = now() + TIMEOUT
    while sent and now() < deadline:
        ready, _, _ = select.select([c.sock for c in sent.values()], [], [], deadline - now())
        t = now()
        for i, conn in list(sent.items()):
            if conn.sock not in ready:
                continue
            del sent[i]
            try:
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace").strip()
                if resp.will_close:
                    proxies[i].close()
                answers[i] = (resp.status, body, t)
            except (OSError, http.client.HTTPException):
                proxies[i].close()
                proxies[i].reconnects += 1
    for i in sent:
        proxies[i].close()
    return answers


def pct(xs, p):
    """Nearest-rank percentile of xs (p in 0..100)."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def ms(x):
    return f"{x * 1000:.1f} ms"


def main():
    switches, poll = int(sys.argv[1]), float(sys.argv[2]) / 1000
    instances = [tuple(int(p) for p in a.split(":")) for a in sys.argv[3:]]
    proxies = [Conn(p) for p, _ in instances]
    admins = [Conn(a) for _, a in instances]

    current = {pool for _, pool, _ in poll_round(proxies, range(len(instances))).values()}
    if len(current) != 1 or next(iter(current)) not in ("blue", "green"):
        sys.exit(f"the instances do not serve one pool before the first switch: {current}")
    current = current.pop()

    rng = random.Random(17)
    last, first_other, own, answer = [], [], [], []
    failed = timeouts = odd = polls = rounds = 0
    poll_time = 0.0
    for n in range(switches):
        target = "green" if current == "blue" else "blue"
        k = rng.randrange(len(instances))
        sent = now()
        status, body = admins[k].call(
            "POST", "/switch", json.dumps({"to": target}), {"content-type": "application/json"}
        )
        t0 = now()
        if status != 200:
            failed += 1
            print(f"switch {n + 1} to {target} via instance {k + 1}: {status} {body.decode(errors='replace')}")
            time.sleep(GAP)
            continue
        answer.append(t0 - sent)
        delay = {}
        deadline = t0 + TIMEOUT
        while len(delay) < len(instances) and now() < deadline:
            start = now()
            pending = [i for i in range(len(instances)) if i not in delay]
            answers = poll_round(proxies, pending)
            for i, (status, pool, t) in answers.items():
                polls += 1
                if status == 200 and pool == target:
                    delay[i] = t - t0
                elif status != 200 or pool != current:
                    odd += 1
            rounds += 1
            poll_time += now() - start
            rest = start + poll - now()
            if rest > 0:
                time.sleep(rest)
        if len(delay) < len(instances):
            timeouts += 1
            missing = [i + 1 for i in range(len(instances)) if i not in delay]
            print(f"switch {n + 1} to {target}: instances {missing} did not serve it within {TIMEOUT:.0f} s")
            delay.update({i: TIMEOUT for i in range(len(instances)) if i not in delay})
        last.append(max(delay.values()))
        first_other.append(min(v for i, v in delay.items() if i != k))
        own.append(delay[k])
        current = target
        time.sleep(GAP)

    print(f"{len(answer)} switches through a random instance of {len(instances)}, "
          f"every instance polled at once every {poll * 1000:g} ms, each on its own keep-alive "
          f"connection (a round of GETs took {poll_time / max(rounds, 1) * 1000:.2f} ms on average)")
    if answer:
        print(f"{'':24} {'p50':>9} {'p99':>9} {'max':>9}")
        for name, xs in (("switch answered (200)", answer),
                         ("instance switched via", own),
                         ("first other instance", first_other),
                         ("every instance", last)):
            print(f"{name:24} {ms(pct(xs, 50)):>9} {ms(pct(xs, 99)):>9} {ms(max(xs)):>9}")
    print(f"failed switches: {failed}, timed out: {timeouts}, answers neither old nor new pool: {odd}, "
          f"reconnects: {sum(c.reconnects for c in proxies + admins)}")
    sys.exit(1 if failed or timeouts or odd else 0)


if __name__ == "__main__":
    main()
