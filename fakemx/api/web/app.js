// fakemx lab page: plain JavaScript over the HTTP API, live through /api/events.
// Everything a client sent (commands, headers, bodies) is shown with textContent,
// never as HTML, because a relay under test may send anything.
"use strict";

const PAGE_SIZE = 50;
const state = {
  servers: new Map(),   // name -> ServerInfo
  catalog: new Map(),   // profile name -> CatalogEntry
  codes: new Map(),     // code -> CodeInfo
  selected: null,       // server name
  sessions: [],         // SessionOut of the selected server, newest first
  messages: [],         // MessageSummary of the selected server, newest first
  openSessions: new Set(),  // ids whose transcript is expanded
  role: "instructor",   // GET /api/role: a student's token sees hidden cases by name only
  studentMode: false,   // a lab in student mode (fakemx lab --student)
  sender: "",           // show only sessions whose sender contains this (a student's own)
};

const LAB_DOMAIN = "lab.fakemx.test";
const student = () => state.role === "student";
const hidden = (server) => server.students === "hidden" && student();
const mine = (session) => !state.sender
  || (session.sender || "").toLowerCase().includes(state.sender.toLowerCase());

// region helpers -------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(method, path, body) {
  const init = { method, headers: { accept: "application/json" } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = response.headers.get("content-type")?.includes("json")
    ? await response.json() : null;
  if (!response.ok) throw new Error(data?.error || `${response.status} ${response.statusText}`);
  return data;
}

const enc = encodeURIComponent;
const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });

function notice(text, kind = "ok") {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
}

function codeClass(code) {
  const first = String(code || "").trim()[0];
  return first === "2" ? "ok" : first === "4" ? "warn" : first === "5" ? "bad" : "neutral";
}

// What a session amounted to, as a colour: fakemx broke the connection (bad),
// answered an error (warn for 4xx, bad for 5xx), all went well (ok), or still open.
const BROKEN_BY_FAKEMX = ["dropped_fin", "dropped_rst", "reset_after_reply", "error"];
function sessionClass(session) {
  if (session.outcome === "open") return "open";
  const codes = session.events.filter((e) => e.kind === "server").map((e) => e.text[0]);
  if (BROKEN_BY_FAKEMX.includes(session.outcome) || codes.includes("5")) return "bad";
  if (codes.includes("4") || ["closed_after_reply", "timeout"].includes(session.outcome)) return "warn";
  return "ok";
}

// endregion
// region servers ---------------------------------------------------------------

function renderServerList() {
  const list = document.getElementById("server-list");
  const filter = document.getElementById("server-filter");
  filter.hidden = state.servers.size < 8;
  const words = filter.value.trim().toLowerCase();
  const items = [];
  for (const server of state.servers.values()) {
    const text = `${server.code} ${server.profile} ${server.name} ${server.title}`.toLowerCase();
    if (words && !text.includes(words)) continue;
    items.push(h("li", {},
      h("button", {
        type: "button",
        class: "server" + (server.name === state.selected ? " selected" : ""),
        dataset: { server: server.name },
        "aria-current": server.name === state.selected ? "true" : null,
        onclick: () => select(server.name),
      },
        h("span", { class: `badge ${codeClass(server.code)}` },
          server.code || (server.students === "hidden" ? "?" : "custom")),
        h("span", { class: "server-text" },
          h("span", { class: "server-name" }, server.profile),
          h("span", { class: "server-meta" },
            // A lab server keeps its name when it plays another profile: say so.
            ![server.profile, server.address].includes(server.name) ? `${server.name} · ` : "",
            server.address,
            server.listener !== "open" ? h("span", { class: "tag" }, server.listener) : null)),
        h("span", { class: "server-count", title: "sessions since the last reset" },
          server.sessions || ""))));
  }
  list.replaceChildren(...items);
}

// Postfix's reasons name the server as {host} (its name[address] in the relay's log).
function withHost(text, server) {
  const host = server.host === "0.0.0.0" || server.host === "::" ? "fakemx" : server.host;
  return String(text).replaceAll("{host}", `${host}[${host}]:${server.port}`);
}

function labCommand(server) {
  const to = state.studentMode ? `bob@${server.name}.${LAB_DOMAIN}` : "bob@example.test";
  return state.studentMode
    ? `swaks --server 127.0.0.1 --from ${state.sender || "studentNN@students." + LAB_DOMAIN} --to ${to}`
    : `swaks --server ${server.address} --to ${to}`;
}

