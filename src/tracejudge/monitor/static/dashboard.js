/* tracejudge dashboard: draws a QualitySummary (from /api/summary, or inlined by `tracejudge report --format html`).
   Every number shown carries data-metric (its path in the summary) and data-format, so a test can compare
   the page with the JSON API. */
(function () {
  "use strict";
  var PALETTE = ["#2f6fde", "#e8833a", "#2e9e6b", "#c0392b", "#8e5cc4", "#1f9bb4", "#b8860b", "#d6458a", "#6b7a8f", "#3d9c3d"];
  var BAND_ORDER = ["Excellent", "Good", "Acceptable", "Needs improvement", "Unacceptable"];
  var BAND_COLORS = ["#1e8a5a", "#52b788", "#e9c46a", "#f08a4b", "#d64545"];
  var charts = [];

  Chart.defaults.animation = false;
  Chart.defaults.responsive = true;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif';
  Chart.defaults.font.size = 11.5;
  Chart.defaults.color = "#475569";
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  function fmt(value, kind) {
    if (value === null || value === undefined) return "-";
    if (kind === "pct") return (value * 100).toFixed(1) + "%";
    if (kind === "num") return Number(value).toFixed(3);
    if (kind === "usd") return "$" + Number(value).toFixed(4);
    return String(value);
  }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function metric(tag, path, value, kind, extra) {
    var attrs = Object.assign({ "data-metric": path, "data-format": kind }, extra || {});
    return el(tag, attrs, fmt(value, kind));
  }
  function color(i) { return PALETTE[i % PALETTE.length]; }
  function label(iso, bucket) {
    var d = new Date(iso);
    var opts = bucket === "hour" ? { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "UTC" }
                                 : { month: "short", day: "numeric", timeZone: "UTC" };
    return d.toLocaleString("en-GB", opts);
  }
  function canvas(name) { return document.querySelector('canvas[data-chart="' + name + '"]'); }
  function draw(target, config) {
    var c = typeof target === "string" ? canvas(target) : target;
    var chart = new Chart(c, config);
    charts.push(chart);
    return chart;
  }
  var pctAxis = { min: 0, max: 1, ticks: { callback: function (v) { return Math.round(v * 100) + "%"; } } };
  var scoreAxis = { min: 0, max: 1 };

  function series(points, starts) {
    var by = {};
    (points || []).forEach(function (p) { by[p.start] = p; });
    return starts.map(function (s) { return by[s] ? by[s].failure_rate : null; });
  }

  function renderKpis(s) {
    var box = document.getElementById("kpis");
    box.innerHTML = "";
    var t = s.totals;
    var items = [
      ["Traces judged", "totals.traces", t.traces, "int", ""],
      ["Mean score", "totals.mean", t.mean, "num", ""],
      ["Below threshold", "totals.failure_rate", t.failure_rate, "pct", t.failure_rate > 0.2 ? "bad" : ""],
      ["Gate pass rate", "totals.gate_pass_rate", t.gate_pass_rate, "pct", t.gate_pass_rate !== null && t.gate_pass_rate < 0.9 ? "bad" : "good"],
      ["Judge errors", "totals.errors", t.errors, "int", t.errors ? "bad" : ""],
      t.cost_usd > 0 ? ["Judge cost", "totals.cost_usd", t.cost_usd, "usd", ""] : ["Judge results", "totals.results", t.results, "int", ""],
    ];
    if (s.tool_totals) {  // tool calls of the judged traces (agents)
      var tt = s.tool_totals;
      items.push(["Tool calls", "tool_totals.calls", tt.calls, "int", ""]);
      items.push(["Tool calls failed", "tool_totals.failure_rate", tt.failure_rate, "pct", tt.failure_rate > 0.1 ? "bad" : ""]);
    }
    if (s.sessions) {  // conversations judged as a whole (session judges)
      var f = s.sessions;
      items.push(["Sessions judged", "sessions.sessions", f.sessions, "int", ""]);
      items.push(["Sessions failing", "sessions.failure_rate", f.failure_rate, "pct", f.failure_rate > 0.2 ? "bad" : ""]);
      f.judges.forEach(function (j, i) {
        items.push([j.judge + " (mean)", "sessions.judges." + i + ".mean", j.mean, "num", ""]);
      });
    }
    items.forEach(function (it) {
      var card = el("div", { class: "kpi" });
      card.appendChild(el("div", { class: "label" }, it[0]));
      card.appendChild(metric("div", it[1], it[2], it[3], { class: "value " + it[4] }));
      box.appendChild(card);
    });
  }

  function renderCharts(s) {
    var starts = s.buckets.map(function (b) { return b.start; });
    var labels = starts.map(function (x) { return label(x, s.bucket); });
    var line = function (datasets, yAxis) {
      return { type: "line", data: { labels: labels, datasets: datasets },
               // straight segments (a smoothed curve suggests values the data never had); the x axis is offset so
               // that one bucket is drawn in the middle, not squeezed against the axis
               options: { spanGaps: true, elements: { point: { radius: labels.length < 3 ? 4 : 2.5 }, line: { tension: 0, borderWidth: 2 } },
                          scales: { x: { offset: true }, y: yAxis }, plugins: { legend: { position: "bottom" } } } };
    };
    draw("failure-judge", line(s.judges.map(function (j, i) {
      return { label: j.judge, data: series(j.series, starts), borderColor: color(i), backgroundColor: color(i) };
    }), pctAxis));
    var nodes = s.nodes.slice().sort(function (a, b) { return b.count - a.count; }).slice(0, 8);
    draw("failure-node", line(nodes.map(function (n, i) {
      return { label: n.node + " / " + n.judge, data: series(n.series, starts), borderColor: color(i), backgroundColor: color(i) };
    }), pctAxis));
    draw("gate", line([{ label: "gate pass rate", data: s.buckets.map(function (b) { return b.gate_pass_rate; }),
                         borderColor: "#2e9e6b", backgroundColor: "rgba(46,158,107,.15)", fill: true }], pctAxis));

    var nodeNames = Array.from(new Set(s.nodes.map(function (n) { return n.node; })));
    var judgeNames = Array.from(new Set(s.nodes.map(function (n) { return n.judge; })));
    draw("node-mean", { type: "bar", data: { labels: nodeNames, datasets: judgeNames.map(function (j, i) {
      return { label: j, backgroundColor: color(i), skipNull: true, data: nodeNames.map(function (node) {
        var hit = s.nodes.find(function (n) { return n.node === node && n.judge === j; });
        return hit ? hit.mean : null; }) };
    }) }, options: { scales: { y: scoreAxis }, plugins: { legend: { position: "bottom" } } } });

    var worst = s.worst_nodes.length ? s.worst_nodes : [];
    draw("worst", { type: "bar", data: { labels: worst.map(function (w) { return w.node + " / " + w.judge; }),
      datasets: [{ label: "share below threshold", backgroundColor: "#d64545", data: worst.map(function (w) { return w.failure_rate; }) }] },
      options: { indexAxis: "y", scales: { x: pctAxis }, plugins: { legend: { display: false } } } });

    var bands = BAND_ORDER.filter(function (b) { return s.bands[b] !== undefined; });
    draw("bands", { type: "doughnut", data: { labels: bands, datasets: [{ data: bands.map(function (b) { return s.bands[b]; }),
      backgroundColor: bands.map(function (b) { return BAND_COLORS[BAND_ORDER.indexOf(b)]; }) }] },
      options: { plugins: { legend: { position: "right" } } } });

    var dims = ["correctness", "relevance", "coherence", "completeness", "safety"];
    var dimLabels = dims.map(function (d) { return s.dimensions[d] === undefined ? d : d + " " + s.dimensions[d].toFixed(2); });
    draw("radar", { type: "radar", data: { labels: dimLabels, datasets: [{ label: "mean score", data: dims.map(function (d) {
      return s.dimensions[d] === undefined ? null : s.dimensions[d]; }), borderColor: "#2f6fde", backgroundColor: "rgba(47,111,222,.18)", pointRadius: 3 }] },
      options: { scales: { r: { min: 0, max: 1, ticks: { display: false, stepSize: 0.25 }, pointLabels: { font: { size: 11.5 } } } }, plugins: { legend: { display: false } } } });

    var codes = Object.keys(s.error_codes);
    draw("errors", { type: "bar", data: { labels: labels, datasets: codes.map(function (code, i) {
      return { label: code, backgroundColor: color(i + 3), data: s.buckets.map(function (b) { return b.errors[code] || 0; }) };
    }) }, options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
                     plugins: { legend: { position: "bottom" } } } });

    var costCard = document.getElementById("cost-card");
    costCard.hidden = !(s.totals.cost_usd > 0);
    if (!costCard.hidden) {
      draw("cost", { type: "bar", data: { labels: labels, datasets: [{ label: "USD", backgroundColor: "#8e5cc4",
        data: s.buckets.map(function (b) { return b.cost_usd; }) }] }, options: { plugins: { legend: { display: false } } } });
    }
    renderTools(s, starts, labels, line);
    renderHistograms(s);
  }

  // tool calls per tool over time (stacked bars) and the share of them that failed (lines), when traces made any
  function renderTools(s, starts, labels, line) {
    var tools = s.tools || [];
    ["tools-card", "tool-failure-card", "tool-table-card"].forEach(function (id) { document.getElementById(id).hidden = !tools.length; });
    if (!tools.length) return;
    function at(points, key) {
      var by = {};
      points.forEach(function (p) { by[p.start] = p; });
      return starts.map(function (x) { return by[x] ? by[x][key] : (key === "calls" ? 0 : null); });
    }
    draw("tools", { type: "bar", data: { labels: labels, datasets: tools.map(function (t, i) {
      return { label: t.tool, backgroundColor: color(i), data: at(t.series, "calls") };
    }) }, options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
                     plugins: { legend: { position: "bottom" } } } });
    draw("tool-failure", line(tools.map(function (t, i) {
      return { label: t.tool, data: at(t.series, "failure_rate"), borderColor: color(i), backgroundColor: color(i) };
    }), pctAxis));
    var box = document.getElementById("tool-table");
    box.innerHTML = "";
    box.appendChild(table([["tool"], ["calls", 1], ["failed", 1], ["failure rate", 1], ["retries", 1], ["mean ms", 1], ["p95 ms", 1]],
      tools.map(function (t, i) {
        var p = "tools." + i + ".";
        return [td(t.tool), mtd(p + "calls", t.calls, "int"), mtd(p + "failed", t.failed, "int", t.failed ? "bad" : ""),
                mtd(p + "failure_rate", t.failure_rate, "pct", t.failure_rate > 0.2 ? "bad" : ""), mtd(p + "retries", t.retries, "int"),
                mtd(p + "mean_ms", t.mean_ms, "int"), mtd(p + "p95_ms", t.p95_ms, "int")];
      })));
  }

  var thresholdLine = {
    id: "threshold",
    afterDatasetsDraw: function (chart, args, opts) {
      if (opts.value === null || opts.value === undefined) return;
      var x = chart.scales.x, area = chart.chartArea;
      var px = x.left + (x.right - x.left) * opts.value;
      var ctx = chart.ctx;
      ctx.save(); ctx.strokeStyle = "#111827"; ctx.setLineDash([4, 3]); ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.moveTo(px, area.top); ctx.lineTo(px, area.bottom); ctx.stroke(); ctx.restore();
    },
  };

  function renderHistograms(s) {
    var box = document.getElementById("hists");
    box.innerHTML = "";
    var bins = ["0", ".1", ".2", ".3", ".4", ".5", ".6", ".7", ".8", ".9"];
    s.nodes.forEach(function (n, i) {
      var cell = el("div", { class: "hist" });
      var h = el("h3", {}, n.node + " / " + n.judge + " ");
      h.appendChild(el("span", {}, "n=" + n.count + (n.threshold !== null ? ", threshold " + n.threshold : "")));
      cell.appendChild(h);
      var wrap = el("div", { class: "chart" });
      var c = el("canvas", { "data-chart": "hist-" + i });
      wrap.appendChild(c); cell.appendChild(wrap); box.appendChild(cell);
      // each bin split in two stacked parts: the results below their threshold (red) and the rest (blue), so a
      // bin the threshold cuts through shows both, never all as passing
      var below = n.histogram_below || n.histogram.map(function () { return 0; });
      draw(c, { type: "bar", plugins: [thresholdLine],
        data: { labels: bins, datasets: [
          { label: "below threshold", data: below, backgroundColor: "#e58c8c", barPercentage: 1, categoryPercentage: 0.96 },
          { label: "passed", data: n.histogram.map(function (v, k) { return v - below[k]; }), backgroundColor: "#7fb8e6",
            barPercentage: 1, categoryPercentage: 0.96 }] },
        options: { scales: { x: { type: "category", stacked: true, grid: { display: false }, ticks: { font: { size: 9.5 } } },
                             y: { stacked: true, beginAtZero: true, ticks: { precision: 0, font: { size: 9.5 } } } },
                   plugins: { legend: { display: false }, threshold: { value: n.threshold } } } });
    });
  }

  function table(headers, rows) {
    var t = el("table"), head = el("tr");
    headers.forEach(function (h) { head.appendChild(el("th", { class: h[1] ? "num" : "" }, h[0])); });
    t.appendChild(head);
    rows.forEach(function (cells) { var tr = el("tr"); cells.forEach(function (c) { tr.appendChild(c); }); t.appendChild(tr); });
    return t;
  }
  function td(text, cls) { return el("td", cls ? { class: cls } : {}, text); }
  function mtd(path, value, kind, cls) { var c = metric("td", path, value, kind); c.className = "num " + (cls || ""); return c; }

  function renderTables(s) {
    var nodeBox = document.getElementById("node-table");
    nodeBox.innerHTML = "";
    nodeBox.appendChild(table([["node"], ["judge"], ["n", 1], ["mean", 1], ["p10", 1], ["p50", 1], ["p90", 1], ["variance", 1], ["threshold", 1], ["below", 1], ["errors", 1]],
      s.nodes.map(function (n, i) {
        var p = "nodes." + i + ".";
        return [td(n.node), td(n.judge), mtd(p + "count", n.count, "int"), mtd(p + "mean", n.mean, "num"), mtd(p + "p10", n.p10, "num"),
                mtd(p + "p50", n.p50, "num"), mtd(p + "p90", n.p90, "num"), mtd(p + "variance", n.variance, "num"),
                mtd(p + "threshold", n.threshold, "int"), mtd(p + "failure_rate", n.failure_rate, "pct", n.failure_rate > 0.2 ? "bad" : ""),
                mtd(p + "errors", n.errors, "int", n.errors ? "bad" : "")];
      })));
    ["bottom", "top"].forEach(function (which) {
      var list = s[which + "_traces"], box = document.getElementById(which);
      box.innerHTML = "";
      if (!list.length) { box.appendChild(el("div", { class: "muted" }, "no scored traces")); return; }
      box.appendChild(table([["trace"], ["score", 1]], list.map(function (t, i) {
        // without a known MLflow UI address (a local store) the url is a path in a UI nobody started: no link
        var cell = el("td"), a = s.links.mlflow_ui ? el("a", { href: t.url, target: "_blank", rel: "noopener", "data-trace": t.trace_id }, t.trace_id)
                                                  : el("span", { "data-trace": t.trace_id, title: t.url }, t.trace_id);
        cell.appendChild(a);
        return [cell, mtd(which + "_traces." + i + ".score", t.score, "num")];
      })));
    });
    var themes = document.getElementById("themes");
    themes.innerHTML = "";
    if (!s.themes.length) themes.appendChild(el("div", { class: "muted" }, "no recurring phrases in failing rationales"));
    else themes.appendChild(table([["judge"], ["phrase"], ["rationales", 1]], s.themes.slice(0, 8).map(function (t, i) {
      return [td(t.judge), td("\u201c" + t.phrase + "\u201d", "phrase"), mtd("themes." + i + ".count", t.count, "int")];
    })));
    if (s.llm_summary) themes.appendChild(el("p", { class: "muted", id: "llm-summary" }, "Summary (LLM): " + s.llm_summary));
    var counters = Object.keys(s.counters || {});
    var cc = document.getElementById("counters-card");
    cc.hidden = counters.length === 0;
    var cbox = document.getElementById("counters");
    cbox.innerHTML = "";
    if (counters.length) {
      cbox.appendChild(table([["counter"], ["total", 1]], counters.map(function (k) {
        return [td(k.replace(/_/g, " ")), mtd("counters." + k, s.counters[k], "int")];
      })));
      var days = Object.keys(s.daily_counters || {}).sort();
      var events = counters.filter(function (k) { return k !== "budget_spent_usd"; });
      draw("counters", { type: "bar", data: { labels: days, datasets: events.map(function (k, i) {
        return { label: k.replace(/_/g, " "), backgroundColor: color(i), data: days.map(function (d) { return s.daily_counters[d][k] || 0; }) };
      }) }, options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } }, plugins: { legend: { position: "bottom" } } } });
    }
  }

  function renderLinks(s) {
    var nav = document.getElementById("links");
    nav.innerHTML = "";
    if (s.links.mlflow_ui) {
      nav.appendChild(el("a", { href: s.links.experiment_quality, target: "_blank", rel: "noopener", id: "quality-link" }, "MLflow Quality tab \u2197"));
      nav.appendChild(el("a", { href: s.links.experiment_traces, target: "_blank", rel: "noopener" }, "MLflow traces \u2197"));
    } else {  // a local store: no UI address to guess; say how to open one
      nav.appendChild(el("span", { class: "muted", id: "open-ui" }, "MLflow UI: run " + s.links.open_ui + ", then open " +
                         s.links.experiment_quality + " at the address it prints"));
    }
    var scope = "experiment " + s.experiment_id + (s.workflow ? " \u00b7 workflow " + s.workflow : "") +
                (s.environment ? " \u00b7 " + s.environment : "") + " \u00b7 " + s.since.slice(0, 16).replace("T", " ") +
                " \u2013 " + s.until.slice(0, 16).replace("T", " ") + " UTC";
    document.getElementById("scope").textContent = scope;
    // the filters show what is drawn (the server's defaults: 7 days by day, its experiment)
    var form = document.getElementById("filters");
    if (form && form.elements.experiment && !form.elements.experiment.value) form.elements.experiment.value = s.experiment_id;
    if (form && form.elements.bucket) form.elements.bucket.value = s.bucket;
    document.getElementById("footer").textContent = "source: " + s.source + (s.source_note ? " (" + s.source_note + ")" : "") +
      (s.sessions && s.sessions.note ? " \u00b7 sessions: " + s.sessions.note : "") +
      " \u00b7 " + s.totals.results +
      " judge results \u00b7 computed in " + s.seconds + " s \u00b7 schema v" + s.schema_version;
  }

  function render(s) {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    document.getElementById("error").hidden = true;
    renderLinks(s); renderKpis(s); renderCharts(s); renderTables(s);
    window.TRACEJUDGE_RENDERED = s;
    document.body.setAttribute("data-rendered", "true");
  }

  function showError(text) {
    var box = document.getElementById("error");
    box.textContent = text;
    box.hidden = false;
    document.body.setAttribute("data-rendered", "error");
  }

  function load() {
    var params = new URLSearchParams(location.search);
    params.delete("token");
    var form = document.getElementById("filters");
    ["experiment", "workflow", "environment", "since", "bucket"].forEach(function (k) {
      if (params.get(k) !== null && form.elements[k]) form.elements[k].value = params.get(k);
    });
    fetch("api/summary?" + params.toString(), { credentials: "same-origin" }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (res) {
      if (!res.ok) showError(res.body.error || "request failed");
      else render(res.body);
    }).catch(function (err) { showError("could not load the summary: " + err); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("filters");
    if (window.TRACEJUDGE_SUMMARY) {  // the self-contained HTML report
      form.hidden = true;
      render(window.TRACEJUDGE_SUMMARY);
      return;
    }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var params = new URLSearchParams();
      Array.from(form.elements).forEach(function (f) { if (f.name && f.value) params.set(f.name, f.value); });
      history.replaceState(null, "", "?" + params.toString());
      load();
    });
    load();
  });
})();
