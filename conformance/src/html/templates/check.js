// The page checks itself once laid out: the grid holds the cells the report counted, and each
// chart its bars, with sizes. The verdict goes in <html data-selfcheck> for ci/report-check to
// read back; a problem is a console error as well.
(function () {
  var problems = [];
  var grid = document.querySelector("table.grid");
  if (grid) {
    var want = Number(grid.getAttribute("data-cells"));
    var got = grid.querySelectorAll("td.cell").length;
    if (got !== want) problems.push("grid: " + got + " cells, expected " + want);
  }
  document.querySelectorAll("svg.chart").forEach(function (svg, i) {
    var bars = svg.querySelectorAll("rect.bar");
    var want = Number(svg.getAttribute("data-bars"));
    if (bars.length !== want) problems.push("chart " + i + ": " + bars.length + " bars, expected " + want);
    bars.forEach(function (bar) {
      var box = bar.getBBox();
      if (!(box.width >= 0 && box.height > 0)) problems.push("chart " + i + ": a bar without a size");
    });
  });
  document.documentElement.setAttribute("data-selfcheck", problems.length ? problems.join("; ") : "ok");
  if (problems.length) console.error("report self-check: " + problems.join("; "));
})();