// A student's view of a case not revealed yet: its name, where to send, what to look for.
function renderHiddenScenario(server, card) {
  card.replaceChildren(
    h("div", { class: "scenario-head" },
      h("span", { class: "badge big neutral" }, "?"),
      h("div", {},
        h("h1", { id: "scenario-title" }, server.name),
        h("p", { class: "muted" }, "send to ", h("code", {}, `bob@${server.name}.${LAB_DOMAIN}`),
          " through the lab relay"))),
    h("p", { id: "scenario-hidden", class: "hidden-note" },
      "The scenario is hidden until your trainer reveals it. Send the exercise sheet's message, "
      + "then read the timeline below: where did the session break, and what did the server "
      + "answer? Compare with the relay's queue (postqueue -p) and the non-delivery report."));
}

function revealButton(server) {
  if (student() || !server.students) return null;
  const revealed = server.students === "revealed";
  return h("button", { type: "button", id: "reveal-button", class: "quiet",
    onclick: () => control(
      (info) => info.students === "revealed" ? `${info.name} is revealed to the students.`
        : `${info.name} is hidden from the students again.`,
      () => api(revealed ? "DELETE" : "POST", `/api/servers/${enc(server.name)}/reveal`)),
  }, revealed ? "Hide from students again" : "Reveal to students");
}

function renderScenario() {
  const server = state.servers.get(state.selected);
  const card = document.getElementById("scenario");
  if (!server) { card.replaceChildren(h("p", { class: "muted" }, "No server.")); return; }
  renderEmptyTimeline(server);
  if (hidden(server)) { renderHiddenScenario(server, card); return; }
  const about = server.about;
  const codeInfo = about ? state.codes.get(about.code) : null;
  // What Postfix, Exim and smtplib report, and the settings the profile needs to fail.
  const entry = state.catalog.get(server.profile);
  const reports = entry?.reports || [];
  const needs = entry?.needs || [];
  card.replaceChildren(
    h("div", { class: "scenario-head" },
      h("span", { class: `badge big ${codeClass(server.code)}` }, server.code || "custom"),
      h("div", {},
        h("h1", { id: "scenario-title" }, about?.title || server.profile),
        h("p", { class: "muted" },
          "profile ", h("code", { id: "scenario-profile" }, server.profile),
          " on ", h("code", {}, server.address),
          " · listener ", h("strong", {}, server.listener),
          " · TLS ", server.tls,
          server.rules ? ` · ${server.rules} rule${server.rules === 1 ? "" : "s"}` : "",
          server.students ? ` · students: ${server.students}` : ""),
        revealButton(server))),
    about ? h("dl", { class: "facts" },
      h("dt", {}, "The relay should report"),
      h("dd", { class: "relay-sees" }, about.relay_sees),
      reports.length ? h("dt", {}, "What each sender reports") : null,
      reports.length ? h("dd", {}, h("table", { class: "reports" }, reports.map((r) =>
        h("tr", {}, h("th", {}, r.sender), h("td", { class: "small muted" }, r.setting),
          h("td", { class: "mono small" }, r.says))))) : null,
      needs.length ? h("dt", {}, "It fails only for a sender with") : null,
      needs.length ? h("dd", { class: "needs" }, needs.join(", ")) : null,
      about.ndr ? h("dt", {}, "The sender finally gets") : null,
      about.ndr ? h("dd", { class: "mono" }, about.ndr) : null,
      codeInfo ? h("dt", {}, `What ${about.code} means`) : null,
      codeInfo ? h("dd", {}, codeInfo.meaning) : null) : null,
    about ? h("div", { class: "causes-fixes" },
      h("div", {}, h("h3", {}, "Causes"),
        h("ul", {}, (about.causes.length ? about.causes : ["(none given)"]).map((c) => h("li", {}, c)))),
      h("div", {}, h("h3", {}, "Fixes"),
        h("ul", {}, (about.fixes.length ? about.fixes : ["(none given)"]).map((f) => h("li", {}, f)))))
      : null);
  for (const button of document.querySelectorAll("#listener-buttons button")) {
    button.setAttribute("aria-pressed", String(button.dataset.state === server.listener));
  }
  const select = document.getElementById("scenario-select");
  if (state.catalog.has(server.profile)) select.value = server.profile;
}

