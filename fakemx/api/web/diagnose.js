// "Diagnose this server": POST /api/servers/{name}/diagnose and show the same lines
// `fakemx diagnose` prints. Self-contained: its own server list, its own section.
// The server's replies are shown with textContent, never as HTML.
"use strict";

(function () {
  const section = document.getElementById("diagnose");
  if (!section) return;
  const select = section.querySelector("#diagnose-server");
  const rcpt = section.querySelector("#diagnose-rcpt");
  const button = section.querySelector("#diagnose-button");
  const verdict = section.querySelector("#diagnose-verdict");
  const output = section.querySelector("#diagnose-output");

  async function loadServers() {
    const response = await fetch("/api/servers", { headers: { accept: "application/json" } });
    if (!response.ok) return;
    const servers = await response.json();
    select.replaceChildren(...servers.map((server) => {
      const option = document.createElement("option");
      option.value = server.name;
      option.textContent = `${server.name} (${server.profile})`;
      return option;
    }));
  }

  async function run() {
    button.disabled = true;
    verdict.textContent = "probing…";
    output.textContent = "";
    const body = rcpt.value.trim() ? { rcpt: rcpt.value.trim() } : {};
    try {
      const response = await fetch(`/api/servers/${encodeURIComponent(select.value)}/diagnose`, {
        method: "POST",
        headers: { accept: "application/json", "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const data = await response.json();
      if (!response.ok) throw new Error(data.error || response.statusText);
      verdict.textContent = `${data.verdict.code} ${data.verdict.title}`;
      verdict.dataset.healthy = String(data.verdict.healthy);
      output.textContent = data.text;
    } catch (error) {
      verdict.textContent = `could not diagnose: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  button.addEventListener("click", run);
  loadServers();
})();
