// The chaos panel's behaviour: polls the harness's state through Locust's web server and sends the
// panel's actions. Everything it shows comes from /chaos/api/state; nothing is computed here that
// the checkers would compute differently (availability is the harness's figure, not the browser's).
(() => {
  "use strict";
  const panel = document.getElementById("chaos-panel");
  if (!panel) return;
  const base = panel.dataset.base; // "/chaos/" (Locust's --web-base-path included)
  const embedded = panel.classList.contains("embedded");
  const REFRESH_MS = 2000;
  const $ = (name) => panel.querySelector(`[data-bind="${name}"]`);
  const form = $("fault-form");
  const selected = new Set(); // ticked links and services, kept across redraws
  let lastState = null;
  let noticeTimer = null;

  // -- talking to the harness ---------------------------------------------------------------

  async function api(method, path, body) {
    let resp;
    try {
      resp = await fetch(base + "api/" + path, {
        method,
        headers: { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      return { ok: false, status: 0, data: { error: `the Locust web server does not answer (${err})` } };
    }
    let data = {};
    try {
      data = await resp.json();
    } catch (err) {
      data = { error: `HTTP ${resp.status}` };
    }
    return { ok: resp.ok, status: resp.status, data };
  }

  function notice(message, kind) {
    const box = $("notice");
    box.textContent = message;
    box.className = `chaos-notice ${kind}`;
    box.hidden = false;
    clearTimeout(noticeTimer);
    if (kind === "ok") noticeTimer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  async function act(method, path, body, okMessage) {
    const res = await api(method, path, body);
    if (res.ok) notice(okMessage(res.data), "ok");
    else notice(`${res.status || "error"}: ${res.data.error || "refused"}`, "error");
    await refresh();
    return res;
  }

  // -- drawing ------------------------------------------------------------------------------

  const pct = (r) => (r === null || r === undefined ? "—" : `${(Math.floor(r * 1000) / 10).toFixed(1)} %`);
  const level = (r) => (r === null || r === undefined ? "" : r >= 0.99 ? "good" : r >= 0.95 ? "warn" : "bad");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function setFigure(name, text, cls) {
    const node = $(name);
    node.textContent = text;
    node.className = `v ${cls || ""}`;
  }

  function draw(state) {
    lastState = state;
    const s = state.session;
    const tag = $("session-state");
    const labels = { idle: "live", finishing: "checking…", failed: "check failed" };
    tag.textContent = s.state === "finished" ? `checked: ${s.verdict.toUpperCase()}` : labels[s.state] || s.state;
    tag.className = `chaos-tag ${s.state === "finished" ? s.verdict : s.state === "failed" ? "fail" : "info"}`;
    $("run-dir").textContent = s.run_dir;
    $("run-dir").title = "the session's run directory";
    const link = $("report-link");
    link.textContent = s.report ? "Open report" : s.result ? "Open result" : "Report";
    link.classList.toggle("chaos-primary", Boolean(s.report || s.result));

    drawVerdict(s);
    const running = state.locust && (state.locust.state === "running" || state.locust.state === "spawning");
    panel.querySelector('[data-action="finish"]').textContent = running ? "Stop test & check" : "Check session now";

    const a = state.availability;
    setFigure("avail-recent", pct(a.last_10s.ratio), level(a.last_10s.ratio));
    setFigure("avail-session", pct(a.session.ratio), level(a.session.ratio));
    setFigure("ops-recent", a.last_10s.ops.toLocaleString());
    const c = state.consistency;
    setFigure("anomalies", c ? String(c.open_anomalies) : "—", c ? (c.open_anomalies ? "bad" : "good") : "");
    const l = state.locust;
    setFigure("load", l ? (l.state === "running" || l.state === "spawning" ? `${l.users} users` : l.state) : "—");
    drawBars(a);
    drawActive(state.active, state.now);
    drawTopology(state.topology);
    drawSchedule(state.schedule);
    drawLog(state.log);
    updateTargets();
  }

  function drawVerdict(s) {
    const box = $("verdict");
    box.hidden = !(s.state === "finished" || s.state === "failed");
    if (box.hidden) return;
    if (s.state === "failed") {
      box.className = "chaos-verdict fail";
      box.replaceChildren(el("strong", {}, "The session could not be checked: "), s.message);
      return;
    }
    box.className = `chaos-verdict ${s.verdict}`;
    const head = s.verdict === "pass" ? "Checked: every expectation met" : "Checked: expectations not met";
    box.replaceChildren(
      el("strong", {}, head), ` (${s.payments.toLocaleString()} payments, ${s.breaks ?? "unknown"} reconciliation breaks)`,
      ...(s.failures.length ? [el("ul", {}, ...s.failures.map((f) => el("li", {}, f)))] : []),
    );
  }

  function drawBars(a) {
    const bars = $("bars");
    bars.replaceChildren(
      ...a.per_second.map((b) => {
        const ratio = b.ops ? b.good / b.ops : null;
        const bar = el("span", {
          class: `chaos-bar ${ratio === null ? "empty" : ratio >= 0.99 ? "good" : "bad"}`,
          title: `${new Date(b.t * 1000).toLocaleTimeString()}: ${b.good}/${b.ops} good`,
        });
        bar.style.height = ratio === null ? "2px" : `${Math.max(4, ratio * 100)}%`;
        return bar;
      }),
    );
    $("bars-caption").textContent =
      `Each bar is one second of the last 60: its height is the share of payments that were good (ok or a business ` +
      `reject, within the ${a.slo_ms} ms latency SLO); red when below 99 %, flat when no payment completed.`;
  }

  function drawActive(active, now) {
    const body = $("active");
    if (!active.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "chaos-muted" }, "none")));
      return;
    }
    body.replaceChildren(
      ...active.map((f) => {
        const settings = Object.entries(f.attributes).map(([k, v]) => `${k}=${v}`);
        if (f.stream) settings.push(f.stream);
        if (f.toxicity !== null && f.toxicity !== 1) settings.push(`toxicity ${f.toxicity}`);
        const ends = f.expires_at ? `in ${Math.max(0, Math.round(f.expires_at - now))} s` :
          f.source.startsWith("schedule") ? "by schedule" : "when healed";
        const heal = el("button", { type: "button", class: "chaos-btn chaos-small", "data-heal": f.name,
          onclick: () => act("POST", `faults/${encodeURIComponent(f.name)}/heal`, {}, () => `healed ${f.name}`) }, "Heal");
        return el("tr", { "data-fault": f.name },
          el("td", { class: "chaos-mono chaos-nowrap" }, f.name), el("td", {}, f.kind),
          el("td", { class: "chaos-mono" }, f.targets.join(", ")), el("td", {}, settings.join(", ") || "—"),
          el("td", {}, f.source), el("td", {}, ends), el("td", {}, heal));
      }),
    );
  }

  function checkbox(name, labelText, extra) {
    const box = el("input", { type: "checkbox", value: name, "data-target": name });
    box.checked = selected.has(name);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(name); else selected.delete(name);
      updateTargets();
    });
    return el("label", { class: "chaos-check" }, box, " ", labelText, extra || "");
  }

  function drawTopology(topo) {
    const links = Object.fromEntries(topo.links.map((l) => [l.name, l]));
    const services = Object.fromEntries(topo.services.map((s) => [s.name, s.state]));
    const linkCell = (name) => {
      const link = links[name];
      const faults = link.faults.length ? el("span", { class: "chaos-badge bad", title: link.faults.join(", ") }, link.faults.join(", ")) : "";
      return el("td", { title: `${name}: proxy ${link.listen} → ${link.upstream}` }, checkbox(name, name), faults);
    };
    const serviceCell = (name) => {
      const state = services[name];
      return el("td", {}, checkbox(name, name), el("span", { class: `chaos-badge ${state === "running" ? "good" : "bad"}` }, state));
    };
    const rows = topo.banks.map((b) =>
      el("tr", {}, serviceCell(b), linkCell(`customers->${b}`), linkCell(`${b}->switch`), linkCell(`switch->${b}`)));
    rows.push(el("tr", {}, serviceCell("switch"), el("td", { colspan: 3, class: "chaos-muted" },
      "the switch's links are the bank → switch and switch → bank columns")));
    $("topology").replaceChildren(...rows);
  }

  function drawSchedule(sched) {
    const select = $("scenarios");
    const current = select.value;
    if (select.options.length !== sched.scenarios.length) {
      select.replaceChildren(...sched.scenarios.map((n) => el("option", { value: n }, n)));
      if (sched.scenarios.includes(current)) select.value = current;
    }
    const line = $("schedule");
    line.classList.remove("chaos-error");
    if (sched.running) {
      const left = Math.max(0, Math.round(sched.running.ends_at - lastState.now));
      line.textContent = `Playing ${sched.running.scenario}: last fault ends in ${left} s.`;
    } else if (sched.last && sched.last.error) {
      line.textContent = `${sched.last.scenario} stopped on an error: ${sched.last.error}`;
      line.classList.add("chaos-error");
    } else if (sched.last) {
      line.textContent = `${sched.last.scenario} ${sched.last.stopped_early ? "was stopped" : "has played"}; its faults are healed.`;
    } else {
      line.textContent = "Plays only the file's faults, timed from when you press Play.";
    }
  }

  function drawLog(lines) {
    $("log").replaceChildren(...lines.map((l) =>
      el("li", {}, el("span", { class: "chaos-muted" }, new Date(l.at * 1000).toLocaleTimeString()), " ", l.message)));
  }

  // -- the fault form -----------------------------------------------------------------------

  function kindInfo() {
    const kind = form.elements.kind.value;
    return form.querySelector(`fieldset[data-kind="${kind}"]`);
  }

  function chosenTargets() {
    const info = kindInfo();
    const services = lastState ? lastState.topology.services.map((s) => s.name) : [];
    const isService = (t) => services.includes(t);
    return [...selected].filter((t) => (info.dataset.targets === "services" ? isService(t) : !isService(t)));
  }

  function updateTargets() {
    const info = kindInfo();
    for (const fs of form.querySelectorAll("fieldset.chaos-kind")) fs.hidden = fs !== info;
    $("toxic-options").hidden = info.dataset.toxic !== "yes";
    const targets = chosenTargets();
    const wanted = info.dataset.targets === "services" ? "services" : "links";
    $("targets").textContent = targets.length ? targets.join(", ") : `none yet — tick ${wanted} in the topology table`;
  }

  function number(input) {
    const raw = input.value.trim();
    if (raw === "") return undefined;
    const n = Number(raw);
    return Number.isFinite(n) ? n : raw; // the harness answers a non-number with a 400 naming the field
  }

  async function apply(event) {
    event.preventDefault();
    const info = kindInfo();
    const body = { kind: form.elements.kind.value, targets: chosenTargets(), attributes: {} };
    for (const input of info.querySelectorAll("input")) {
      const v = number(input);
      if (v !== undefined) body.attributes[input.name] = v;
    }
    if (info.dataset.toxic === "yes") {
      body.stream = form.elements.stream.value;
      const tox = number(form.elements.toxicity);
      if (tox !== undefined) body.toxicity = tox;
    }
    const duration = number(form.elements.duration_s);
    if (duration !== undefined) body.duration_s = duration;
    if (form.elements.name.value.trim()) body.name = form.elements.name.value.trim();
    const res = await act("POST", "faults", body, (d) => `applied ${d.applied} on ${d.targets.join(", ")}`);
    if (res.ok) form.elements.name.value = "";
  }

  // -- wiring -------------------------------------------------------------------------------

  form.setAttribute("novalidate", ""); // one validator, the harness's, with one kind of message
  form.addEventListener("submit", apply);
  form.elements.kind.addEventListener("change", updateTargets);
  panel.querySelector('[data-action="heal-all"]').addEventListener("click", () =>
    act("POST", "faults/heal-all", {}, (d) => (d.healed.length ? `healed ${d.healed.join(", ")}` : "nothing was active")));
  panel.querySelector('[data-action="finish"]').addEventListener("click", () =>
    act("POST", "finish", {}, () => "stopping the test; the session is being healed, settled and checked"));
  panel.querySelector('[data-action="play"]').addEventListener("click", () =>
    act("POST", "schedule", { scenario: $("scenarios").value }, (d) => `playing ${d.started}: ${d.faults.join(", ")}`));
  panel.querySelector('[data-action="stop-schedule"]').addEventListener("click", () =>
    act("POST", "schedule/stop", {}, (d) => `stopped ${d.stopped}`));

  function visible() {
    return !embedded || new URLSearchParams(window.location.search).get("tab") === "chaos";
  }

  async function refresh() {
    if (!visible()) return;
    const res = await api("GET", "state");
    if (res.ok) draw(res.data);
    else {
      $("session-state").textContent = "not connected";
      $("session-state").className = "chaos-tag fail";
      notice(res.data.error || `HTTP ${res.status}`, "error");
    }
  }

  // Locust's page is a React app that fills the window and switches tabs without reloading: follow
  // its ?tab= query, and lay the panel over the (empty) Chaos tab, just under the tab bar.
  function place() {
    const tabs = document.querySelector('#root [role="tablist"]');
    if (!tabs) return;
    const r = tabs.getBoundingClientRect();
    panel.style.top = `${Math.round(r.bottom + window.scrollY)}px`;
    panel.style.left = panel.style.right = `${Math.round(r.left + window.scrollX)}px`;
  }
  let shown = null;
  setInterval(() => {
    const now = visible();
    if (embedded && now) place();
    if (now !== shown) {
      shown = now;
      panel.hidden = !now;
      if (now) refresh();
    }
  }, 250);
  setInterval(refresh, REFRESH_MS);
  updateTargets();
})();
