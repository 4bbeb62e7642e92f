// The supervision dashboard: reads /api/overview (node/dashboard/figures.py) every few
// seconds and draws it. Figures are shown as the node gives them (integers in minor units);
// a section the node does not serve or refuses says why instead of showing a guess.
"use strict";

const REFRESH_MS = 5000;
const charts = {};
const fmt = (n) => (n === null || n === undefined ? "–" : BigInt(n).toLocaleString("en-US"));

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function unavailable(id, why) {
  const el = document.getElementById(id);
  el.textContent = "not available: " + why;
  el.classList.add("unavailable");
}

function barChart(id, labels, values, label, logarithmic = false) {
  if (typeof Chart === "undefined") return; // the figures are in the tables regardless
  const data = { labels, datasets: [{ label, data: values, backgroundColor: "#2a6f97" }] };
  if (charts[id]) {
    charts[id].data = data;
    charts[id].update("none");
    return;
  }
  charts[id] = new Chart(document.getElementById(id), {
    type: "bar",
    data,
    options: {
      animation: false,
      maintainAspectRatio: false,
      plugins: { legend: { display: false } },
      // Supplies of cash (in cents) and of bonds (in units) differ by orders of magnitude.
      scales: logarithmic ? { y: { type: "logarithmic" } } : {},
    },
  });
}

function gauge(outstanding, cap) {
  if (typeof Chart === "undefined") return;
  const data = {
    labels: ["outstanding", "headroom"],
    datasets: [{ data: [outstanding, Math.max(0, cap - outstanding)], backgroundColor: ["#c0392b", "#d5dbe3"] }],
  };
  if (charts.programme) {
    charts.programme.data = data;
    charts.programme.update("none");
    return;
  }
  charts.programme = new Chart(document.getElementById("programme-chart"), {
    type: "doughnut",
    data,
    options: { animation: false, maintainAspectRatio: false, rotation: -90, circumference: 180 },
  });
}

function rows(tableId, cells) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(
    ...cells.map((row) => {
      const tr = document.createElement("tr");
      for (const [value, numeric] of row) {
        const td = document.createElement("td");
        td.textContent = value;
        if (numeric) td.className = "num";
        tr.appendChild(td);
      }
      return tr;
    })
  );
}

function renderHealth(doc) {
  const h = doc.health;
  text("chain", `${doc.chain_id} · read from node ${doc.node}`);
  text("height", fmt(h.height));
  document.getElementById("height").dataset.value = h.height;
  text("interval", h.observed_block_interval_ms === null ? "measuring…" : `${h.observed_block_interval_ms} ms`);
  text("catching-up", h.catching_up ? "yes" : "no");
  if (h.signed_latest_block) {
    text("signers", `${h.signed_latest_block.length} of ${h.validators.length}: ${h.signed_latest_block.join(", ")}`);
  } else if (h.validators_unavailable) {
    unavailable("signers", h.validators_unavailable);
  }
}

function renderProgramme(p) {
  if (p.unavailable) return unavailable("programme-figures", p.unavailable);
  const used = Number((BigInt(p.outstanding) * 10000n) / BigInt(p.cap)) / 100;
  text("programme-figures", `${fmt(p.outstanding)} of ${fmt(p.cap)} (${used.toFixed(2)} %)`);
  const el = document.getElementById("programme-figures");
  el.dataset.outstanding = p.outstanding;
  el.dataset.cap = p.cap;
  gauge(Number(p.outstanding), Number(p.cap));
}

function renderInstruments(i) {
  if (i.unavailable) return rows("instruments-table", [[["not available: " + i.unavailable, false]]]);
  rows("instruments-table", i.rows.map((r) => [[r.id, false], [r.kind, false], [fmt(r.supply), true]]));
  barChart("supply-chart", i.rows.map((r) => r.id), i.rows.map((r) => Number(r.supply)), "supply", true);
}

function renderHoldings(key, chartId, noteId, doc) {
  const h = doc[key];
  if (h.unavailable) return unavailable(noteId, h.unavailable);
  barChart(chartId, h.groups.map((g) => g.group || "(none)"), h.groups.map((g) => Number(g.total)), "total");
  const holders = h.groups.reduce((n, g) => n + g.holders, 0);
  text(noteId, `${h.groups.length} groups, ${holders} holders` + (h.more_groups ? `, ${h.more_groups} smaller groups not drawn` : ""));
}

function renderActions(a) {
  if (!a) return;
  if (a.unavailable) return unavailable("actions-note", a.unavailable);
  rows(
    "actions-table",
    a.rows.map((r) => {
      const at = r.attributes;
      const reason = at.reason_code !== undefined ? `${at.reason_code} / ${at.legal_reference || ""}` : at.reason || "";
      return [[String(r.height), true], [r.type, false], [at.account || at.from || "", false], [at.instrument || "", false], [at.amount === undefined ? "" : fmt(at.amount), true], [reason, false]];
    })
  );
  text("actions-note", `since height ${a.since_height}` + (a.partial ? " (a busy window: only its start was read)" : ""));
}

async function refresh() {
  try {
    const response = await fetch("/api/overview", { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
    const doc = await response.json();
    if (doc.unavailable) throw new Error(doc.unavailable);
    renderHealth(doc);
    renderProgramme(doc.programme);
    renderInstruments(doc.instruments);
    renderHoldings("holdings_by_vasp", "vasp-chart", "vasp-note", doc);
    renderHoldings("holdings_by_country", "country-chart", "country-note", doc);
    renderActions(doc.recent_actions);
    text("updated", `updated ${new Date().toLocaleTimeString()}`);
    document.body.dataset.loaded = "true";
  } catch (err) {
    text("updated", `the node did not answer: ${err.message}`);
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
