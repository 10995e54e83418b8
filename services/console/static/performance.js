// Performance chart: daily spend (bars) with cost per lead and cost per signed case (lines), from the JSON the
// page embeds in #chart-data. Days whose leads may still sign are shaded. No inline script: CSP allows this file.
(function () {
  "use strict";

  function draw() {
    var holder = document.getElementById("chart");
    var source = document.getElementById("chart-data");
    if (!holder || !source || typeof uPlot === "undefined") {
      return;
    }
    var data = JSON.parse(source.textContent);
    var money = function (u, v) { return v == null ? "—" : v.toFixed(2) + " " + data.currency; };
    var shade = {
      hooks: {
        drawClear: [function (u) {
          var left = u.valToPos(data.maturing_from, "x", true);
          var right = u.bbox.left + u.bbox.width;
          if (left >= right) {
            return;
          }
          left = Math.max(left, u.bbox.left);
          u.ctx.save();
          u.ctx.fillStyle = "rgba(247, 144, 9, 0.08)";
          u.ctx.fillRect(left, u.bbox.top, right - left, u.bbox.height);
          u.ctx.restore();
        }],
      },
    };
    var options = {
      width: holder.clientWidth || 900,
      height: 280,
      plugins: [shade],
      scales: {
        x: { time: true, range: function (u, min, max) { return [min - 43200, max + 43200]; } },
        spend: { range: function (u, min, max) { return [0, Math.max(max, 1) * 1.1]; } },
        cost: { range: function (u, min, max) { return [0, Math.max(max || 0, 1) * 1.1]; } },
      },
      axes: [
        { space: 50, incrs: [86400, 2 * 86400, 7 * 86400], values: function (u, ticks) {
          return ticks.map(function (t) {
            return new Date(t * 1000).toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
          });
        } },
        { scale: "spend", label: "Spend (" + data.currency + ")" },
        { scale: "cost", side: 1, label: "Cost (" + data.currency + ")", grid: { show: false } },
      ],
      series: [
        {},
        { label: "Spend", scale: "spend", value: money, fill: "rgba(47, 91, 234, 0.35)", stroke: "#2f5bea",
          paths: uPlot.paths.bars({ size: [0.6, 40] }), points: { show: false } },
        { label: "Cost per lead", scale: "cost", value: money, stroke: "#12b76a", width: 2, spanGaps: true },
        { label: "Cost per signed case", scale: "cost", value: money, stroke: "#d92d20", width: 2, dash: [6, 4],
          spanGaps: true },
      ],
    };
    new uPlot(options, [data.days, data.spend, data.cpl, data.cpsc], holder);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
