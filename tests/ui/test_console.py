"""Browser tests of the stockraft operator console (`/ui/`), run by scripts/ui-test.sh.

Headless Chromium (the system's, $CHROMIUM) driven by playwright, against the two throwaway
clusters the script started: `tokens` (client tokens configured: a reader and an operator
token) and `open` (none). Every wait is on a condition with a deadline (playwright's `expect`,
or `eventually` below), never a fixed sleep. Screenshots of every panel go to
$UI_SCREENSHOTS. The steps run in order on one page, as an operator would use it; the first
failure stops the run with a screenshot of the page as it was.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

SCREENSHOTS = Path(os.environ.get("UI_SCREENSHOTS", "target/ui-screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BINARY = os.environ["STOCKRAFT_BIN"]
# A condition's deadline (an election, a restarted node catching up).
WAIT_MS = 20_000
# The promise: an event written through another node shows within 2 s.
FEED_DELIVERY_MS = 2_000

READER = "ui-reader-token-0001"
OPERATOR = "ui-operator-token-01"


class Cluster:
    """One throwaway cluster of scripts/ui-test.sh (nodes 1..3)."""

    def __init__(self, name):
        upper = name.upper()
        self.name = name
        self.addrs = os.environ[f"UI_{upper}_ADDRS"].split(",")
        self.pids = [int(pid) for pid in os.environ[f"UI_{upper}_PIDS"].split(",")]
        self.config = os.environ[f"UI_{upper}_CONFIG"]
        self.restarted = []

    def url(self, node, path):
        return f"http://{self.addrs[node - 1]}{path}"

    def call(self, node, method, path, body=None, token=None):
        """(status, headers, JSON body) of one request; never raises on an HTTP status."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(node, path), data=data, method=method)
        if body is not None:
            request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.headers, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, error.headers, json.loads(error.read() or b"null")

    def must(self, node, method, path, body=None, token=None):
        status, _, answer = self.call(node, method, path, body, token)
        assert 200 <= status < 300, f"{method} {path} on node {node}: {status} {answer}"
        return answer

    def leader(self, among=(1, 2, 3)):
        """The node that says it leads (waits for one)."""

        def found():
            for node in among:
                try:
                    _, _, answer = self.call(node, "GET", "/api/health")
                except OSError:
                    continue
                if answer["data"]["role"] == "leader":
                    return node
            return None

        return eventually(f"a leader among {among} of cluster {self.name}", found)

    def kill(self, node):
        os.kill(self.pids[node - 1], signal.SIGKILL)

    def restart(self, node):
        log = open(Path(self.config).parent / f"stockraft-{node}.log", "ab")
        process = subprocess.Popen(
            [BINARY, "serve", "--id", str(node), "--config", self.config],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, RUST_LOG="warn"),
        )
        self.pids[node - 1] = process.pid
        self.restarted.append(process)

    def stop_restarted(self):
        for process in self.restarted:
            process.terminate()
        for process in self.restarted:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def eventually(what, probe, timeout_s=WAIT_MS / 1000):
    """probe()'s first truthy value, polled until a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def shot(page, name, selector=None):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if selector:
        page.locator(selector).screenshot(path=path)
    else:
        page.screenshot(path=path, full_page=True)


def use_token(page, token):
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Use token").click()


def record(sku, store, qty):
    return {"sku": sku, "storeId": store, "initialQuantity": qty}


def adjust_path(store, sku):
    return f"/api/inventory/stores/{store}/inventory/{sku}/adjust"


def feed_row(page, sku):
    return page.locator("#feed-events tr").filter(has=page.locator(f'td:text-is("{sku}")'))


def others(*nodes):
    return [node for node in (1, 2, 3) if node not in nodes]


# ---- the steps -------------------------------------------------------------------------


def page_from_a_follower_shows_three_members_and_the_leader(page, cluster):
    leader = cluster.leader()
    follower = others(leader)[0]
    page.goto(cluster.url(follower, "/ui/"))
    # No token yet on a cluster that needs one: the page says so.
    expect(page.locator("#banner")).to_contain_text("needs a token")
    use_token(page, READER)
    expect(page.locator("#whoami")).to_have_text("token reader · scopes: read")
    expect(page.locator("#members tr")).to_have_count(3)
    expect(page.locator("#leader")).to_have_attribute("data-leader", str(leader))
    expect(page.locator("#leader")).to_have_text(f"node {leader}")
    expect(page.locator(f'#members tr[data-node-id="{leader}"]')).to_have_attribute(
        "data-role", "leader"
    )
    for node in others(leader):
        expect(page.locator(f'#members tr[data-node-id="{node}"]')).to_have_attribute(
            "data-role", "follower"
        )
    expect(page.locator("#served-by")).to_have_text(f"served by node {follower}")
    expect(page.locator("#tolerance")).to_have_text("can lose 1 of 3 voters")
    expect(page.locator("#banner")).to_be_hidden()
    shot(page, "cluster", "#cluster")
    return follower


def sku_lookup_shows_every_store_after_writes(page, cluster, serving):
    leader = cluster.leader()
    writer = others(serving)[0]
    cluster.must(writer, "POST", "/api/inventory", record("ui-sku", "store-1", 10), OPERATOR)
    cluster.must(leader, "POST", "/api/inventory", record("ui-sku", "store-2", 4), OPERATOR)
    cluster.must(writer, "POST", adjust_path("store-1", "ui-sku"), {"delta": -3}, OPERATOR)
    page.get_by_placeholder("SKU", exact=True).fill("ui-sku")
    page.get_by_placeholder("SKU", exact=True).press("Enter")
    rows = page.locator("#sku-records tr")
    expect(rows).to_have_count(2)
    store_1 = page.locator('#sku-records tr[data-store="store-1"]')
    expect(store_1.locator('[data-field="qty"]')).to_have_text("7")
    expect(store_1.locator('[data-field="version"]')).to_have_text("2")
    expect(page.locator('#sku-totals [data-field="qty"]')).to_have_text("11")
    expect(page.locator('#sku-totals [data-field="onHand"]')).to_have_text("11")
    expect(page.locator('#sku-events tr[data-type="created"]')).to_have_count(2)
    expect(page.locator('#sku-events tr[data-type="adjusted"]')).to_have_count(1)
    # A read-only token is offered no writes.
    expect(page.locator("#adjust-form")).to_be_hidden()
    expect(page.get_by_role("button", name="Commit")).to_be_hidden()


def writes_appear_with_an_operator_token_and_adjust_after_a_confirmation(page, cluster):
    use_token(page, OPERATOR)
    expect(page.locator("#whoami")).to_have_text(
        "token operator · scopes: read, write, reserve"
    )
    expect(page.locator("#adjust-form")).to_be_visible()
    page.locator("#adjust-store").select_option("store-2")
    page.locator("#adjust-delta").fill("5")
    questions = []

    def accept(dialog):
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Adjust").click()
    store_2 = page.locator('#sku-records tr[data-store="store-2"]')
    expect(store_2.locator('[data-field="qty"]')).to_have_text("9")
    assert questions == ["Adjust ui-sku in store-2 by 5 (at version 1)?"], questions
    # Dismissed, nothing is sent.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Adjust").click()
    expect(store_2.locator('[data-field="version"]')).to_have_text("2")
    expect(page.locator('#sku-events tr[data-type="adjusted"]')).to_have_count(2)
    shot(page, "sku", "#sku")


def reservation_lookup_follows_its_status(page, cluster, serving):
    writer = others(serving)[0]
    hold = {"qty": 2, "ttlSeconds": 600}
    path = "/api/inventory/stores/store-1/inventory/ui-sku/reserve"
    first = cluster.must(writer, "POST", path, hold, OPERATOR)["reservationId"]
    second = cluster.must(writer, "POST", path, hold, OPERATOR)["reservationId"]

    page.get_by_placeholder("Reservation id").fill(first)
    page.get_by_placeholder("Reservation id").press("Enter")
    status = page.locator("#reservation-status")
    expect(status).to_have_text("held")
    expect(page.locator("#reservation-countdown")).to_have_text(re.compile(r"expires in \d\d:\d\d"))
    expect(page.locator("#reservation-lines tr")).to_have_count(1)
    expect(page.locator('#reservation-events tr[data-type="held"]')).to_have_count(1)
    # Committed elsewhere (through the leader): the panel follows without a new lookup.
    cluster.must(cluster.leader(), "POST", f"/api/reservations/{first}/commit", None, OPERATOR)
    expect(status).to_have_text("committed")
    expect(page.locator("#reservation-countdown")).to_have_text("")
    expect(page.locator('#reservation-events tr[data-type="committed"]')).to_have_count(1)
    expect(page.get_by_role("button", name="Commit")).to_be_disabled()

    # Released from the console, after a confirmation.
    page.get_by_placeholder("Reservation id").fill(second)
    page.get_by_placeholder("Reservation id").press("Enter")
    expect(status).to_have_text("held")
    shot(page, "reservation", "#reservation")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Release").click()
    expect(status).to_have_text("released")
    expect(page.locator('#reservation-events tr[data-type="released"]')).to_have_count(1)


def live_feed_shows_writes_through_another_node_pauses_and_filters(page, cluster, serving):
    writer = others(serving)[0]
    expect(page.locator("#feed-state")).to_contain_text("live")
    cluster.must(writer, "POST", "/api/inventory", record("ui-feed-1", "store-1", 1), OPERATOR)
    expect(feed_row(page, "ui-feed-1")).to_be_visible(timeout=FEED_DELIVERY_MS)

    # Paused: a write does not show until resumed, then shows (resumed after the last seq).
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#feed-state")).to_contain_text("paused")
    cluster.must(writer, "POST", "/api/inventory", record("ui-feed-2", "store-1", 1), OPERATOR)
    # Let the page run a full refresh of its cluster panel (2 s) while paused.
    updated = page.locator("#cluster-updated").text_content()
    expect(page.locator("#cluster-updated")).not_to_have_text(updated)
    expect(feed_row(page, "ui-feed-2")).to_have_count(0)
    page.get_by_role("button", name="Resume").click()
    expect(feed_row(page, "ui-feed-2")).to_be_visible()

    # Filtered by SKU: only that SKU's events, from now on.
    page.get_by_label("Filter SKU").fill("ui-feed-4")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#feed-events tr")).to_have_count(0)
    expect(page.locator("#feed-state")).to_contain_text("live")
    cluster.must(writer, "POST", "/api/inventory", record("ui-feed-3", "store-1", 1), OPERATOR)
    cluster.must(writer, "POST", "/api/inventory", record("ui-feed-4", "store-1", 1), OPERATOR)
    expect(feed_row(page, "ui-feed-4")).to_be_visible()
    expect(feed_row(page, "ui-feed-3")).to_have_count(0)
    shot(page, "feed-filtered", "#feed")
    page.get_by_label("Filter SKU").fill("")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#feed-state")).to_contain_text("live")


def the_feed_resumes_without_a_gap_after_the_serving_node_restarts(page, cluster, serving):
    leader = cluster.leader()
    cluster.must(leader, "POST", "/api/inventory", record("ui-gap-0", "store-1", 1), OPERATOR)
    expect(feed_row(page, "ui-gap-0")).to_be_visible()
    cluster.kill(serving)
    expect(page.locator("#feed-state")).to_contain_text("reconnecting")
    for number in (1, 2, 3):
        sku = f"ui-gap-{number}"
        cluster.must(leader, "POST", "/api/inventory", record(sku, "store-1", 1), OPERATOR)
    cluster.restart(serving)
    for number in (1, 2, 3):
        expect(feed_row(page, f"ui-gap-{number}")).to_be_visible(timeout=WAIT_MS)
    seqs = sorted(int(seq) for seq in page.locator("#feed-events tr").evaluate_all(
        "rows => rows.map(row => row.dataset.seq)"
    ))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"a gap or a repeat: {seqs}"
    shot(page, "feed", "#feed")
    # Back to three members before the next step takes one away.
    expect(page.locator("#banner")).to_be_hidden(timeout=WAIT_MS)


def killing_the_leader_shows_the_banner_then_the_new_leader(page, cluster, serving):
    leader = cluster.leader()
    assert leader != serving, "the page is served by a follower"
    shot(page, "console")
    cluster.kill(leader)
    banner = page.locator("#banner")
    expect(banner).to_be_visible(timeout=WAIT_MS)
    expect(banner).to_contain_text(f"node {leader} (", timeout=WAIT_MS)
    expect(banner).to_contain_text("unreachable")
    expect(page.locator(f'#members tr[data-node-id="{leader}"]')).to_have_class(
        re.compile(r"\bdown\b")
    )
    expect(page.locator("#leader")).to_have_attribute(
        "data-leader", re.compile(rf"^(?!{leader}$)[0-9]+$"), timeout=WAIT_MS
    )
    expect(page.locator("#tolerance")).to_contain_text("1 down: can lose 0 more")
    shot(page, "banner")


def an_open_cluster_needs_no_token(page, cluster):
    leader = cluster.leader()
    follower = others(leader)[0]
    page.goto(cluster.url(follower, "/ui/"))
    expect(page.locator("#whoami")).to_have_text("open cluster · scopes: read, reserve, write")
    expect(page.locator("#members tr")).to_have_count(3)
    expect(page.locator("#leader")).to_have_attribute("data-leader", str(leader))
    cluster.must(leader, "POST", "/api/inventory", record("ui-open", "store-9", 3))
    page.get_by_placeholder("SKU", exact=True).fill("ui-open")
    page.get_by_placeholder("SKU", exact=True).press("Enter")
    expect(page.locator('#sku-records tr[data-store="store-9"] [data-field="qty"]')).to_have_text(
        "3"
    )
    expect(page.locator("#adjust-form")).to_be_visible()
    expect(feed_row(page, "ui-open")).to_be_visible()


def main():
    tokens, open_cluster = Cluster("tokens"), Cluster("open")
    expect.set_options(timeout=WAIT_MS)
    errors = []
    launch = {"executable_path": CHROMIUM, "headless": True}
    if os.geteuid() == 0:
        launch["args"] = ["--no-sandbox"]  # Chromium's sandbox refuses to run as root
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**launch)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda error: errors.append(str(error)))
        step = "start"
        try:
            step = "page from a follower"
            serving = page_from_a_follower_shows_three_members_and_the_leader(page, tokens)
            step = "SKU lookup"
            sku_lookup_shows_every_store_after_writes(page, tokens, serving)
            step = "writes with an operator token"
            writes_appear_with_an_operator_token_and_adjust_after_a_confirmation(page, tokens)
            step = "reservation lookup"
            reservation_lookup_follows_its_status(page, tokens, serving)
            step = "live feed"
            live_feed_shows_writes_through_another_node_pauses_and_filters(page, tokens, serving)
            step = "feed across a restart"
            the_feed_resumes_without_a_gap_after_the_serving_node_restarts(page, tokens, serving)
            step = "leader killed"
            killing_the_leader_shows_the_banner_then_the_new_leader(page, tokens, serving)
            step = "open cluster"
            an_open_cluster_needs_no_token(browser.new_page(), open_cluster)
            assert not errors, f"script errors on the page: {errors}"
        except Exception:
            shot(page, "failure")
            print(f"ui-test: FAILED at step {step!r}; page as it was: {SCREENSHOTS}/failure.png",
                  file=sys.stderr)
            if errors:
                print(f"ui-test: script errors on the page: {errors}", file=sys.stderr)
            raise
        finally:
            browser.close()
            tokens.stop_restarted()
    print("ui-test: all console steps passed")


if __name__ == "__main__":
    main()
