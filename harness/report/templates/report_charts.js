// Stacked uPlot charts on one time axis; faults shaded and labelled, time to detect/recover marked.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("chart-data").textContent);
  // Okabe-Ito: distinguishable with the common colour-vision deficiencies.
  var C = { blue: "#0072B2", orange: "#E69F00", red: "#D55E00", green: "#009E73", pink: "#CC79A7",
            sky: "#56B4E9", black: "#1b1f24", grey: "#6e7781" };
  var reasonColours = [C.red, C.orange, C.blue, C.pink, C.green, C.sky, C.black, C.grey, "#8c564b"];
  var xMax = Math.max(D.end, D.t.length ? D.t[D.t.length - 1] + D.step_s : 1);
  var charts = [];

  function fmt(v, unit) {
    if (v == null) return "–";
    return v.toLocaleString("en-US", { maximumFractionDigits: 1 }) + (unit || "");
  }

  function faultPlugin(labels) {
    function x(u, v) { return u.valToPos(v, "x", true); }
    return {
      hooks: {
        drawClear: function (u) {
          var ctx = u.ctx, top = u.bbox.top, h = u.bbox.height, drawn = 0;
          ctx.save();
          D.faults.forEach(function (f) {
            var a = x(u, f.from), b = x(u, f.to == null ? xMax : f.to);
            ctx.fillStyle = "rgba(213, 94, 0, 0.13)";
            ctx.fillRect(a, top, Math.max(b - a, 1), h);
            drawn += 1;
            ctx.strokeStyle = "#d55e00";
            ctx.lineWidth = 1;
            ctx.beginPath(); ctx.moveTo(a, top); ctx.lineTo(a, top + h); ctx.stroke();
          });
          ctx.restore();
          if (labels) document.body.setAttribute("data-fault-windows", String(drawn));
        },
        draw: function (u) {
          var ctx = u.ctx, top = u.bbox.top, h = u.bbox.height, px = devicePixelRatio || 1;
          ctx.save();
          // uPlot leaves its own text alignment on the context: set ours.
          ctx.textAlign = "left";
          ctx.textBaseline = "alphabetic";
          ctx.font = (11 * px) + "px system-ui, sans-serif";
          ctx.setLineDash([4 * px, 3 * px]);
          function marker(at, colour, text) {
            var p = x(u, at);
            ctx.strokeStyle = colour; ctx.fillStyle = colour;
            ctx.beginPath(); ctx.moveTo(p, top); ctx.lineTo(p, top + h); ctx.stroke();
            ctx.fillText(text, p + 3 * px, top + h - 4 * px);
          }
          D.faults.forEach(function (f) { if (f.detect != null) marker(f.from + f.detect, C.red, "D"); });
          D.recoveries.forEach(function (r) { if (r.recovered != null) marker(r.recovered, C.green, "R"); });
          ctx.setLineDash([]);
          if (labels) {
            ctx.fillStyle = "#7a2e00";
            ctx.font = "600 " + (11 * px) + "px system-ui, sans-serif";
            D.faults.forEach(function (f, i) {
              ctx.fillText(f.name, x(u, f.from) + 4 * px, top + (12 + 13 * (i % 3)) * px);
            });
          }
          ctx.restore();
        },
      },
    };
  }

  function make(id, series, data, opts) {
    var el = document.getElementById(id);
    if (!el) return;
    var o = {
      width: Math.max(el.clientWidth || 900, 320),
      height: opts.height || 200,
      cursor: { sync: { key: "run" }, drag: { x: false, y: false } },
      scales: { x: { time: false, range: [0, xMax] }, y: opts.y || {} },
      axes: [
        { label: opts.xlabel ? "seconds since the first payment" : undefined, values: function (u, v) { return v.map(function (s) { return s + " s"; }); } },
        { label: opts.unit || "", size: 64, values: function (u, v) { return v.map(function (n) { return fmt(n, opts.tick || ""); }); } },
      ],
      series: [{ label: "time", value: function (u, v) { return v == null ? "–" : v.toFixed(1) + " s"; } }].concat(series),
      plugins: [faultPlugin(!!opts.labels)],
      legend: { live: true },
    };
    charts.push(new uPlot(o, data, el));
  }

  function line(label, colour, unit, extra) {
    var s = { label: label, stroke: colour, width: 1.5, spanGaps: false,
              value: function (u, v) { return fmt(v, unit); } };
    for (var k in extra || {}) s[k] = extra[k];
    return s;
  }

  var thrSeries = [line("payments/s", C.blue, "/s", { fill: "rgba(0,114,178,0.08)" })], thrData = [D.t, D.throughput];
  if (D.throughput_min) {  // merged points: the slowest second of each beside the mean
    thrSeries.push(line("slowest second", C.grey, "/s", { width: 1 }));
    thrData.push(D.throughput_min);
  }
  make("chart-throughput", thrSeries,
       thrData, { labels: true, unit: "payments/s", y: { range: function (u, lo, hi) { return [0, Math.max(hi || 0, 1) * 1.1]; } } });
  var target = D.t.map(function () { return D.slo_pct; });
  make("chart-success", [line("success %", C.green, " %"), line("target %", C.grey, " %", { dash: [6, 4], width: 1 })],
       [D.t, D.success_pct, target], { unit: "%", y: { range: function (u, lo) { return [Math.min(lo == null ? 90 : lo, 90), 100.5]; } } });
  var slo = D.t.map(function () { return D.latency_slo_ms; });
  make("chart-latency", [line("p50", C.sky, " ms"), line("p95", C.orange, " ms"), line("p99", C.red, " ms"),
                         line("SLO", C.grey, " ms", { dash: [6, 4], width: 1 })],
       [D.t, D.p50, D.p95, D.p99, slo], { unit: "ms" });
  var reasons = Object.keys(D.errors);
  if (reasons.length) {
    // Business rejections (insufficient funds, closed account...) are correct answers: drawn thin and dashed,
    // so the technical failures a fault causes stand out.
    make("chart-errors", reasons.map(function (r, i) {
           var business = D.business.indexOf(r) >= 0;
           return line(r + (business ? " (business)" : ""), reasonColours[i % reasonColours.length], "/s",
                       business ? { dash: [5, 3], width: 1 } : { width: 2 });
         }),
         [D.t].concat(reasons.map(function (r) { return D.errors[r]; })), { unit: "per s" });
  } else {
    document.getElementById("chart-errors").innerHTML = "<p class='muted small'>No failure or rejection in this run.</p>";
  }
  if (D.anomalies.t.length) {
    make("chart-anomalies", [line("open anomalies", C.pink, "", { fill: "rgba(204,121,167,0.15)", paths: uPlot.paths.stepped({ align: 1 }) })],
         [D.anomalies.t, D.anomalies.open], { unit: "payments", xlabel: true, y: { range: function (u, lo, hi) { return [0, Math.max(hi || 0, 1)]; } } });
  } else {
    document.getElementById("chart-anomalies").innerHTML = "<p class='muted small'>No consistency samples in this run directory.</p>";
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (u) { u.setSize({ width: Math.max(u.root.parentNode.clientWidth, 320), height: u.height }); });
    }, 150);
  });
  // Print at the paper's width rather than the screen's.
  window.addEventListener("beforeprint", function () {
    charts.forEach(function (u) { u.setSize({ width: 680, height: u.height }); });
  });
  document.body.setAttribute("data-charts", String(charts.length));
})();
