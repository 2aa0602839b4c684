// moat's dashboard works without this script; it only counts down.
"use strict";
(function () {
  var clocks = document.querySelectorAll("[data-deadline]");
  if (!clocks.length) return;
  function tick() {
    var now = Date.now();
    clocks.forEach(function (el) {
      var left = Math.max(0, Math.round((Number(el.dataset.deadline) - now) / 1000));
      el.textContent = left > 0 ? "(rolls back in " + left + " s)" : "(rolled back: reload the page)";
    });
  }
  tick();
  setInterval(tick, 1000);
})();
