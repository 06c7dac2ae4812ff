// Live refresh of the status page: fetch its JSON twin every few seconds and put each value into
// the element that shows it (data-field="ombacksync.state"). textContent only: never HTML.
(function () {
  "use strict";
  var EVERY = 3000, CHART_EVERY = 60000, lastChart = Date.now();
  var live = document.getElementById("live");
  function lookup(data, path) {
    return path.split(".").reduce(function (v, k) { return v == null ? v : v[k]; }, data);
  }
  function refresh() {
    fetch("/ui/status?format=json", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (data) {
        document.querySelectorAll("[data-field]").forEach(function (el) {
          var v = lookup(data.status, el.getAttribute("data-field"));
          el.textContent = v == null ? "" : Array.isArray(v) ? v.join("; ") : String(v);
          if (el.hasAttribute("data-alarm")) { el.classList.toggle("alarm", Number(v) > 0); }
        });
        live.textContent = "live " + new Date().toLocaleTimeString();
        live.classList.remove("stale");
        if (Date.now() - lastChart > CHART_EVERY) {
          lastChart = Date.now();
          var chart = document.getElementById("chart");
          chart.src = "/ui/status/chart.svg?window=" + chart.getAttribute("data-window") + "&t=" + lastChart;
        }
      })
      .catch(function () { live.textContent = "not updating"; live.classList.add("stale"); })
      .finally(function () { setTimeout(refresh, EVERY); });
  }
  setTimeout(refresh, EVERY);
})();
