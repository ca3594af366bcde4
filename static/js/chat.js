// The support chat widget, on every page. Messages come over the websocket
// (/ws/support/) with a polling fallback; on every (re)connect the client
// says the last id it has and gets everything after it. Text is always
// inserted as text, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;
  const toggle = document.getElementById("chat-toggle");
  const panel = document.getElementById("chat-panel");
  const log = document.getElementById("chat-log");
  const form = document.getElementById("chat-form");
  const body = document.getElementById("chat-body");
  const errorOut = document.getElementById("chat-error");
  const unread = document.getElementById("chat-unread");
  const jobNote = document.getElementById("chat-job");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const seen = new Set();
  let lastId = 0;
  let socket = null;
  let polling = false;
  let job = null;

  function render(message) {
    if (seen.has(message.id)) return;
    seen.add(message.id);
    lastId = Math.max(lastId, message.id);
    const item = document.createElement("li");
    item.className = "chat-" + message.sender;
    item.textContent = message.body;
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
  }

  function showError(text) { errorOut.textContent = text; errorOut.hidden = !text; }

  function onMessage(event) {
    const data = JSON.parse(event.data);
    if (data.type === "messages") data.messages.forEach(render);
    else if (data.type === "message") render(data.message);
    else if (data.type === "error") showError(data.message);
    else if (data.type === "ack") showError("");
    if (socket && socket.readyState === 1 && lastId) socket.send(JSON.stringify({ type: "read", up_to: lastId }));
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    try { socket = new WebSocket(scheme + window.location.host + "/ws/support/"); }
    catch (error) { startPolling(); return; }
    socket.onopen = function () { socket.send(JSON.stringify({ type: "hello", last_id: lastId })); };
    socket.onmessage = onMessage;
    socket.onclose = function () { socket = null; startPolling(); };
  }

  async function poll() {
    try {
      const response = await fetch(root.dataset.url + "?after=" + lastId, { credentials: "same-origin" });
      if (response.ok) (await response.json()).messages.forEach(render);
    } catch (error) { /* try again on the next tick */ }
    setTimeout(poll, 4000);
  }

  function startPolling() { if (!polling) { polling = true; poll(); } }

  function open(withJob) {
    panel.hidden = false;
    toggle.setAttribute("aria-expanded", "true");
    unread.hidden = true;
    if (withJob) { job = withJob; jobNote.textContent = "About job " + withJob; jobNote.hidden = false; }
    if (!socket && !polling) { if ("WebSocket" in window) connect(); else startPolling(); }
    body.focus();
  }

  toggle.addEventListener("click", function () {
    if (panel.hidden) open(null); else { panel.hidden = true; toggle.setAttribute("aria-expanded", "false"); }
  });
  document.querySelectorAll("[data-ask-about-job]").forEach(function (button) {
    button.addEventListener("click", function () { open(button.dataset.askAboutJob); });
  });

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const text = body.value.trim();
    if (!text) return;
    const clientId = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Date.now() + Math.random());
    const data = new FormData();
    data.set("body", job ? "[job " + job + "] " + text : text);
    data.set("client_id", clientId);
    if (job) data.set("job", job);
    // Sent over HTTP (it also creates a visitor's conversation and cookie);
    // the reply arrives over the socket or the next poll.
    const response = await fetch(root.dataset.url, {
      method: "POST", body: data, headers: { "X-CSRFToken": csrf }, credentials: "same-origin",
    });
    const reply = await response.json();
    if (!response.ok) { showError(reply.error.message); return; }
    showError("");
    body.value = "";
    if (!socket && "WebSocket" in window) connect();
    if (polling || !socket) { const after = await fetch(root.dataset.url + "?after=" + lastId, { credentials: "same-origin" }); (await after.json()).messages.forEach(render); }
  });
})();
