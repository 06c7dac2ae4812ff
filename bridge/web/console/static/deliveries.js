// The deliveries list: the box in the header ticks or clears every row's box that can be chosen.
(function () {
  "use strict";
  var all = document.getElementById("select-all");
  if (!all) { return; }
  all.addEventListener("change", function () {
    document.querySelectorAll("#chosen input[name=id]:not(:disabled)").forEach(function (box) {
      box.checked = all.checked;
    });
  });
})();
