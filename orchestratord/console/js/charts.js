// Line charts as inline SVG: a few series over time, redrawn from a bounded history.

const NS = "http://www.w3.org/2000/svg";
const W = 600, H = 140, PAD_L = 40, PAD_B = 16;

function svg(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

export class LineChart {
  constructor(container, names, capacity = 300) {
    this.container = container;
    this.names = names;
    this.capacity = capacity;
    this.points = []; // [t, v1, v2, ...]
  }

  clear() {
    this.points = [];
    this.container.replaceChildren();
  }

  push(t, values) {
    this.points.push([t, ...values]);
    if (this.points.length > this.capacity) this.points.shift();
  }

  draw() {
    const pts = this.points;
    // The times (the server's clock, ms) of the oldest and the newest point kept.
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
      "data-since": pts.length ? pts[0][0] : "", "data-until": pts.length ? pts[pts.length - 1][0] : "" });
    let max = 0;
    for (const p of pts) for (let i = 1; i < p.length; i++) if (p[i] !== null && p[i] > max) max = p[i];
    max = max > 0 ? max * 1.1 : 1;
    const t0 = pts.length ? pts[0][0] : 0, t1 = pts.length ? pts[pts.length - 1][0] : 1;
    const span = Math.max(1, t1 - t0);
    const x = (t) => PAD_L + ((t - t0) / span) * (W - PAD_L - 4);
    const y = (v) => (H - PAD_B) - (v / max) * (H - PAD_B - 6);
    root.append(svg("line", { class: "axis", x1: PAD_L, y1: H - PAD_B, x2: W, y2: H - PAD_B }));
    root.append(svg("line", { class: "axis", x1: PAD_L, y1: 0, x2: PAD_L, y2: H - PAD_B }));
    const top = svg("text", { x: 2, y: 12 }); top.textContent = max >= 10 ? Math.round(max) : max.toFixed(2);
    const zero = svg("text", { x: 2, y: H - PAD_B }); zero.textContent = "0";
    const legend = svg("text", { x: PAD_L + 4, y: H - 3 });
    legend.textContent = pts.length ? `${Math.round(span / 1000)} s · ${this.names.join(", ")}` : "waiting for data";
    root.append(top, zero, legend);
    this.names.forEach((_, i) => {
      const line = pts.filter((p) => p[i + 1] !== null).map((p) => `${x(p[0]).toFixed(1)},${y(p[i + 1]).toFixed(1)}`);
      if (line.length) root.append(svg("polyline", { class: `l${i + 1}`, points: line.join(" ") }));
    });
    this.container.replaceChildren(root);
  }
}