// What the timeline says while it is empty: a refusing or silent listener never has a
// session, so say what the relay sees instead of waiting for one.
function renderEmptyTimeline(server) {
  const empty = document.getElementById("timeline-empty");
  if (server.listener === "refuse") {
    empty.replaceChildren("No session will appear: this server refuses every connection "
      + "(an RST to the SYN), so the relay logs “Connection refused” and retries; nothing "
      + "reaches the server's journal.");
  } else if (server.listener === "blackhole") {
    empty.replaceChildren("No session will appear: this server never answers the SYN, so "
      + "the relay waits out its connect timeout and logs “Connection timed out”; nothing "
      + "reaches the server's journal.");
  } else if (state.sender) {
    empty.replaceChildren(`No session from ${state.sender} yet. Send the message, then watch `
      + "here (or clear the filter).");
  } else {
    empty.replaceChildren("No sessions yet. Point a relay at this server, or try ",
      h("code", { id: "try-command" }, labCommand(server)), ".");
  }
}

function renderCatalogSelect() {
  const select = document.getElementById("scenario-select");
  const groups = new Map();
  for (const entry of state.catalog.values()) {
    if (!groups.has(entry.code)) groups.set(entry.code, []);
    groups.get(entry.code).push(entry);
  }
  const codes = [...groups.keys()].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  select.replaceChildren(...codes.map((code) => h("optgroup", { label: code },
    groups.get(code).map((entry) => h("option", { value: entry.name },
      `${entry.name} — ${entry.title}`)))));
}

// endregion
// region sessions ------------------------------------------------------------------

// Where the session broke: the first 4xx/5xx reply (what the relay sees), else the
// note of the rule that fired (a drop, a stall), else the end if fakemx ended it.
function breakIndex(session) {
  const events = session.events;
  const reply = events.findIndex((e) => e.kind === "server" && /^[45]\d\d/.test(e.text));
  if (reply >= 0) return reply;
  const rule = events.findIndex((e) => e.kind === "fakemx" && e.text.startsWith("rule "));
  if (rule >= 0) return rule;
  return BROKEN_BY_FAKEMX.includes(session.outcome) ? events.length - 1 : -1;
}

function renderTranscript(session) {
  const broke = breakIndex(session);
  return h("ol", { class: "transcript" }, session.events.map((event, i) => h("li", {
    class: `event ${event.kind}` + (i === broke ? " broke" : ""),
  },
    h("span", { class: "at" }, `+${((event.at - session.started) * 1000).toFixed(0)} ms`),
    h("span", { class: "who" }, event.kind === "client" ? "C:" : event.kind === "server" ? "S:" : "·"),
    h("span", { class: "text" }, event.text),
    i === broke ? h("span", { class: "broke-mark" }, "broke here") : null)));
}

// The headline: how it ended, after the error reply that decided it if there was one
// (a greylisted session ends with the client's QUIT, but the 451 is what matters).
function headline(session) {
  const reply = session.events.find((e) => e.kind === "server" && /^[45]\d\d/.test(e.text));
  if (!reply || BROKEN_BY_FAKEMX.includes(session.outcome)) return session.ended_by;
  return `${reply.text.slice(0, 90)} · then ${session.ended_by}`;
}

function renderSession(session) {
  const profile = state.catalog.get(session.profile);
  const running = state.servers.get(session.server);
  const about = profile ? {
    relay_sees: profile.relay_sees, postfix: profile.postfix_reason,
    causes: profile.causes, fixes: profile.fixes, title: profile.title, code: profile.code,
  } : running?.profile === session.profile && running.about ? {
    relay_sees: running.about.relay_sees, postfix: running.about.postfix?.reason,
    causes: running.about.causes, fixes: running.about.fixes, title: running.about.title,
    code: running.about.code,
  } : null;
  const failed = breakIndex(session) >= 0;
  const open = state.openSessions.has(session.id) || session === state.sessions[0];
  return h("li", { class: `session ${sessionClass(session)}`, dataset: {
    session: session.id, outcome: session.outcome, profile: session.profile } },
    h("details", { open: open, ontoggle: (e) => {
      if (e.target.open) state.openSessions.add(session.id);
      else state.openSessions.delete(session.id);
    } },
      h("summary", {},
        h("span", { class: "dot" }),
        h("span", { class: "session-id" }, `#${session.id}`),
        h("span", { class: "session-time" }, clock(session.started)),
        h("span", { class: "session-client" }, `${session.client_ip} · attempt ${session.attempt}`),
        h("span", { class: "ended-by" }, headline(session)),
        session.sender && state.studentMode
          ? h("span", { class: "session-sender" }, session.sender) : null,
        session.profile !== running?.profile
          ? h("span", { class: "tag neutral", title: "the profile this session ran" },
            session.profile) : null),
      renderTranscript(session),
      failed && about ? h("div", { class: "diagnosis" },
        h("p", {}, h("strong", {}, "The relay should report: "),
          h("span", { class: "relay-sees" }, about.relay_sees)),
        about.postfix ? h("p", { class: "mono small" }, "Postfix: ",
          running ? withHost(about.postfix, running) : about.postfix) : null,
        h("details", { class: "why" },
          h("summary", {}, `Causes and fixes (${about.code})`),
          h("div", { class: "causes-fixes" },
            h("div", {}, h("h3", {}, "Causes"), h("ul", {}, about.causes.map((c) => h("li", {}, c)))),
            h("div", {}, h("h3", {}, "Fixes"), h("ul", {}, about.fixes.map((f) => h("li", {}, f)))))))
        : null,
      session.message_ids.length ? h("p", { class: "small" }, "stored as message ",
        session.message_ids.map((id) => h("a", { href: `/api/messages/${id}/raw` }, `#${id}`)))
        : null));
}

