// Live updates of the Deployment view: server-sent events, else polling. Figures arrive formatted by the server.
(function () {
  "use strict";
  const root = document.querySelector("[data-events]");
  const status = document.getElementById("live-status");
  if (!root) { if (status) status.hidden = true; return; }
  const only = root.dataset.only || null; // the delivery page follows one delivery
  const stateFilter = root.dataset.stateFilter || "";
  const search = root.dataset.search || ""; // the server sends only changes of ids that match it
  const firstPage = root.dataset.firstPage === "yes"; // newest change first: changes come in at the top
  const pageSize = parseInt(root.dataset.pageSize || "50", 10);
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
    if (change.chart) drawChart(change.chart);
  }

  function drawChart(chart) {
    document.querySelectorAll("[data-series]").forEach(function (line) {
      line.setAttribute("points", chart.series[line.dataset.series] || "");
    });
    document.querySelectorAll("[data-chart]").forEach(function (label) {
      label.textContent = chart[label.dataset.chart];
    });
    document.querySelectorAll("[data-chart-latest]").forEach(function (label) {
      label.textContent = chart.latest[label.dataset.chartLatest];
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
    rows.prepend(row);
    const empty = document.getElementById("empty");
    if (empty) empty.hidden = true;
    return row;
  }

  // What is on screen follows the changes: a row on screen is refreshed (and, on the first page, moves to the top,
  // as the list is newest change first); a delivery not on screen enters the first page at the top, pushing its
  // last row off; on older pages it is only counted as a newer change.
  function apply(change) {
    if (only) { if (change.delivery_id === only) fill(root.querySelector("[data-delivery]") || root, change); return; }
    const shown = !stateFilter || change.state === stateFilter;
    const rows = document.getElementById("rows");
    let el = root.querySelector('#rows [data-delivery="' + CSS.escape(change.delivery_id) + '"]');
    if (el && !shown) { el.remove(); return; }
    if (!shown) return;
    if (!firstPage) {
      if (el) fill(el, change); else document.getElementById("newer").hidden = false;
      return;
    }
    if (el) rows.prepend(el); else el = addRow(change);
    if (!el) return;
    fill(el, change);
    while (rows.children.length > pageSize) rows.lastElementChild.remove();
  }

  function query() {
    return "?cursor=" + encodeURIComponent(cursor) +
      (only ? "&delivery=" + encodeURIComponent(only) : "") + (search ? "&q=" + encodeURIComponent(search) : "");
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
