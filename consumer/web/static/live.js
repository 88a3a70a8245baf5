// Live updates of the Deployment view: server-sent events, else polling. Figures arrive formatted by the server.
(function () {
  "use strict";
  const root = document.querySelector("[data-events]");
  const status = document.getElementById("live-status");
  if (!root) { if (status) status.hidden = true; return; }
  const only = root.dataset.only || null; // the delivery page follows one delivery
  const stateFilter = root.dataset.stateFilter || "";
  let cursor = root.dataset.cursor;

  function say(text) { if (status) status.textContent = "live updates: " + text; }

  function fill(el, change) {
    el.dataset.state = change.state;
    el.querySelectorAll("[data-field]").forEach(function (cell) {
      const field = cell.dataset.field;
      if (field in change.display) {
        cell.textContent = change.display[field];
        if (field !== "state") cell.title = change.exact[field];
      }
    });
    el.querySelectorAll("[data-progress]").forEach(function (bar) { bar.value = change.progress; });
    el.querySelectorAll("[data-show-in-state]").forEach(function (part) {
      part.hidden = part.dataset.showInState !== change.state;
    });
  }

  function addRow(change) {
    const template = document.getElementById("row-template");
    const rows = document.getElementById("rows");
    if (!template || !rows) return null;
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.delivery = change.delivery_id;
    const link = row.querySelector("[data-link]");
    link.textContent = change.delivery_id;
    link.href = "/deliveries/" + encodeURIComponent(change.delivery_id);
    rows.appendChild(row);
    const empty = document.getElementById("empty");
    if (empty) empty.hidden = true;
    return row;
  }

  function apply(change) {
    if (only && change.delivery_id !== only) return;
    const shown = !stateFilter || change.state === stateFilter;
    let el = root.querySelector('[data-delivery="' + CSS.escape(change.delivery_id) + '"]');
    if (el && !shown && !only) { el.remove(); count(); return; }
    if (!el && shown && !only) { el = addRow(change); count(); }
    if (el) fill(el, change);
  }

  function count() {
    const shown = document.getElementById("count");
    if (shown) shown.textContent = root.querySelectorAll("#rows [data-delivery]").length;
  }

  function query() {
    return "?cursor=" + encodeURIComponent(cursor) + (only ? "&delivery=" + encodeURIComponent(only) : "");
  }

  function poll() {
    say("polling");
    fetch("/events" + query(), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (body) { body.changes.forEach(apply); cursor = body.cursor; })
      .catch(function () { say("polling (retrying)"); })
      .finally(function () { setTimeout(poll, 2000); });
  }

  function stream() {
    if (!window.EventSource) { poll(); return; }
    const source = new EventSource("/events" + query());
    let failures = 0;
    source.onopen = function () { failures = 0; say("on"); };
    source.addEventListener("kpi", function (e) {
      apply(JSON.parse(e.data));
      cursor = e.lastEventId || cursor;
    });
    source.onerror = function () {
      failures += 1;
      say("reconnecting");
      if (failures >= 3) { source.close(); poll(); } // a proxy that buffers streams: fall back to polling
    };
  }

  stream();
})();