function renderTimeline() {
  const list = document.getElementById("timeline");
  list.replaceChildren(...state.sessions.map(renderSession));
  document.getElementById("timeline-empty").hidden = state.sessions.length > 0;
  const server = state.servers.get(state.selected);
  if (server) renderEmptyTimeline(server);
  document.getElementById("session-count").textContent = server ? `(${server.sessions})` : "";
}

// Merge by id, newest first. A page fetched while events were arriving may be
// older than what the events already brought, so an ended session always wins
// over the same session still open, and nothing the events brought is lost.
function merged(current, incoming) {
  const byId = new Map(current.map((item) => [item.id, item]));
  for (const item of incoming) {
    const known = byId.get(item.id);
    if (!known || known.ended == null) byId.set(item.id, item);
  }
  return [...byId.values()].sort((a, b) => b.id - a.id).slice(0, PAGE_SIZE);
}

// endregion
// region messages --------------------------------------------------------------------

function renderMessages() {
  const list = document.getElementById("messages");
  list.replaceChildren(...state.messages.map((message) => h("li", { class: "message",
    dataset: { message: message.id } },
    h("details", { ontoggle: (e) => e.target.open && loadMessageBody(message.id, e.target) },
      h("summary", {},
        h("span", { class: "subject" }, message.subject || "(no subject)"),
        h("span", { class: "envelope" }, `${message.mail_from || "<>"} → ${message.rcpt_tos.join(", ")}`),
        h("span", { class: "meta" }, `${clock(message.received)} · ${message.size} bytes · session #${message.session_id} · `,
          h("a", { href: `/api/messages/${message.id}/raw`, download: `${message.id}.eml` }, ".eml"))),
      h("pre", { class: "body" }, "…")))));
  document.getElementById("messages-empty").hidden = state.messages.length > 0;
  const server = state.servers.get(state.selected);
  document.getElementById("message-count").textContent = server ? `(${server.messages})` : "";
}

async function loadMessageBody(id, details) {
  const message = await api("GET", `/api/messages/${id}`);
  const headers = message.headers.map((x) => `${x.name}: ${x.value}`).join("\n");
  details.querySelector("pre").textContent =
    `${headers}\n\n${message.text ?? message.html ?? ""}` +
    (message.attachments.length ? `\n\n[attachments: ${message.attachments.join(", ")}]` : "");
}

// endregion
// region loading and live updates ---------------------------------------------------------

async function loadSelected() {
  const name = state.selected;
  const [sessions, messages] = await Promise.all([
    api("GET", `/api/sessions?server=${enc(name)}&limit=${PAGE_SIZE}`
      + (state.sender ? `&sender=${enc(state.sender)}` : "")),
    api("GET", `/api/messages?server=${enc(name)}&limit=${PAGE_SIZE}`),
  ]);
  if (name !== state.selected) return;  // the user moved on meanwhile
  state.sessions = merged(state.sessions, sessions.items);
  state.messages = merged(state.messages, messages.items);
  renderTimeline();
  renderMessages();
}

async function refreshMessages() {
  const page = await api("GET", `/api/messages?server=${enc(state.selected)}&limit=${PAGE_SIZE}`);
  state.messages = merged(state.messages, page.items);
  renderMessages();
}

function select(name) {
  state.selected = name;
  state.sessions = [];
  state.messages = [];
  state.openSessions.clear();
  history.replaceState(null, "", `#${enc(name)}`);
  renderServerList();
  renderScenario();
  notice("");
  loadSelected().catch((error) => notice(error.message, "error"));
}

