// Live refresh without a reload: every element with data-live="URL" gets its inner HTML
// replaced by what URL returns (a server-rendered fragment), every data-every seconds
// (default 5), while the tab is visible. No framework, no build step.
(function () {
  "use strict";
  function refresh(element) {
    if (document.hidden) { return; }
    fetch(element.dataset.live, { credentials: "same-origin", headers: { "x-requested-with": "live" } })
      .then(function (response) {
        if (!response.ok) { throw new Error(response.status + " " + response.statusText); }
        return response.text();
      })
      .then(function (html) {
        // <details data-keep="KEY"> a person opened stay open across the swap.
        var open = Array.prototype.map.call(
          element.querySelectorAll("details[open][data-keep]"),
          function (details) { return details.dataset.keep; });
        element.innerHTML = html;
        element.querySelectorAll("details[data-keep]").forEach(function (details) {
          if (open.indexOf(details.dataset.keep) >= 0) { details.open = true; }
        });
        element.dataset.refreshedAt = String(Date.now());
        element.removeAttribute("data-stale");
      })
      .catch(function () { element.setAttribute("data-stale", "true"); });
  }
  function start() {
    document.querySelectorAll("[data-live]").forEach(function (element) {
      var seconds = Number(element.dataset.every || "5");
      window.setInterval(function () { refresh(element); }, Math.max(1, seconds) * 1000);
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else { start(); }
})();
