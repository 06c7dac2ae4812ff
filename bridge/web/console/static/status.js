// Live refresh of the status page: fetch its JSON twin every few seconds and put each value into
// the element that shows it (data-field="ombacksync.state" from the status, data-view="headline.busy"
// from the page's own figures), and rebuild every table (data-table="nodes") from the rows the
// server made for it. textContent only: never HTML. When the refresh fails or the event core is
// away, a banner says so and since when, and the figures are greyed until it answers again.
(function () {
  "use strict";
  var EVERY = 3000, CHART_EVERY = 60000, lastChart = Date.now(), lastGood = new Date();
  var live = document.getElementById("live"), stale = document.getElementById("stale");
  function lookup(data, path) {
    return path.split(".").reduce(function (v, k) { return v == null ? v : v[k]; }, data);
  }
  function show(el, v, none) {
    el.textContent = v == null ? none : Array.isArray(v) ? v.join("; ") : String(v);
    if (el.hasAttribute("data-alarm")) { el.classList.toggle("alarm", Number(v) > 0); }
  }
  function cell(c, label) {
    var td = document.createElement("td"), into = td;
    td.setAttribute("data-label", label || "");
    if (c.href) { into = document.createElement("a"); into.setAttribute("href", c.href); td.appendChild(into); }
    into.textContent = c.text;
    if (c.alarm) { td.className = "alarm"; }
    return td;
  }
  function table(el, t) {
    var body = el.tBodies[0], rows = document.createDocumentFragment();
    var heads = Array.prototype.map.call(el.tHead.rows[0].cells, function (th) { return th.textContent; });
    t.rows.forEach(function (r) {
      var tr = document.createElement("tr");
      if (r["class"]) { tr.className = r["class"]; }
      r.cells.forEach(function (c, i) { tr.appendChild(cell(c, heads[i])); });
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    el.hidden = !t.shown;
    var box = document.querySelector("[data-box='" + el.getAttribute("data-table") + "']");
    if (box) { box.hidden = !t.shown; }
  }
  function banner(text) {
    stale.textContent = text;
    stale.hidden = !text;
    document.body.classList.toggle("stale", !!text);
  }
  function apply(data) {
    document.querySelectorAll("[data-field]").forEach(function (el) {
      var v = lookup(data.status, el.getAttribute("data-field"));
      show(el, v, "");
    });
    document.querySelectorAll("[data-view]").forEach(function (el) { show(el, lookup(data.view, el.getAttribute("data-view")), "–"); });
    document.querySelectorAll("table[data-table]").forEach(function (el) {
      var t = data.view.tables[el.getAttribute("data-table")];
      if (t) { table(el, t); }
    });
    banner(data.outage ? outage(data.outage) + " This page shows the supervisor's own view; counts that need " +
                         "the event core wait for it." : "");
  }
  function outage(out) {
    return "The event core cannot be reached since " + new Date(out.since * 1000).toLocaleTimeString() +
           (out.reason ? ": " + out.reason : "") + ".";
  }
  function refresh() {
    fetch("/ui/status?format=json", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        return r.json().catch(function () { throw new Error("HTTP " + r.status); }).then(function (data) {
          if (!r.ok) { throw new Error(data.outage ? outage(data.outage) : (data.error || ("HTTP " + r.status))); }
          return data;
        });
      })
      .then(function (data) {
        apply(data);
        lastGood = new Date();
        live.textContent = "live " + lastGood.toLocaleTimeString();
        live.classList.remove("stale");
        var chart = document.getElementById("chart");
        if (chart && Date.now() - lastChart > CHART_EVERY) {
          lastChart = Date.now();
          chart.src = "/ui/status/chart.svg?window=" + chart.getAttribute("data-window") + "&t=" + lastChart;
        }
      })
      .catch(function (e) {
        live.textContent = "not updating";
        live.classList.add("stale");
        var why = (e.message || "the console does not answer").replace(/\.?$/, ".");
        banner("Not updating since " + lastGood.toLocaleTimeString() + ": " + why + " What this page shows may be out of date.");
      })
      .finally(function () { setTimeout(refresh, EVERY); });
  }
  setTimeout(refresh, EVERY);
})();
