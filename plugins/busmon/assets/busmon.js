// busmon's page. Every piece of message data is put into the page as text
// (textContent, setAttribute on SVG geometry only): nothing from the bus is
// ever parsed as HTML. The server sends a CSP forbidding inline script.
"use strict";

(function () {
  const MAX_SHOWN = 200;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  let source = null;
  let paused = false;
  let missed = 0;
  let shown = 0;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setStatus(text, cls) {
    const s = $("status");
    s.textContent = text;
    s.className = "status " + (cls || "");
  }

  // Pretty, colourised JSON built from DOM nodes, credentials left out.
  function jsonNode(value, indent, out) {
    const pad = "  ".repeat(indent);
    if (value === null || typeof value === "boolean") {
      out.appendChild(el("span", "j-lit", String(value)));
    } else if (typeof value === "number") {
      out.appendChild(el("span", "j-num", String(value)));
    } else if (typeof value === "string") {
      out.appendChild(el("span", "j-str", JSON.stringify(value)));
    } else if (Array.isArray(value)) {
      if (value.length === 0) { out.appendChild(document.createTextNode("[]")); return; }
      out.appendChild(document.createTextNode("[\n"));
      value.forEach((v, i) => {
        out.appendChild(document.createTextNode(pad + "  "));
        jsonNode(v, indent + 1, out);
        out.appendChild(document.createTextNode(i + 1 < value.length ? ",\n" : "\n"));
      });
      out.appendChild(document.createTextNode(pad + "]"));
    } else {
      const keys = Object.keys(value);
      if (keys.length === 0) { out.appendChild(document.createTextNode("{}")); return; }
      out.appendChild(document.createTextNode("{\n"));
      keys.forEach((k, i) => {
        out.appendChild(document.createTextNode(pad + "  "));
        out.appendChild(el("span", "j-key", JSON.stringify(k)));
        out.appendChild(document.createTextNode(": "));
        jsonNode(value[k], indent + 1, out);
        out.appendChild(document.createTextNode(i + 1 < keys.length ? ",\n" : "\n"));
      });
      out.appendChild(document.createTextNode(pad + "}"));
    }
  }

  function withoutCredentials(envelope) {
    const copy = Object.assign({}, envelope);
    delete copy.signature;
    delete copy.certificate;
    return copy;
  }

  function rawLink(url) {
    // {host}: datanommer listens on every interface; link to the page's host.
    return url.replace("{host}", window.location.hostname);
  }

  function addMessage(m) {
    const li = el("li", "message");
    li.dataset.topic = m.topic;
    li.dataset.category = m.category;
    const line = el("div", "line");
    const when = m.timestamp ? new Date(m.timestamp * 1000) : new Date();
    line.appendChild(el("span", "time", when.toLocaleTimeString()));
    line.appendChild(el("span", "badge " + m.signature, m.signature));
    line.appendChild(el("span", "repr", m.repr));
    line.appendChild(el("span", "topic", m.topic));
    if (m.raw_link) {
      const a = el("a", "raw", "raw");
      a.href = rawLink(m.raw_link);
      a.rel = "noreferrer";
      a.target = "_blank";
      line.appendChild(a);
    }
    li.appendChild(line);
    li.addEventListener("click", (ev) => {
      if (ev.target.tagName === "A" || ev.target.closest("pre")) return;
      const open = li.querySelector("pre");
      if (open) { open.remove(); return; }
      const pre = el("pre", "json");
      jsonNode(withoutCredentials(m.body), 0, pre);
      li.appendChild(pre);
    });
    prepend(li);
    // Messages only: a "skipped" marker is not one.
    shown += 1;
    $("shown").textContent = String(shown);
  }

  function prepend(li) {
    const list = $("messages");
    list.insertBefore(li, list.firstChild);
    while (list.childElementCount > MAX_SHOWN) list.lastChild.remove();
  }

  function connect() {
    if (source) source.close();
    const params = new URLSearchParams();
    params.set("view", "page");
    for (const name of ["topic", "text", "user", "package"]) {
      const v = $("f-" + name).value.trim();
      if (v) params.set(name, v);
    }
    $("messages").replaceChildren();
    shown = 0;
    $("shown").textContent = "0";
    source = new EventSource("/stream?" + params.toString());
    source.onopen = () => setStatus(paused ? "paused" : "live", paused ? "paused" : "");
    source.onerror = () => setStatus("reconnecting…", "");
    source.onmessage = (ev) => {
      if (paused) { missed += 1; setStatus("paused (" + missed + " new)", "paused"); return; }
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      addMessage(m);
    };
    source.addEventListener("skipped", (ev) => {
      let n = 0;
      try { n = JSON.parse(ev.data).skipped; } catch (e) { return; }
      prepend(el("li", "skipped", n + " skipped (this page fell behind)"));
    });
  }

  function drawChart(rates) {
    $("total").textContent = String(rates.total);
    const spark = $("spark");
    spark.replaceChildren();
    const max = Math.max(1, ...rates.per_minute);
    $("peak").textContent = "peak " + Math.max(0, ...rates.per_minute) + "/min";
    const pts = rates.per_minute.map((v, i) =>
      (i * 600 / (rates.per_minute.length - 1)).toFixed(1) + "," + (58 - v * 56 / max).toFixed(1));
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    spark.appendChild(line);

    const chart = $("chart");
    chart.replaceChildren();
    const cats = rates.categories.slice(0, 30);
    const top = Math.max(1, ...cats.map((c) => c.last_hour));
    const rowH = 20;
    // Bars fit the column: the label on the left, the figures on the right
    // (a fixed 200 px bar pushed the figures out of a narrow column).
    const LABEL = 110, FIGURES = 100;
    const width = chart.getBoundingClientRect().width || 320;
    const room = Math.max(20, width - LABEL - FIGURES);
    chart.setAttribute("height", String(cats.length * rowH + 4));
    cats.forEach((c, i) => {
      const g = document.createElementNS(SVG, "g");
      g.setAttribute("class", "bar");
      g.dataset.category = c.name;
      const title = document.createElementNS(SVG, "title");
      title.textContent = c.name + ": " + c.last_hour + " in the last hour";
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", "0");
      label.setAttribute("y", String(i * rowH + 14));
      label.textContent = c.name.length > 16 ? c.name.slice(0, 15) + "…" : c.name;
      const w = Math.max(2, c.last_hour * room / top);
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", String(LABEL));
      rect.setAttribute("y", String(i * rowH + 3));
      rect.setAttribute("height", String(rowH - 6));
      rect.setAttribute("width", w.toFixed(1));
      const rate = document.createElementNS(SVG, "text");
      rate.setAttribute("x", String(LABEL + 6 + w));
      rate.setAttribute("y", String(i * rowH + 14));
      rate.textContent = c.last_hour + " (" + (c.last_hour / 60).toFixed(1) + "/min)";
      g.append(title, label, rect, rate);
      chart.appendChild(g);
    });
  }

  async function poll() {
    try {
      const r = await fetch("/api/stats", { cache: "no-store" });
      if (r.ok) drawChart((await r.json()).rates);
    } catch (e) { /* the next poll retries */ }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("filter").addEventListener("submit", (ev) => { ev.preventDefault(); connect(); });
    $("pause").addEventListener("click", () => {
      paused = !paused;
      // Say where the list has a gap rather than hiding it.
      if (!paused && missed > 0) {
        prepend(el("li", "skipped", missed + " arrived while paused (not shown)"));
      }
      missed = 0;
      $("pause").textContent = paused ? "Resume" : "Pause";
      setStatus(paused ? "paused" : "live", paused ? "paused" : "");
    });
    connect();
    poll();
    setInterval(poll, 2000);
  });
})();
