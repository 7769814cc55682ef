// The stockraft operator console: a client of the node's public API, nothing more.
//
// Every call goes to the node that served this page (same origin), with the token typed into
// the page (kept in this tab's sessionStorage) as `Authorization: Bearer`, so tokens and scopes
// apply to the console as to any client. What it calls:
//   /api/whoami          which actions to offer (writes only with `write` / `reserve`)
//   /api/status          the cluster panel: every member's health, gathered by this node
//   /api/inventory/skus  the SKU panel; /api/reservations/:id the reservation panel
//   /api/events          recent events of a SKU or a reservation
//   /api/events/stream   the live feed, read with fetch() (an EventSource cannot send a
//                        token), resumed after its last seq whenever the connection drops
// Text only ever reaches the page through textContent: nothing an id holds can become markup.
"use strict";

(function consoleMain() {
  const REFRESH_MS = 2000;
  const REQUEST_TIMEOUT_MS = 8000;
  const FEED_ROWS_MAX = 200;
  const FEED_BACKLOG_ON_START = 20;
  const FEED_RETRY_MS_DEFAULT = 1000;
  // Recent events: the matching ones among the feed's newest RECENT_WINDOW_SEQS, at most
  // RECENT_EVENTS_MAX of them (a page scans at most 10,000 events on the node).
  const RECENT_WINDOW_SEQS = 10000;
  const RECENT_EVENTS_MAX = 20;
  const RECENT_PAGES_MAX = 3;
  const RESERVATION_LINES_QUERIED_MAX = 10;
  // Past any seq: a page after it is empty and names the head.
  const SEQ_BEYOND_HEAD = Number.MAX_SAFE_INTEGER;
  const TOKEN_KEY = "stockraft.console.token";

  const state = {
    scopes: [],
    sku: null,
    skuGeneration: 0,
    reservation: null,
    reservationShown: null,
    reservationGeneration: 0,
    feed: { lastSeq: null, paused: false, abort: null, generation: 0 },
  };

  function $(id) {
    return document.getElementById(id);
  }

  // An element with attributes and children (strings become text nodes).
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== null && value !== undefined) {
        node.setAttribute(name, String(value));
      }
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : String(child ?? ""));
    }
    return node;
  }

  function setVisible(node, visible) {
    node.hidden = !visible;
  }

  function setMessage(id, text) {
    const node = $(id);
    node.textContent = text || "";
    setVisible(node, Boolean(text));
  }

  function savedToken() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function requestHeaders(extra) {
    const all = Object.assign({ Accept: "application/json" }, extra || {});
    if (savedToken()) {
      all.Authorization = "Bearer " + savedToken();
    }
    return all;
  }

  // An answer of the API that is not a success, with its error code and message.
  class RequestFailure extends Error {
    constructor(status, code, text, details) {
      super(text);
      this.status = status;
      this.code = code;
      this.details = details || {};
    }
  }

  async function callApi(path, options) {
    const init = Object.assign({ cache: "no-store" }, options || {});
    init.headers = requestHeaders(init.headers);
    init.signal = init.signal || AbortSignal.timeout(REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new RequestFailure(0, "UNREACHABLE", "this node does not answer (" + error.message + ")");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok || !body) {
      const failure = (body && body.error) || {};
      throw new RequestFailure(
        response.status,
        failure.code || "HTTP_" + response.status,
        failure.message || response.statusText,
        failure.details,
      );
    }
    return body;
  }

  function describe(error) {
    if (error.status === 401) {
      return "401: this cluster needs a token with the read scope (paste one above)";
    }
    return (error.code ? error.code + ": " : "") + error.message;
  }

  function idempotencyKey() {
    const random = crypto.getRandomValues(new Uint8Array(12));
    return "console-" + Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function sizeText(count) {
    if (count === null || count === undefined) {
      return "–";
    }
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = count;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? value : value.toFixed(1)) + " " + units[unit];
  }

  function orDash(value) {
    return value === null || value === undefined ? "–" : value;
  }

  // ---- token and scopes ----------------------------------------------------------------

  async function loadWhoami() {
    try {
      const me = (await callApi("/api/whoami")).data;
      state.scopes = me.scopes;
      const who = me.token ? "token " + me.token : me.tokensRequired ? "no token" : "open cluster";
      $("whoami").textContent = who + " · scopes: " + (me.scopes.join(", ") || "none");
    } catch (error) {
      state.scopes = [];
      $("whoami").textContent = describe(error);
    }
    for (const node of document.querySelectorAll(".writes")) {
      setVisible(node, state.scopes.includes(node.dataset.scope));
    }
    renderReservationActions();
  }

  function useToken(value) {
    if (value) {
      sessionStorage.setItem(TOKEN_KEY, value);
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
    }
    $("token").value = value;
    loadWhoami();
    refreshCluster();
    if (state.sku) {
      lookUpSku(state.sku);
    }
    if (state.reservation) {
      lookUpReservation(state.reservation);
    }
    restartFeed();
  }

  // ---- cluster panel -------------------------------------------------------------------

  function tolerance(status) {
    const base = "can lose " + status.failureTolerance + " of " + status.voters + " voters";
    const down = status.voters - status.reachableVoters;
    if (down === 0) {
      return base;
    }
    const spare = Math.max(0, status.reachableVoters - status.quorum);
    return base + " (" + down + " down: can lose " + spare + " more)";
  }

  function memberRow(member, leaderId) {
    const raft = member.raft;
    const storage = member.storage;
    const isLeader = member.id === leaderId;
    const role = raft ? raft.role : "unreachable";
    const disk = !storage ? "–" : storage.noSpace ? "ALARM: " + (storage.reason || "") : "ok";
    const row = el(
      "tr",
      { "data-node-id": member.id, "data-role": isLeader ? "leader" : role },
      el("td", {}, member.id),
      el("td", {}, member.addr),
      el("td", {}, member.role + " · " + role),
      el("td", {}, raft ? raft.term : "–"),
      el("td", {}, raft ? orDash(raft.committedIndex) : "–"),
      el("td", {}, raft ? orDash(raft.appliedIndex) : "–"),
      el("td", {}, orDash(member.lag)),
      el("td", { class: storage && storage.noSpace ? "alarm" : "" }, disk),
      el("td", {}, storage ? sizeText(storage.dataDirBytes) : "–"),
    );
    if (!member.reachable) {
      row.title = member.error || "unreachable";
      row.classList.add("down");
    }
    return row;
  }

  function renderCluster(status) {
    $("served-by").textContent = "served by node " + status.servedBy;
    const leader = $("leader");
    leader.textContent = status.leaderId === null ? "none" : "node " + status.leaderId;
    leader.dataset.leader = status.leaderId === null ? "" : String(status.leaderId);
    $("term").textContent = status.term;
    $("tolerance").textContent = tolerance(status);
    $("members").replaceChildren(...status.members.map((m) => memberRow(m, status.leaderId)));
    $("cluster-updated").textContent = "· updated " + new Date().toLocaleTimeString();
    banner(status.problems);
  }

  function banner(problems) {
    const node = $("banner");
    node.replaceChildren(...problems.map((problem) => el("div", {}, problem)));
    setVisible(node, problems.length > 0);
  }

  async function refreshCluster() {
    try {
      const status = (await callApi("/api/status")).data;
      setMessage("cluster-message", "");
      renderCluster(status);
    } catch (error) {
      setMessage("cluster-message", describe(error));
      $("leader").textContent = "unknown";
      $("leader").dataset.leader = "";
      banner(["cannot read the cluster's status from this node: " + describe(error)]);
    }
  }

  // ---- events (SKU and reservation panels) ---------------------------------------------

  function eventRow(event) {
    return el(
      "tr",
      { "data-seq": event.seq, "data-type": event.type },
      el("td", {}, event.seq),
      el("td", {}, event.at),
      el("td", {}, event.type),
      el("td", {}, event.storeId),
      el("td", {}, event.sku),
      el("td", {}, event.qty),
      el("td", {}, event.reserved),
      el("td", {}, orDash(event.delta)),
      el("td", {}, event.version),
      el("td", {}, event.reservationId || ""),
    );
  }

  // A query string. Commas stay literal: the node reads `type=held,expired` as it is written
  // (it does not percent-decode query values; valid ids need no escaping anyway).
  function query(parameters) {
    return Object.entries(parameters)
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([name, value]) => name + "=" + encodeURIComponent(value).replace(/%2C/gi, ","))
      .join("&");
  }

  // The newest events matching `filter` among the feed's newest RECENT_WINDOW_SEQS, oldest
  // first (at most RECENT_EVENTS_MAX).
  async function recentEvents(filter) {
    const head = (await callApi("/api/events?" + query({ after: SEQ_BEYOND_HEAD, limit: 1 }))).data
      .head;
    let after = Math.max(0, head - RECENT_WINDOW_SEQS);
    let found = [];
    for (let page = 0; page < RECENT_PAGES_MAX && after !== null; page += 1) {
      let answer;
      try {
        answer = await callApi("/api/events?" + query(Object.assign({ after, limit: 1000 }, filter)));
      } catch (error) {
        if (error.status === 410 && error.details.oldestSeq) {
          after = error.details.oldestSeq - 1;
          continue;
        }
        throw error;
      }
      found = found.concat(answer.data.events).slice(-RECENT_EVENTS_MAX);
      after = answer.data.next;
    }
    return found;
  }

  // ---- SKU panel -----------------------------------------------------------------------

  function recordRow(record) {
    return el(
      "tr",
      { "data-store": record.storeId },
      el("td", {}, record.storeId),
      el("td", { "data-field": "qty" }, record.qty),
      el("td", { "data-field": "reserved" }, record.reserved),
      el("td", { "data-field": "onHand" }, record.onHand),
      el("td", { "data-field": "version" }, record.version),
      el("td", {}, record.updatedAt),
    );
  }

  function renderSku(view) {
    $("sku-records").replaceChildren(...view.stores.map(recordRow));
    for (const field of ["qty", "reserved", "onHand"]) {
      $("sku-totals").querySelector('[data-field="' + field + '"]').textContent =
        view.totals[field];
    }
    const select = $("adjust-store");
    const chosen = select.value;
    select.replaceChildren(
      ...view.stores.map((record) =>
        el("option", { value: record.storeId, "data-version": record.version }, record.storeId),
      ),
    );
    if (view.stores.some((record) => record.storeId === chosen)) {
      select.value = chosen;
    }
    if (view.stores.length === 0) {
      setMessage("sku-message", "no store holds SKU " + view.sku);
    }
  }

  async function lookUpSku(sku) {
    state.sku = sku;
    state.skuGeneration += 1;
    const generation = state.skuGeneration;
    try {
      const path = "/api/inventory/skus/" + encodeURIComponent(sku);
      const [view, events] = await Promise.all([callApi(path), recentEvents({ sku })]);
      if (generation !== state.skuGeneration) {
        return;
      }
      setMessage("sku-message", "");
      renderSku(view.data);
      $("sku-events").replaceChildren(...events.reverse().map(eventRow));
      setVisible($("sku-result"), true);
    } catch (error) {
      if (generation === state.skuGeneration) {
        setMessage("sku-message", describe(error));
      }
    }
  }

  async function submitAdjust(event) {
    event.preventDefault();
    const option = $("adjust-store").selectedOptions[0];
    const delta = Number($("adjust-delta").value);
    if (!option || !Number.isInteger(delta)) {
      return;
    }
    const store = option.value;
    const version = option.dataset.version;
    const question =
      "Adjust " + state.sku + " in " + store + " by " + delta + " (at version " + version + ")?";
    if (!confirm(question)) {
      return;
    }
    const path =
      "/api/inventory/stores/" +
      encodeURIComponent(store) +
      "/inventory/" +
      encodeURIComponent(state.sku) +
      "/adjust";
    try {
      await callApi(path, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          "If-Match": '"' + version + '"',
          "Idempotency-Key": idempotencyKey(),
        },
        body: JSON.stringify({ delta }),
      });
      setMessage("sku-message", "");
    } catch (error) {
      setMessage("sku-message", "adjust refused: " + describe(error));
    }
    await lookUpSku(state.sku);
  }

  // ---- reservation panel ---------------------------------------------------------------

  function renderReservation(reservation) {
    const status = $("reservation-status");
    status.textContent = reservation.status;
    status.dataset.status = reservation.status;
    $("reservation-created").textContent = reservation.createdAt;
    $("reservation-deadline").textContent = reservation.expiresAt;
    $("reservation-lines").replaceChildren(
      ...reservation.lines.map((line) =>
        el("tr", {}, el("td", {}, line.storeId), el("td", {}, line.sku), el("td", {}, line.qty)),
      ),
    );
    state.reservationShown = reservation;
    renderReservationActions();
    tickCountdown();
  }

  function renderReservationActions() {
    const held = Boolean(state.reservationShown && state.reservationShown.status === "held");
    $("reservation-commit").disabled = !held;
    $("reservation-release").disabled = !held;
  }

  function tickCountdown() {
    const shown = state.reservationShown;
    const countdown = $("reservation-countdown");
    if (!shown || shown.status !== "held") {
      countdown.textContent = "";
      return;
    }
    const left = Math.floor((Date.parse(shown.expiresAt) - Date.now()) / 1000);
    if (left <= 0) {
      countdown.textContent = "past its deadline: expiring";
      return;
    }
    const hours = Math.floor(left / 3600);
    const minutes = String(Math.floor((left % 3600) / 60)).padStart(2, "0");
    const seconds = String(left % 60).padStart(2, "0");
    countdown.textContent =
      "expires in " + (hours > 0 ? hours + ":" : "") + minutes + ":" + seconds;
  }

  // The events of a reservation: those naming it among the recent events of its lines'
  // records (the feed filters by store and SKU, not by reservation).
  async function reservationEvents(reservation) {
    const types = "held,committed,released,expired";
    const lines = reservation.lines.slice(0, RESERVATION_LINES_QUERIED_MAX);
    const pages = await Promise.all(
      lines.map((line) => recentEvents({ storeId: line.storeId, sku: line.sku, type: types })),
    );
    return pages
      .flat()
      .filter((event) => event.reservationId === reservation.id)
      .sort((a, b) => a.seq - b.seq);
  }

  async function lookUpReservation(id) {
    state.reservation = id;
    state.reservationGeneration += 1;
    const generation = state.reservationGeneration;
    try {
      const reservation = (await callApi("/api/reservations/" + encodeURIComponent(id))).data;
      const events = await reservationEvents(reservation);
      if (generation !== state.reservationGeneration) {
        return;
      }
      setMessage("reservation-message", "");
      renderReservation(reservation);
      $("reservation-events").replaceChildren(...events.reverse().map(eventRow));
      setVisible($("reservation-result"), true);
    } catch (error) {
      if (generation === state.reservationGeneration) {
        setMessage("reservation-message", describe(error));
      }
    }
  }

  async function endReservation(action) {
    const id = state.reservation;
    if (!id || !confirm(action[0].toUpperCase() + action.slice(1) + " reservation " + id + "?")) {
      return;
    }
    try {
      await callApi("/api/reservations/" + encodeURIComponent(id) + "/" + action, {
        method: "POST",
        headers: { "Idempotency-Key": idempotencyKey() },
      });
      setMessage("reservation-message", "");
    } catch (error) {
      setMessage("reservation-message", action + " refused: " + describe(error));
    }
    await lookUpReservation(id);
  }

  // ---- live feed -----------------------------------------------------------------------

  function feedState(text) {
    $("feed-state").textContent = text;
  }

  function addFeedEvents(events) {
    const body = $("feed-events");
    for (const event of events) {
      body.prepend(eventRow(event));
    }
    while (body.rows.length > FEED_ROWS_MAX) {
      body.deleteRow(body.rows.length - 1);
    }
  }

  // Splits a Server-Sent Events text into frames; returns the unfinished rest.
  function parseFrames(text, onFrame) {
    const frames = text.replace(/\r\n?/g, "\n").split("\n\n");
    const rest = frames.pop();
    for (const frame of frames) {
      const fields = { data: [] };
      for (const line of frame.split("\n")) {
        if (line === "" || line.startsWith(":")) {
          continue;
        }
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") {
          fields.data.push(value);
        } else {
          fields[name] = value;
        }
      }
      onFrame(fields);
    }
    return rest;
  }

  async function feedStart() {
    if (state.feed.lastSeq !== null) {
      return;
    }
    // This node's own head (the stream is this node's): start a few events before it.
    const page = await callApi("/api/events?" + query({ after: SEQ_BEYOND_HEAD, consistency: "local" }));
    state.feed.lastSeq = Math.max(0, page.data.head - FEED_BACKLOG_ON_START);
  }

  // Reads the stream once, until it ends or fails; returns the retry delay to use.
  async function readStream(generation, abort) {
    let retryMs = FEED_RETRY_MS_DEFAULT;
    await feedStart();
    const path =
      "/api/events/stream?" +
      query({ after: state.feed.lastSeq, storeId: $("feed-store").value.trim(), sku: $("feed-sku").value.trim() });
    const response = await fetch(path, {
      headers: requestHeaders({ Accept: "text/event-stream" }),
      cache: "no-store",
      signal: abort.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      const failure = (body && body.error) || {};
      if (response.status === 410 && failure.details && failure.details.oldestSeq) {
        state.feed.lastSeq = failure.details.oldestSeq - 1;
        feedState("events before seq " + failure.details.oldestSeq + " are no longer kept");
        return 0;
      }
      throw new RequestFailure(response.status, failure.code, failure.message || response.statusText);
    }
    feedState("live, after seq " + state.feed.lastSeq);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done || generation !== state.feed.generation) {
        return retryMs;
      }
      const batch = [];
      buffer = parseFrames(buffer + value, (frame) => {
        if (frame.retry) {
          retryMs = Number(frame.retry) || retryMs;
        }
        if (frame.id && frame.data.length > 0) {
          batch.push(JSON.parse(frame.data.join("\n")));
          state.feed.lastSeq = Number(frame.id);
        }
      });
      addFeedEvents(batch);
      if (batch.length > 0) {
        feedState("live, last seq " + state.feed.lastSeq);
      }
    }
  }

  async function runFeed(generation, abort) {
    while (generation === state.feed.generation) {
      let retryMs = FEED_RETRY_MS_DEFAULT;
      try {
        retryMs = await readStream(generation, abort);
      } catch (error) {
        if (abort.signal.aborted) {
          return;
        }
        if (error.status === 401 || error.status === 403) {
          // Waits for another token (useToken restarts the feed).
          feedState("stopped: " + describe(error));
          return;
        }
        feedState("disconnected (" + describe(error) + "); resuming");
      }
      if (generation !== state.feed.generation) {
        return;
      }
      feedState("reconnecting after seq " + orDash(state.feed.lastSeq) + "…");
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  }

  function stopFeed() {
    state.feed.generation += 1;
    if (state.feed.abort) {
      state.feed.abort.abort();
      state.feed.abort = null;
    }
  }

  function restartFeed() {
    stopFeed();
    if (state.feed.paused) {
      feedState("paused after seq " + orDash(state.feed.lastSeq));
      return;
    }
    const abort = new AbortController();
    state.feed.abort = abort;
    runFeed(state.feed.generation, abort);
  }

  function togglePause() {
    state.feed.paused = !state.feed.paused;
    $("feed-pause").textContent = state.feed.paused ? "Resume" : "Pause";
    restartFeed();
  }

  function filterFeed(event) {
    event.preventDefault();
    $("feed-events").replaceChildren();
    restartFeed();
  }

  // ---- wiring --------------------------------------------------------------------------

  function every(ms, task) {
    const loop = async () => {
      await task();
      setTimeout(loop, ms);
    };
    loop();
  }

  function startConsole() {
    $("token").value = savedToken();
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      useToken($("token").value.trim());
    });
    $("token-forget").addEventListener("click", () => useToken(""));
    $("sku-form").addEventListener("submit", (event) => {
      event.preventDefault();
      lookUpSku($("sku-input").value.trim());
    });
    $("adjust-form").addEventListener("submit", submitAdjust);
    $("reservation-form").addEventListener("submit", (event) => {
      event.preventDefault();
      lookUpReservation($("reservation-input").value.trim());
    });
    $("reservation-commit").addEventListener("click", () => endReservation("commit"));
    $("reservation-release").addEventListener("click", () => endReservation("release"));
    $("feed-pause").addEventListener("click", togglePause);
    $("feed-form").addEventListener("submit", filterFeed);

    loadWhoami();
    every(REFRESH_MS, refreshCluster);
    // The looked-up SKU and reservation follow the cluster: refreshed at the same pace.
    every(REFRESH_MS, async () => {
      if (state.sku) {
        await lookUpSku(state.sku);
      }
      // An ended reservation does not change any more.
      const shown = state.reservationShown;
      const ended = shown && shown.id === state.reservation && shown.status !== "held";
      if (state.reservation && !ended) {
        await lookUpReservation(state.reservation);
      }
    });
    setInterval(tickCountdown, 1000);
    restartFeed();
  }

  document.addEventListener("DOMContentLoaded", startConsole);
})();