function onSessionEvent(kind, session) {
  const server = state.servers.get(session.server);
  if (server && kind === "started") server.sessions += 1;
  if (server && kind === "ended") server.messages += session.message_ids.length;
  renderServerList();
  if (session.server !== state.selected || !mine(session)) return;
  state.sessions = merged(state.sessions, [session]);
  renderTimeline();
  if (kind === "ended" && session.message_ids.length) {
    refreshMessages().catch((error) => notice(error.message, "error"));
  }
}

function onServerEvent(info) {
  const before = state.servers.get(info.name);
  state.servers.set(info.name, info);
  renderServerList();
  if (info.name !== state.selected) return;
  renderScenario();
  if (before && info.sessions < before.sessions) {  // reset: the journal was cleared
    state.sessions = [];
    state.messages = [];
    renderTimeline();
    renderMessages();
  }
}

function listen() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  events.addEventListener("open", () => {
    live.dataset.state = "live";
    live.textContent = "live";
    // Anything missed while disconnected: reload the selected server's view.
    if (state.selected) loadSelected().catch(() => {});
  });
  events.addEventListener("error", () => {
    live.dataset.state = "reconnecting";
    live.textContent = "reconnecting…";
  });
  events.addEventListener("session", (e) => {
    const data = JSON.parse(e.data);
    onSessionEvent(data.kind, data.session);
  });
  events.addEventListener("server", (e) => onServerEvent(JSON.parse(e.data)));
}

// endregion
// region controls --------------------------------------------------------------------------

async function control(label, call) {
  const buttons = document.querySelectorAll(".controls button");
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const info = await call();
    onServerEvent(info);
    notice(label(info), "ok");
  } catch (error) {
    notice(error.message, "error");
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function wireControls() {
  document.getElementById("switch-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = state.selected;
    const chosen = document.getElementById("scenario-select").value;
    control((info) => `${info.name} now plays ${info.profile}; the next connection gets it.`,
      () => api("PUT", `/api/servers/${enc(name)}/profile`, { catalog: chosen }));
  });
  for (const button of document.querySelectorAll("#listener-buttons button")) {
    button.addEventListener("click", () => {
      const name = state.selected;
      control((info) => `Listener ${info.listener}.`,
        () => api("PUT", `/api/servers/${enc(name)}/listener`, { state: button.dataset.state }));
    });
  }
  document.getElementById("reset-button").addEventListener("click", () => {
    const name = state.selected;
    control(() => "Sessions, messages and counters forgotten.",
      () => api("POST", `/api/servers/${enc(name)}/reset`));
  });
  document.getElementById("server-filter").addEventListener("input", renderServerList);
  const senderFilter = document.getElementById("sender-filter");
  senderFilter.addEventListener("change", () => {
    state.sender = senderFilter.value.trim();
    localStorage.setItem("fakemx-sender", state.sender);
    if (state.selected) select(state.selected);
  });
}

function applyRole(role) {
  state.role = role.role;
  state.studentMode = role.student_mode;
  // A student only looks: the controls change the lab for the whole class.
  document.querySelector(".controls").hidden = student();
  // Diagnosing is a POST, and its verdict names the scenario: the trainer's.
  const diagnose = document.getElementById("diagnose");
  if (diagnose) diagnose.hidden = student();
  const senderFilter = document.getElementById("sender-filter");
  senderFilter.hidden = !state.studentMode;
  state.sender = state.studentMode ? localStorage.getItem("fakemx-sender") || "" : "";
  senderFilter.value = state.sender;
  document.body.dataset.role = state.studentMode ? state.role : "";
}

async function main() {
  wireControls();
  const [servers, catalog, codes, role] = await Promise.all([
    api("GET", "/api/servers"), api("GET", "/api/catalog"), api("GET", "/api/codes"),
    api("GET", "/api/role"),
  ]);
  applyRole(role);
  for (const server of servers) state.servers.set(server.name, server);
  for (const entry of catalog) state.catalog.set(entry.name, entry);
  for (const code of codes) state.codes.set(code.code, code);
  renderCatalogSelect();
  const wanted = decodeURIComponent(location.hash.slice(1));
  listen();
  select(state.servers.has(wanted) ? wanted : servers[0].name);
  // A link to another server of this page (#case-007) selects it without a reload.
  window.addEventListener("hashchange", () => {
    const name = decodeURIComponent(location.hash.slice(1));
    if (state.servers.has(name) && name !== state.selected) select(name);
  });
}

main().catch((error) => notice(`Could not load: ${error.message}`, "error"));
