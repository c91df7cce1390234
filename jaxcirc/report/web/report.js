/* report.html's figures: plain JavaScript drawing SVG from the JSON block #report-data (written
 * by jaxcirc/report/html.py from the run's artifacts). No library, no network. Every figure
 * shows its numbers in text (the readout under it, cell labels, tables), so nothing depends on
 * colour; every control is a native <select> or range input, and the heatmaps and charts take
 * the arrow keys once focused. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var state = { model: D.models.length ? D.models[0].short : null };
  var figures = [];
  // Okabe-Ito: distinguishable with the common colour-vision deficiencies.
  var PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
  var DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2"];

  // ---- small DOM helpers ----------------------------------------------------------------------
  function h(tag, attrs) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function s(tag, attrs) {
    var e = document.createElementNS(NS, tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function setAttrs(e, attrs) {
    for (var k in attrs || {}) {
      if (attrs[k] === null || attrs[k] === undefined) continue;
      if (k === "text") e.textContent = attrs[k];
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
  }
  function add(e, kid) {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) kid.forEach(function (k) { add(e, k); });
    else e.appendChild(typeof kid === "string" ? document.createTextNode(kid) : kid);
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function missing(text) { return h("p", { "class": "missing", text: text }); }
  function keys(o) { return o ? Object.keys(o) : []; }
  function isNum(x) { return typeof x === "number" && isFinite(x); }

  // ---- numbers --------------------------------------------------------------------------------
  function fmt(x, nd) {
    if (!isNum(x)) return x === null || x === undefined ? "n/a" : String(x);
    if (Number.isInteger(x) && nd === 0) return String(x);
    var a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
    return x.toFixed(nd === undefined ? 3 : nd);
  }
  // Columns a later phase version added to a CSV, printed under their own names.
  function extras(names, get) {
    return (names || []).map(function (k) { var x = get(k); return "; " + k + " " + (isNum(x) ? fmt(x, Number.isInteger(x) ? 0 : 3) : x === null || x === undefined ? "n/a" : String(x)); }).join("");
  }
  function ci(lo, hi, nd) { return "[" + fmt(lo, nd) + ", " + fmt(hi, nd) + "]"; }
  // The fewest decimals (3 to 6) at which the distinct values among `xs` print distinctly, so a
  // cosine of 0.99996 is not shown equal to a band of [0.99997, 0.99999].
  function decimals(xs) {
    var v = xs.filter(isNum);
    for (var nd = 3; nd < 6; nd++) {
      var ok = v.every(function (a) { return v.every(function (b) { return a === b || a.toFixed(nd) !== b.toFixed(nd); }); });
      if (ok) return nd;
    }
    return 6;
  }
  function outside(lo, hi, blo, bhi) {
    return isNum(lo) && isNum(hi) && isNum(blo) && isNum(bhi) && (lo > bhi || hi < blo);
  }
  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    var err = (hi - lo) / n / step;
    step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }
  function tickText(v) { return Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 0.01) ? v.toPrecision(2) : String(+v.toFixed(3)); }

  // ---- colour (diverging, symmetric around 0; values are also printed) -------------------------
  function mix(a, b, t) {
    return "rgb(" + [0, 1, 2].map(function (i) { return Math.round(a[i] + (b[i] - a[i]) * t); }).join(",") + ")";
  }
  function diverging(v, maxAbs) {
    if (!isNum(v)) return "#e8e8e8";
    var t = Math.max(-1, Math.min(1, maxAbs > 0 ? v / maxAbs : 0));
    return t >= 0 ? mix([247, 247, 247], [178, 24, 43], t) : mix([247, 247, 247], [33, 102, 172], -t);
  }
  function inkOn(v, maxAbs) { return isNum(v) && maxAbs > 0 && Math.abs(v / maxAbs) > 0.55 ? "#ffffff" : "#1b1f24"; }

  // ---- controls -------------------------------------------------------------------------------
  function select(parent, label, onChange) {
    var sel = h("select", { onchange: function () { onChange(sel.value); } });
    parent.appendChild(h("label", {}, label + " ", sel));
    return {
      el: sel,
      set: function (options, value) {
        var want = options.map(function (o) { return Array.isArray(o) ? o : [o, o]; });
        var same = want.length === sel.options.length && want.every(function (o, i) { return sel.options[i].value === String(o[0]); });
        if (!same) {
          clear(sel);
          want.forEach(function (o) { sel.appendChild(h("option", { value: o[0], text: o[1] })); });
        }
        var values = want.map(function (o) { return String(o[0]); });
        sel.value = values.indexOf(String(value)) >= 0 ? String(value) : values[0] || "";
        sel.disabled = want.length < 2;
        return sel.value;
      },
    };
  }
  function slider(parent, label, onInput) {
    var out = h("output", {});
    var inp = h("input", { type: "range", min: 0, max: 0, step: 1, value: 0, oninput: function () { onInput(+inp.value); } });
    parent.appendChild(h("label", {}, label + " ", inp, out));
    return {
      el: inp,
      set: function (n, value, text) {
        inp.max = Math.max(0, n - 1);
        inp.value = Math.max(0, Math.min(n - 1, value));
        out.textContent = text;
        inp.setAttribute("aria-valuetext", text);
        return +inp.value;
      },
    };
  }

  // ---- sortable tables ------------------------------------------------------------------------
  function cellKey(td) {
    var t = td.textContent.trim();
    var m = t.match(/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?/i) || t.match(/[-+]?\d+\.?\d*(e[-+]?\d+)?/i);
    return m ? [0, parseFloat(m[0]), t] : [1, 0, t];
  }
  function makeSortable(table) {
    var ths = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(ths, function (th, col) {
      if (th.querySelector("button.sort")) return;
      var b = h("button", { "class": "sort", type: "button", title: "sort by this column" });
      while (th.firstChild) b.appendChild(th.firstChild);
      th.appendChild(b);
      b.addEventListener("click", function () {
        var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        Array.prototype.forEach.call(ths, function (x) { x.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir);
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var sign = dir === "ascending" ? 1 : -1;
        rows.sort(function (r1, r2) {
          var a = cellKey(r1.cells[col] || r1), b2 = cellKey(r2.cells[col] || r2);
          if (a[0] !== b2[0]) return a[0] - b2[0];
          if (a[0] === 0 && a[1] !== b2[1]) return sign * (a[1] - b2[1]);
          return sign * a[2].localeCompare(b2[2]);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }
  function dataTable(caption, columns, rows, note) {
    var t = h("table", { "class": "sortable" },
      caption ? h("caption", { text: caption }) : null,
      h("thead", {}, h("tr", {}, columns.map(function (c) { return h("th", { scope: "col", text: c }); }))),
      h("tbody", {}, rows.map(function (r) {
        return h("tr", {}, r.map(function (v) { return h("td", { text: typeof v === "number" ? fmt(v, Number.isInteger(v) ? 0 : 3) : v === null ? "n/a" : String(v) }); }));
      })));
    makeSortable(t);
    return [h("div", { "class": "table-wrap" }, t), note ? h("p", { "class": "table-note", text: note }) : null];
  }
  function artifactTable(caption, t) {
    if (!t) return missing(caption + ": not in this run");
    if (t.missing) return missing(t.missing);
    var consts = keys(t.constant).map(function (k) { return k + " = " + fmt(t.constant[k], Number.isInteger(t.constant[k]) ? 0 : 3); });
    var note = "From " + t.file + (t.n_rows > t.rows.length ? "; first " + t.rows.length + " of " + t.n_rows + " rows" : "") +
      (consts.length ? ". Every row: " + consts.join(", ") + "." : ".");
    return dataTable(caption, t.columns, t.rows, note);
  }

  // ---- heatmap --------------------------------------------------------------------------------
  /* o: rows, cols (labels), value(i, j), label(i, j) (the readout text), annotate(i, j) (text in
   * the cell or ""), maxAbs, onSelect(i, j), rowTitle, colTitle, cellW, cellH, name. */
  function heatmap(parent, o) {
    var cw = o.cellW || 46, ch = o.cellH || 28, ml = o.marginLeft || 64, mt = 34;
    var W = ml + o.cols.length * cw + 8, H = mt + o.rows.length * ch + 8;
    var svg = s("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, tabindex: 0, role: "img",
      "aria-label": (o.name || "heatmap") + "; arrow keys move between cells, the readout below gives each cell's numbers" });
    svg.appendChild(s("text", { x: ml + (o.cols.length * cw) / 2, y: 11, "text-anchor": "middle", text: o.colTitle || "" }));
    svg.appendChild(s("text", { x: 4, y: 11, text: o.rowTitle || "" }));
    o.cols.forEach(function (c, j) { svg.appendChild(s("text", { x: ml + j * cw + cw / 2, y: mt - 6, "text-anchor": "middle", text: c })); });
    o.rows.forEach(function (r, i) { svg.appendChild(s("text", { x: ml - 6, y: mt + i * ch + ch / 2 + 4, "text-anchor": "end", text: r })); });
    var cells = [];
    o.rows.forEach(function (_, i) {
      cells.push([]);
      o.cols.forEach(function (_, j) {
        var v = o.value(i, j);
        var g = s("g", {});
        var rect = s("rect", { "class": "cell", x: ml + j * cw, y: mt + i * ch, width: cw, height: ch, fill: diverging(v, o.maxAbs), "data-i": i, "data-j": j },
          s("title", { text: o.label(i, j) }));
        g.appendChild(rect);
        var txt = o.annotate ? o.annotate(i, j) : "";
        if (txt) g.appendChild(s("text", { x: ml + j * cw + cw / 2, y: mt + i * ch + ch / 2 + 4, "text-anchor": "middle", fill: inkOn(v, o.maxAbs), "pointer-events": "none", text: txt }));
        rect.addEventListener("mouseenter", function (e) { if (moved(e)) activate(i, j); });
        svg.appendChild(g);
        cells[i].push(g);
      });
    });
    // The active cell's outline: one rect drawn over the cells, moved, never re-ordered, so the
    // cells under a resting pointer do not change when the keyboard moves the outline.
    var ring = s("rect", { "class": "ring", width: cw, height: ch, fill: "none", stroke: "#e36209", "stroke-width": 3, "pointer-events": "none", visibility: "hidden" });
    svg.appendChild(ring);
    var cur = [0, 0];
    function activate(i, j) {
      cur = [i, j];
      ring.setAttribute("x", ml + j * cw);
      ring.setAttribute("y", mt + i * ch);
      ring.setAttribute("visibility", "visible");
      svg.setAttribute("data-active", i + "," + j);
      o.onSelect(i, j);
    }
    svg.addEventListener("keydown", function (e) {
      var d = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[e.key];
      if (!d) return;
      e.preventDefault();
      activate(Math.max(0, Math.min(o.rows.length - 1, cur[0] + d[0])), Math.max(0, Math.min(o.cols.length - 1, cur[1] + d[1])));
    });
    parent.appendChild(svg);
    return { activate: activate, svg: svg };
  }

  // ---- line chart -----------------------------------------------------------------------------
  /* o: x (numbers), xText(k), xLabel, yLabel, series [{name, y, lo, hi, dash, marker}], bands
   * [{name, lo, hi}], refs [{y, name}], mark (index drawn as a vertical line), onHover(k),
   * width, height, name. */
  function lineChart(parent, o) {
    var W = o.width || 430, H = o.height || 250, ml = 52, mr = 12, mt = 10, mb = 40;
    var xs = o.x, n = xs.length;
    var vals = [];
    function pushAll(a) { (a || []).forEach(function (v) { if (isNum(v)) vals.push(v); }); }
    (o.series || []).forEach(function (sr) { pushAll(sr.y); pushAll(sr.lo); pushAll(sr.hi); });
    (o.bands || []).forEach(function (b) { pushAll(b.lo); pushAll(b.hi); });
    (o.refs || []).forEach(function (r) { if (isNum(r.y)) vals.push(r.y); });
    if (o.zero) vals.push(0);
    var y0 = vals.length ? Math.min.apply(null, vals) : 0, y1 = vals.length ? Math.max.apply(null, vals) : 1;
    if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
    var pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad;
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    var px = function (v) { return ml + ((v - x0) / (x1 - x0)) * (W - ml - mr); };
    var py = function (v) { return mt + (1 - (v - y0) / (y1 - y0)) * (H - mt - mb); };
    var svg = s("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, tabindex: 0, role: "img",
      "aria-label": (o.name || "chart") + "; left and right arrow keys move along the x axis, the readout below gives the numbers" });
    var grid = s("g", { "class": "grid" });
    niceTicks(y0, y1, 5).forEach(function (t) {
      grid.appendChild(s("line", { x1: ml, x2: W - mr, y1: py(t), y2: py(t) }));
      svg.appendChild(s("text", { x: ml - 5, y: py(t) + 4, "text-anchor": "end", text: tickText(t) }));
    });
    svg.insertBefore(grid, svg.firstChild);
    xs.forEach(function (v, k) {
      svg.appendChild(s("text", { x: px(v), y: H - mb + 14, "text-anchor": "middle", text: o.xText ? o.xText(k) : tickText(v) }));
    });
    svg.appendChild(s("text", { x: ml + (W - ml - mr) / 2, y: H - 6, "text-anchor": "middle", text: o.xLabel || "" }));
    svg.appendChild(s("text", { x: 12, y: mt + (H - mt - mb) / 2, "text-anchor": "middle", transform: "rotate(-90 12 " + (mt + (H - mt - mb) / 2) + ")", text: o.yLabel || "" }));
    svg.appendChild(s("path", { "class": "axis", d: "M" + ml + "," + mt + "V" + (H - mb) + "H" + (W - mr), fill: "none", stroke: "#57606a" }));
    (o.bands || []).forEach(function (b) {
      segments(n, function (k) { return isNum(b.lo[k]) && isNum(b.hi[k]); }).forEach(function (seg) {
        var top = seg.map(function (k) { return px(xs[k]) + "," + py(b.hi[k]); });
        var bot = seg.slice().reverse().map(function (k) { return px(xs[k]) + "," + py(b.lo[k]); });
        svg.appendChild(s("polygon", { points: top.concat(bot).join(" "), fill: "rgba(120,120,120,0.22)", stroke: "#8c959f", "stroke-dasharray": "3 3" }, s("title", { text: b.name })));
      });
    });
    (o.refs || []).forEach(function (r) {
      if (!isNum(r.y)) return;
      svg.appendChild(s("line", { x1: ml, x2: W - mr, y1: py(r.y), y2: py(r.y), stroke: "#57606a", "stroke-dasharray": r.dash || "4 4" }, s("title", { text: r.name })));
      svg.appendChild(s("text", { x: W - mr - 2, y: py(r.y) - 3, "text-anchor": "end", fill: "#57606a", text: r.name }));
    });
    (o.series || []).forEach(function (sr, si) {
      var col = PALETTE[si % PALETTE.length];
      segments(n, function (k) { return isNum(sr.y[k]); }).forEach(function (seg) {
        svg.appendChild(s("path", { d: seg.map(function (k, q) { return (q ? "L" : "M") + px(xs[k]) + "," + py(sr.y[k]); }).join(""), fill: "none", stroke: col, "stroke-width": 2, "stroke-dasharray": DASHES[si % DASHES.length] }));
      });
      for (var k = 0; k < n; k++) {
        if (sr.lo && isNum(sr.lo[k]) && isNum(sr.hi[k])) svg.appendChild(s("line", { x1: px(xs[k]) + si * 3, x2: px(xs[k]) + si * 3, y1: py(sr.lo[k]), y2: py(sr.hi[k]), stroke: col, "stroke-width": 1.5 }));
        if (isNum(sr.y[k])) svg.appendChild(marker(si, px(xs[k]) + (sr.lo ? si * 3 : 0), py(sr.y[k]), col));
      }
    });
    var hl = s("line", { y1: mt, y2: H - mb, stroke: "#e36209", "stroke-width": 2, visibility: "hidden" });
    svg.appendChild(hl);
    var cur = isNum(o.mark) ? o.mark : 0;
    function show(k) {
      cur = k;
      hl.setAttribute("x1", px(xs[k])); hl.setAttribute("x2", px(xs[k])); hl.setAttribute("visibility", "visible");
    }
    function activate(k) {
      show(k);
      if (o.onHover) o.onHover(k);
    }
    xs.forEach(function (v, k) {
      var left = k ? (px(xs[k - 1]) + px(v)) / 2 : ml, right = k < n - 1 ? (px(v) + px(xs[k + 1])) / 2 : W - mr;
      var r = s("rect", { x: left, y: mt, width: Math.max(1, right - left), height: H - mt - mb, fill: "transparent", "data-k": k });
      r.addEventListener("mouseenter", function (e) { if (moved(e)) activate(k); });
      svg.appendChild(r);
    });
    svg.addEventListener("keydown", function (e) {
      var d = { ArrowLeft: -1, ArrowRight: 1 }[e.key];
      if (!d) return;
      e.preventDefault();
      activate(Math.max(0, Math.min(n - 1, cur + d)));
    });
    if (isNum(o.mark)) show(o.mark);
    var legend = h("div", { "class": "legend-row" });
    (o.series || []).forEach(function (sr, si) {
      var col = PALETTE[si % PALETTE.length];
      legend.appendChild(h("span", {}, s("svg", { width: 30, height: 12 }, s("line", { x1: 0, x2: 30, y1: 6, y2: 6, stroke: col, "stroke-width": 2, "stroke-dasharray": DASHES[si % DASHES.length] }), marker(si, 15, 6, col)), " " + sr.name));
    });
    (o.bands || []).forEach(function (b) {
      legend.appendChild(h("span", {}, s("svg", { width: 30, height: 12 }, s("rect", { x: 0, y: 1, width: 30, height: 10, fill: "rgba(120,120,120,0.22)", stroke: "#8c959f", "stroke-dasharray": "3 3" })), " " + b.name));
    });
    parent.appendChild(h("div", { "class": "panel", style: "width:" + (W + 12) + "px" }, o.title ? h("h4", { text: o.title }) : null, svg, legend));
    return { activate: activate, show: show, svg: svg };
  }
  // Browsers send mouse events without a move when the page changes under a resting pointer;
  // only a pointer that moved picks a cell or a point, so the keyboard's choice stays.
  var lastPointer = null;
  function moved(e) {
    var here = e.clientX + "," + e.clientY;
    if (here === lastPointer) return false;
    lastPointer = here;
    return true;
  }
  function segments(n, ok) {
    var out = [], cur = [];
    for (var k = 0; k < n; k++) {
      if (ok(k)) cur.push(k);
      else if (cur.length) { out.push(cur); cur = []; }
    }
    if (cur.length) out.push(cur);
    return out;
  }
  function marker(si, x, y, col) {
    var kind = si % 4;
    if (kind === 0) return s("circle", { cx: x, cy: y, r: 3.5, fill: col });
    if (kind === 1) return s("rect", { x: x - 3.5, y: y - 3.5, width: 7, height: 7, fill: col });
    if (kind === 2) return s("path", { d: "M" + x + "," + (y - 4.5) + "L" + (x + 4) + "," + (y + 3) + "L" + (x - 4) + "," + (y + 3) + "Z", fill: col });
    return s("path", { d: "M" + x + "," + (y - 4.5) + "L" + (x + 4.5) + "," + y + "L" + x + "," + (y + 4.5) + "L" + (x - 4.5) + "," + y + "Z", fill: col });
  }

  // ---- figures --------------------------------------------------------------------------------
  function modelData(section) {
    var d = D[section] && D[section][state.model];
    return d || { missing: section + ": nothing for model " + state.model };
  }
  function shell(body) {
    clear(body);
    var ctl = h("div", { "class": "controls" });
    var area = h("div", {});
    body.appendChild(ctl);
    body.appendChild(area);
    return { ctl: ctl, area: area };
  }
  function readout() { return h("div", { "class": "readout", role: "status", "aria-live": "polite" }); }

  /* Heads: layer x head score map per method / measure / ablation / emotion. */
  function Heads(body) {
    var ui = shell(body), sel = {}, pick = {}, keep = null;
    ["method", "measure", "ablation", "emotion"].forEach(function (k) {
      sel[k] = select(ui.ctl, k, function (v) { pick[k] = v; draw(); });
    });
    function draw() {
      clear(ui.area);
      var d = modelData("heads");
      if (d.missing) return ui.area.appendChild(missing(d.missing));
      pick.method = sel.method.set(keys(d.maps), pick.method);
      var names = keys(d.maps[pick.method]).map(function (n) { return n.split("|"); });
      ["measure", "ablation", "emotion"].forEach(function (k, i) {
        var opts = names.filter(function (p) { return i === 0 || p.slice(0, i).join("|") === [pick.measure, pick.ablation].slice(0, i).join("|"); })
          .map(function (p) { return p[i]; });
        pick[k] = sel[k].set(opts.filter(function (v, q) { return opts.indexOf(v) === q; }), pick[k]);
      });
      var m = d.maps[pick.method][[pick.measure, pick.ablation, pick.emotion].join("|")];
      if (!m) return ui.area.appendChild(missing("no scores for this choice"));
      var nL = d.n_layers, nH = d.n_heads, N = nL * nH, about = d.about[pick.method] || {};
      var maxAbs = Math.max.apply(null, m.score.filter(isNum).map(Math.abs).concat([1e-12]));
      var at = function (i, j, key) { return m[key] ? m[key][i * nH + j] : null; };
      var text = function (i, j) {
        return "L" + i + "H" + j + " (" + state.model + "; " + pick.method + ", " + pick.measure + ", " + pick.ablation + " ablation, " + pick.emotion + "): score " +
          fmt(at(i, j, "score")) + ", 95% CI " + ci(at(i, j, "ci_lo"), at(i, j, "ci_hi")) + "; rank " + fmt(at(i, j, "rank"), 0) + " of " + N +
          "; random-direction band " + ci(at(i, j, "random_dir_lo"), at(i, j, "random_dir_hi")) + (about.n_prompts ? "; " + about.n_prompts + " prompts" : "") +
          extras(d.extra, function (k) { return at(i, j, k); });
      };
      // Where the phase compared each head with the maximum over heads of a null (columns
      // clears_max_null / clears_min_null), a star marks the heads that clear it.
      var flag = function (x) { return x === true || x === "True" || x === "true" || x === 1; };
      var beyond = function (i, j) { return flag(at(i, j, "clears_max_null")) || flag(at(i, j, "clears_min_null")); };
      var hasNull = !!(m.clears_max_null || m.clears_min_null);
      var ro = readout();
      var panel = h("div", { "class": "panel" }, h("h4", { text: "score per head (" + state.model + ")" + (hasNull ? "; * = clears the max-over-heads null" : "") }));
      var rows = [], cols = [];
      for (var i = 0; i < nL; i++) rows.push("L" + i);
      for (var j = 0; j < nH; j++) cols.push("H" + j);
      var hm = heatmap(panel, {
        rows: rows, cols: cols, rowTitle: "layer", colTitle: "head", maxAbs: maxAbs, name: "head scores",
        cellW: N > 64 ? 30 : 54, cellH: N > 64 ? 22 : 30,
        value: function (i, j) { return at(i, j, "score"); }, label: text,
        annotate: function (i, j) { return N <= 64 ? fmt(at(i, j, "score"), 2) + (beyond(i, j) ? "*" : "") : beyond(i, j) ? "*" : ""; },
        onSelect: function (i, j) { keep = [i, j]; ro.textContent = text(i, j); ro.setAttribute("data-cell", "L" + i + "H" + j); },
      });
      ui.area.appendChild(h("div", { "class": "panels" }, panel, h("div", { style: "flex:1 1 20rem" }, topTable(m, nH))));
      ui.area.appendChild(ro);
      ui.area.appendChild(h("p", { "class": "hint", text: (about.definition ? "Score: " + about.definition + ". " : "") + (about.vector ? "Vectors: " + about.vector + ". " : "") + "Colour: red above 0, blue below, scaled to the largest |score|; " + (N <= 64 ? "each cell prints its score." : "hover or use the arrow keys for values.") }));
      var best = keep && keep[0] < nL && keep[1] < nH ? keep : firstRank(m, nH);
      hm.activate(best[0], best[1]);
    }
    function firstRank(m, nH) {
      var k = m.rank ? m.rank.indexOf(1) : 0;
      k = k < 0 ? 0 : k;
      return [Math.floor(k / nH), k % nH];
    }
    function topTable(m, nH) {
      var idx = m.score.map(function (_, k) { return k; }).filter(function (k) { return isNum(m.rank && m.rank[k]); });
      idx.sort(function (a, b) { return m.rank[a] - m.rank[b]; });
      var rows = idx.slice(0, 10).map(function (k) {
        return [m.rank[k], "L" + Math.floor(k / nH) + "H" + (k % nH), m.score[k], m.ci_lo ? m.ci_lo[k] : null, m.ci_hi ? m.ci_hi[k] : null,
          m.random_dir_lo ? ci(m.random_dir_lo[k], m.random_dir_hi[k]) : "n/a"];
      });
      return dataTable("Top heads by rank (from the scores CSV)", ["rank", "head", "score", "CI lo", "CI hi", "random-direction band"], rows);
    }
    return draw;
  }

  /* Steering: effect per (layer, alpha) for one direction and measure, its random band, and the
   * continuations of the chosen cell. */
  function Steering(body) {
    var ui = shell(body), pick = {}, sel = {};
    sel.set = select(ui.ctl, "prompts", function (v) { pick.set = v; draw(); });
    sel.direction = select(ui.ctl, "direction", function (v) { pick.direction = v; draw(); });
    sel.measure = select(ui.ctl, "measure", function (v) { pick.measure = v; draw(); });
    sel.layer = select(ui.ctl, "layer", function (v) { pick.layer = +v; draw(); });
    function draw() {
      clear(ui.area);
      var d = modelData("steering");
      if (d.missing) return ui.area.appendChild(missing(d.missing));
      pick.set = sel.set.set(keys(d.sets), pick.set);
      var st = d.sets[pick.set];
      if (st.missing) return ui.area.appendChild(missing(st.missing));
      pick.measure = sel.measure.set(keys(st.grids), pick.measure || "sentiment");
      var byDir = st.grids[pick.measure] || {};
      pick.direction = sel.direction.set(keys(byDir), pick.direction);
      var g = byDir[pick.direction];
      var L = st.layers, A = st.alphas, nA = A.length;
      pick.layer = +sel.layer.set(L.map(function (l) { return [l, "L" + l]; }), isNum(pick.layer) ? pick.layer : L[Math.floor(L.length / 2)]);
      if (!isNum(pick.alpha) || A.indexOf(pick.alpha) < 0) pick.alpha = A.filter(function (a) { return a > 0; })[0] || A[0];
      if (!g) return ui.area.appendChild(missing("no effects for this choice"));
      var v = function (li, ai, key) { return g[key] ? g[key][li * nA + ai] : null; };
      var meta = st.meta || {};
      var ro = readout(), samplesBox = h("div", { "class": "samples" });
      var text = function (li, ai) {
        var norm = st.norms && isNum(st.norms[li]) && isNum(meta.alpha_unit) ? " (added norm " + fmt(A[ai] * meta.alpha_unit * st.norms[li], 2) + ")" : "";
        return pick.direction + " steering, " + pick.set + " prompts, layer " + L[li] + ", alpha " + fmt(A[ai], 1) + norm + ": " + pick.measure + " effect " +
          fmt(v(li, ai, "effect")) + ", 95% CI " + ci(v(li, ai, "ci_lo"), v(li, ai, "ci_hi")) + " vs random directions' band " +
          ci(v(li, ai, "random_lo"), v(li, ai, "random_hi")) + " (" + (meta.n_random || meta.n_random_seeds || "?") + " directions); p vs random " + fmt(v(li, ai, "p_vs_random")) +
          (outside(v(li, ai, "ci_lo"), v(li, ai, "ci_hi"), v(li, ai, "random_lo"), v(li, ai, "random_hi")) ? " - CI outside the band" : " - CI overlaps the band") +
          extras(st.extra, function (k) { return v(li, ai, k); });
      };
      var maxAbs = Math.max.apply(null, (g.effect || []).filter(isNum).map(Math.abs).concat([1e-12]));
      // The coherence regime of each cell's text, where the phase wrote one (coherence column).
      var incoherent = function (i, j) { var c = v(i, j, "coherence"); return typeof c === "string" && c !== "" && c !== "coherent"; };
      var hmPanel = h("div", { "class": "panel" }, h("h4", { text: "effect per layer and alpha (* = CI outside the random band" + (g.coherence ? "; \u2020 = text not coherent" : "") + ")" }));
      var li0 = L.indexOf(pick.layer);
      var chartBox = h("div", {}), chart = null;
      var hm = heatmap(hmPanel, {
        rows: L.map(function (l) { return "L" + l; }), cols: A.map(function (a) { return (a > 0 ? "+" : "") + fmt(a, a % 1 ? 1 : 0); }),
        rowTitle: "layer", colTitle: "alpha", maxAbs: maxAbs, name: "steering effects", cellW: 50,
        value: function (i, j) { return v(i, j, "effect"); }, label: text,
        annotate: function (i, j) {
          return fmt(v(i, j, "effect"), 2) + (outside(v(i, j, "ci_lo"), v(i, j, "ci_hi"), v(i, j, "random_lo"), v(i, j, "random_hi")) ? "*" : "") + (incoherent(i, j) ? "\u2020" : "");
        },
        onSelect: function (i, j) {
          var layerChanged = L[i] !== pick.layer;
          pick.layer = L[i]; pick.alpha = A[j]; sel.layer.set(L.map(function (l) { return [l, "L" + l]; }), pick.layer);
          ro.textContent = text(i, j);
          ro.setAttribute("data-cell", L[i] + ":" + A[j]);
          if (layerChanged || !chart) curve(i, j);
          else chart.show(j);
          showSamples(st, L[i], A[j]);
        },
      });
      function curve(li, ai) {
        clear(chartBox);
        chart = lineChart(chartBox, {
          title: "layer " + L[li] + ": effect vs alpha", x: A, xLabel: "alpha (units of alpha_unit x the layer's residual norm)", yLabel: pick.measure + " effect", zero: true,
          series: [{ name: pick.direction + " (95% CI)", y: A.map(function (_, k) { return v(li, k, "effect"); }), lo: A.map(function (_, k) { return v(li, k, "ci_lo"); }), hi: A.map(function (_, k) { return v(li, k, "ci_hi"); }) }],
          bands: [{ name: "random directions, 95% band", lo: A.map(function (_, k) { return v(li, k, "random_lo"); }), hi: A.map(function (_, k) { return v(li, k, "random_hi"); }) }],
          refs: [{ y: 0, name: "unsteered" }], mark: ai, name: "steering curve",
          onHover: function (k) { hm.activate(li, k); },
        });
      }
      ui.area.appendChild(h("div", { "class": "panels" }, hmPanel, chartBox));
      ui.area.appendChild(ro);
      ui.area.appendChild(h("p", { "class": "hint", text: "Effect = mean over the " + (meta.n_prompts || "?") + " prompts of (steered - unsteered), paired per prompt; 95% bootstrap CI over prompts" + (meta.n_boot ? " (" + meta.n_boot + " resamples)" : "") + ". Hover a cell or a point (or focus and use the arrow keys) for its numbers and its continuations." }));
      ui.area.appendChild(samplesBox);
      hm.activate(li0 < 0 ? 0 : li0, Math.max(0, A.indexOf(pick.alpha)));
    }
    function showSamples(st, layer, alpha) {
      var box = ui.area.querySelector(".samples");
      clear(box);
      var sm = st.samples || {};
      var key = layer + ":" + alpha, dir = sm[pick.direction] || {};
      var rnd = keys(sm).filter(function (k) { return k.indexOf("random") === 0; })[0];
      var entries = function (b) { return b ? b.entries || b : null; };
      var cell = dir[key], steered = entries(cell), base = entries(dir.base), other = rnd ? entries((sm[rnd] || {})[key]) : null;
      if (!steered) return box.appendChild(missing("No sample continuations stored for layer " + layer + ", alpha " + fmt(alpha, 1) + " (" + pick.direction + ")."));
      if (cell.header) box.appendChild(h("p", { "class": "hint", text: pick.direction + ", as the phase labelled this cell: " + cell.header }));
      var rows = steered.map(function (e, q) {
        var line = function (x) { return x && x[q] && x[q].lines.length ? x[q].lines.map(function (p) { return (p[0] ? p[0] + ": " : "") + p[1]; }).join("\n") : "n/a"; };
        return [e.prompt, line(base), line(steered), line(other)];
      });
      var cols = ["prompt", "unsteered", pick.direction + " at layer " + layer + ", alpha " + fmt(alpha, 1), (rnd || "random") + " (same cell)"];
      add(box, dataTable("Continuations of the first " + rows.length + " prompts (greedy, as the phase stored them)", cols, rows));
      box.querySelectorAll("td").forEach(function (td, q) { if (q % 4) td.className = "txt"; });
    }
    return draw;
  }

  /* Patching: effect of patching from an emotion's prompts vs the neutral-to-neutral control. */
  function Patching(body) {
    var ui = shell(body), pick = {}, sel = {};
    sel.source = select(ui.ctl, "patched from", function (v) { pick.source = v; draw(); });
    sel.measure = select(ui.ctl, "measure", function (v) { pick.measure = v; draw(); });
    sel.site = select(ui.ctl, "site", function (v) { pick.site = v; draw(); });
    function draw() {
      clear(ui.area);
      var d = modelData("patching");
      if (d.missing) return ui.area.appendChild(missing(d.missing));
      pick.source = sel.source.set(keys(d.sources), pick.source);
      var p = d.sources[pick.source];
      if (p.missing) return ui.area.appendChild(missing(p.missing));
      pick.measure = sel.measure.set(keys(p.by), pick.measure || "sentiment");
      pick.site = sel.site.set(keys(p.by[pick.measure]), pick.site);
      var c = p.by[pick.measure][pick.site];
      var col = function (name, q) { return (c[name] || []).map(function (t) { return t ? t[q] : null; }); };
      var ro = readout(), box = h("div", { "class": "samples" });
      var text = function (k) {
        var src = c.source[k] || [], ctl = c.control[k] || [], smc = c.smc[k] || [];
        return "layer " + c.layer[k] + " (" + pick.site + "), " + pick.measure + ": patched from " + pick.source + " " + fmt(src[0]) + " " + ci(src[1], src[2]) +
          "; control (from other neutral prompts) " + fmt(ctl[0]) + " " + ci(ctl[1], ctl[2]) + "; difference " + fmt(smc[0]) + " " + ci(smc[1], smc[2]);
      };
      lineChart(ui.area, {
        title: "effect vs layer", x: c.layer, xLabel: "layer", yLabel: pick.measure + " effect", zero: true, name: "patching effects",
        series: [{ name: "patched from " + pick.source + " prompts (95% CI)", y: col("source", 0), lo: col("source", 1), hi: col("source", 2) },
          { name: "control: patched from other neutral prompts", y: col("control", 0), lo: col("control", 1), hi: col("control", 2) }],
        refs: [{ y: 0, name: "unpatched" }], mark: 0,
        onHover: function (k) {
          ro.textContent = text(k);
          clear(box);
          var e = (p.samples || {})[pick.site + ":" + c.layer[k]];
          if (!e) return box.appendChild(missing("No sample continuations stored for this layer."));
          var labels = [];
          e.forEach(function (x) { x.lines.forEach(function (l) { if (labels.indexOf(l[0]) < 0) labels.push(l[0]); }); });
          add(box, dataTable("Continuations at layer " + c.layer[k], ["prompt"].concat(labels.map(function (l) { return l || "text"; })),
            e.map(function (x) { return [x.prompt].concat(labels.map(function (l) { var f = x.lines.filter(function (y) { return y[0] === l; })[0]; return f ? f[1] : "n/a"; })); })));
        },
      }).activate(0);
      ui.area.appendChild(ro);
      ui.area.appendChild(box);
    }
    return draw;
  }

  /* Vectors: the class-by-class cosine matrix at one layer (slider) beside its null, and the
   * probe's accuracy per layer. */
  function Vectors(body) {
    var ui = shell(body), pick = { layer: null }, sel = {};
    sel.method = select(ui.ctl, "vectors from", function (v) { pick.method = v; draw(); });
    sel.centre = select(ui.ctl, "centre", function (v) { pick.centre = v; draw(); });
    var sl = slider(ui.ctl, "layer", function (k) { pick.layer = k; draw(); });
    sel.feature = select(ui.ctl, "probe feature", function (v) { pick.feature = v; draw(); });
    function draw() {
      clear(ui.area);
      var d = modelData("vectors");
      if (d.missing) return ui.area.appendChild(missing(d.missing));
      pick.method = sel.method.set(keys(d.cos).map(function (m) { return [m, m + (d.positions && d.positions[m] ? " (" + d.positions[m] + ")" : "")]; }), pick.method);
      pick.centre = sel.centre.set(keys(d.cos[pick.method]), pick.centre);
      var nL = d.layers.length;
      if (pick.layer === null || pick.layer >= nL) pick.layer = nL - 1;
      sl.set(nL, pick.layer, "layer " + d.layers[pick.layer] + " (" + d.layer_names[pick.layer] + ")");
      var cells = (d.cos[pick.method][pick.centre] || {})[String(d.layers[pick.layer])] || [];
      var C = d.classes;
      var find = function (a, b) {
        var k = d.pairs.indexOf(a + "|" + b);
        if (k < 0) k = d.pairs.indexOf(b + "|" + a);
        return k < 0 ? null : cells[k];
      };
      var ro = readout();
      var text = function (i, j) {
        if (i === j) return C[i] + " with itself: cosine 1 by definition";
        var c = find(C[i], C[j]) || [], nd = decimals(c);
        return C[i] + " vs " + C[j] + " (" + pick.method + ", " + pick.centre + ", layer " + d.layers[pick.layer] + " = " + d.layer_names[pick.layer] + "): cosine " + fmt(c[0], nd) +
          "; label-shuffle null mean " + fmt(c[1], nd) + ", " + Math.round(100 * (d.level || 0.95)) + "% band " + ci(c[2], c[3], nd) + " (" + fmt(d.n_perm, 0) + " permutations)" +
          (outside(c[0], c[0], c[2], c[3]) ? " - outside the band" : " - inside the band");
      };
      var panel = h("div", { "class": "panel" }, h("h4", { text: "cosine between class vectors (* = outside the null band)" }));
      var hm = heatmap(panel, {
        rows: C, cols: C, maxAbs: 1, name: "cosine matrix", marginLeft: 76, cellW: 68, cellH: 30,
        value: function (i, j) { return i === j ? 1 : (find(C[i], C[j]) || [])[0]; }, label: text,
        annotate: function (i, j) { if (i === j) return "1"; var c = find(C[i], C[j]) || []; return fmt(c[0], 2) + (outside(c[0], c[0], c[2], c[3]) ? "*" : ""); },
        onSelect: function (i, j) { ro.textContent = text(i, j); },
      });
      var probeBox = h("div", {});
      ui.area.appendChild(h("div", { "class": "panels" }, panel, probeBox));
      ui.area.appendChild(ro);
      probe(probeBox, d, ro);
      hm.activate(0, 1);
    }
    function probe(box, d, ro) {
      var pr = d.probe || {};
      if (pr.missing) return box.appendChild(missing(pr.missing));
      pick.feature = sel.feature.set(keys(pr.features), pick.feature);
      var f = pr.features[pick.feature];
      if (!f) return;
      var k0 = Math.max(0, f.layer.indexOf(d.layers[pick.layer]));
      lineChart(box, {
        title: "linear probe accuracy (" + pick.feature + ", " + fmt(f.n_folds, 0) + "-fold)", x: f.layer, xLabel: "layer (0 = embeddings)", yLabel: "accuracy",
        series: [{ name: "probe accuracy", y: f.accuracy }],
        bands: [{ name: "label-shuffle null, 95% band (" + fmt(f.n_perm, 0) + " permutations)", lo: f.null_lo, hi: f.null_hi }],
        refs: [{ y: f.chance, name: "chance " + fmt(f.chance, 2) }], mark: k0, name: "probe accuracy",
        onHover: function (k) {
          ro.textContent = "probe (" + pick.feature + ") at layer " + f.layer[k] + " (" + f.layer_name[k] + "): accuracy " + fmt(f.accuracy[k]) + "; label-shuffle null mean " +
            fmt(f.null_mean[k]) + ", 95% band " + ci(f.null_lo[k], f.null_hi[k]) + "; chance " + fmt(f.chance, 2);
        },
      });
    }
    return draw;
  }

  /* Alignment: per layer, the overlaps, held-out R^2 and CKA beside their nulls. */
  function Alignment(body) {
    var ui = shell(body), pick = {};
    var sel = select(ui.ctl, "A -> B", function (v) { pick.series = +v; draw(); });
    function draw() {
      clear(ui.area);
      var a = D.alignment || {};
      if (a.missing) return ui.area.appendChild(missing(a.missing));
      var all = a.series || [];
      var opts = all.map(function (sr, k) { return [k, sr.a + " -> " + sr.b + ", " + sr.pairing + ", " + sr.map]; });
      var cur = all[pick.series];
      if (!cur || cur.a !== state.model) {
        var mine = all.map(function (sr, k) { return sr.a === state.model ? k : -1; }).filter(function (k) { return k >= 0; });
        if (mine.length && (!cur || cur.a !== state.model)) pick.series = mine[0];
      }
      pick.series = +sel.set(opts, isNum(pick.series) ? pick.series : 0);
      var sr = all[pick.series];
      if (!sr) return ui.area.appendChild(missing("no alignment rows"));
      var ro = readout();
      var x = sr.layer_a;
      var xText = function (k) { return sr.layer_a[k] + "->" + sr.layer_b[k]; };
      var get = function (k) { return sr[k] || x.map(function () { return null; }); };
      var text = function (k) {
        var f = function (m) { return fmt(get(m)[k]); };
        return sr.a + " layer " + sr.layer_a[k] + " -> " + sr.b + " layer " + sr.layer_b[k] + " (" + sr.map + "): raw overlap " + f("overlap_raw") + " (random subspaces " +
          f("overlap_random_expectation") + "); after the map " + f("overlap_mapped") + (sr.overlap_mapped_ci_lo ? " (95% CI " + ci(sr.overlap_mapped_ci_lo[k], sr.overlap_mapped_ci_hi[k]) + ")" : "") +
          " (shuffled-pairing null " + ci(get("overlap_mapped_null_lo")[k], get("overlap_mapped_null_hi")[k]) +
          (isNum(get("random_init_overlap_mapped")[k]) ? "; a random-init copy of B " + f("random_init_overlap_mapped") : "") +
          "); held-out R^2 " + f("r2_test") + " (null " + ci(get("r2_test_null_lo")[k], get("r2_test_null_hi")[k]) + "); CKA " + f("cka_fit") + " (null " +
          ci(get("cka_null_lo")[k], get("cka_null_hi")[k]) + ")" + (sr.warnings && sr.warnings[k] ? ". Note: " + sr.warnings[k] : "");
      };
      var charts = [];
      var hover = function (k) { ro.textContent = text(k); charts.forEach(function (c) { c.show(k); }); };
      var panels = h("div", { "class": "panels" });
      var spec = [
        ["raw overlap (study 0.13-0.15)", [{ name: "overlap, no map", y: get("overlap_raw"), lo: sr.overlap_raw_ci_lo, hi: sr.overlap_raw_ci_hi }], [{ name: "random subspaces, 95% band", lo: get("overlap_random_lo"), hi: get("overlap_random_hi") }], [{ y: mean(get("overlap_random_expectation")), name: "random expectation" }]],
        ["overlap after the map (study ~0.99)", [{ name: "overlap after map", y: get("overlap_mapped"), lo: sr.overlap_mapped_ci_lo, hi: sr.overlap_mapped_ci_hi }, { name: "same, random-init copy of B", y: get("random_init_overlap_mapped") }], [{ name: "maps refit on shuffled pairings, 95% band", lo: get("overlap_mapped_null_lo"), hi: get("overlap_mapped_null_hi") }], []],
        ["R^2 of the map (held-out prompts)", [{ name: "held-out R^2", y: get("r2_test") }, { name: "fit R^2", y: get("r2_fit") }, { name: "held-out R^2, random-init copy of B", y: get("random_init_r2_test") }], [{ name: "shuffled pairings, 95% band", lo: get("r2_test_null_lo"), hi: get("r2_test_null_hi") }], []],
        ["linear CKA", [{ name: "CKA", y: get("cka_fit") }, { name: "CKA, random-init copy of B", y: get("random_init_cka") }], [{ name: "permuted rows, 95% band", lo: get("cka_null_lo"), hi: get("cka_null_hi") }], []],
      ];
      var some = function (a) { return (a || []).some(isNum); };
      spec.forEach(function (p) {
        p[1] = p[1].filter(function (q) { return some(q.y); });
        p[2] = p[2].filter(function (q) { return some(q.lo) && some(q.hi); });
        var box = h("div", {});
        var c = lineChart(box, { title: p[0], x: x, xText: xText, xLabel: "layer A -> B", yLabel: "", series: p[1], bands: p[2], refs: p[3], width: 330, height: 210, mark: 0, name: p[0], onHover: hover });
        charts.push(c);
        panels.appendChild(box);
      });
      ui.area.appendChild(panels);
      ui.area.appendChild(ro);
      ui.area.appendChild(h("p", { "class": "hint", text: "n/d = " + fmt(sr.n_over_d, 2) + " fit rows per dimension; nulls from " + fmt(sr.n_perm, 0) + " permutations. Hover a layer (or focus a chart and use the arrow keys) for every number at that layer." }));
      hover(0);
    }
    function mean(a) { var v = a.filter(isNum); return v.length ? v.reduce(function (p, q) { return p + q; }, 0) / v.length : null; }
    return draw;
  }

  /* Phase 7's tables for the chosen model. */
  function HeadTables(body) {
    var ui = shell(body), pick = {};
    var sel = select(ui.ctl, "generation samples", function (v) { pick.sample = v; samples(); });
    var box = h("div", { "class": "samples" });
    function draw() {
      clear(ui.area);
      var d = modelData("head_tables");
      if (d.missing) return ui.area.appendChild(missing(d.missing));
      var fold = function (title, open, caption, t) {
        var n = t && t.n_rows ? " (" + t.n_rows + " rows)" : "";
        var det = h("details", { "class": "fold", "data-table": title }, h("summary", { text: title + n }), artifactTable(caption, t));
        det.open = open;
        ui.area.appendChild(det);
      };
      fold("L0H0 and sentiment, beside the study", true, "Ablating / patching L0H0: change in sentiment with 95% CI, beside random head sets (" + state.model + "); the study's column is its GPT-2 small figure (no CI or control reported)", d.l0h0);
      fold("Ablation and patching with generation, every head set and measure", false, "Ablation / patching with generation vs random head sets (" + state.model + ")", d.generation);
      ui.area.appendChild(box);
      fold("Rank correlation between screening methods", false, "Spearman rank correlation of the head scores between methods (" + state.model + ")", d.rank_correlation);
      fold("Head circuits", false, "Head sets found by search, joint effect vs the sum of single-head effects (" + state.model + ")", d.circuits);
      fold("Top MLP neurons", false, "Top MLP neurons (" + state.model + ")", d.neurons);
      samples();
    }
    function samples() {
      clear(box);
      var g = (modelData("head_tables").generation_samples) || {};
      if (g.missing) return box.appendChild(missing(g.missing));
      pick.sample = sel.set(keys(g.by), pick.sample);
      var e = (g.by || {})[pick.sample];
      if (!e) return;
      add(box, dataTable("Continuations without and with the head edit " + pick.sample, ["prompt", "clean", "edited"], e.map(function (x) { return [x.prompt, x.clean, x.edited]; })));
    }
    return draw;
  }

  // ---- wiring ---------------------------------------------------------------------------------
  var KINDS = { heads: Heads, steering: Steering, patching: Patching, vectors: Vectors, alignment: Alignment, "head-tables": HeadTables };
  function drawAll() {
    figures.forEach(function (f) {
      try { f.draw(); } catch (e) {
        clear(f.body).appendChild(missing("This figure could not be drawn: " + e.message));
        console.error("figure " + f.name + ": " + (e.stack || e));
      }
    });
  }
  document.querySelectorAll("figure.fig").forEach(function (fig) {
    var body = fig.querySelector(".fig-body"), name = fig.getAttribute("data-fig");
    if (!KINDS[name]) return;
    try { figures.push({ name: name, body: body, draw: KINDS[name](body) }); } catch (e) {
      clear(body).appendChild(missing("This figure could not be set up: " + e.message));
      console.error("figure " + name + ": " + (e.stack || e));
    }
  });
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  var pickModel = document.getElementById("model-select");
  if (pickModel) pickModel.addEventListener("change", function () { state.model = pickModel.value; drawAll(); });
  window.addEventListener("beforeprint", function () { document.querySelectorAll("details").forEach(function (d) { d.open = true; }); });
  drawAll();
  window.__report = { ready: true, ms: performance.now(), figures: figures.length };
})();
