// A staff conversation page: new messages appear live over the staff
// websocket; on (re)connect it asks for everything after the last one shown.
(function () {
  "use strict";
  const thread = document.getElementById("thread");
  if (!thread) return;
  const conversation = thread.dataset.conversation;
  function lastId() {
    const items = thread.querySelectorAll("li[data-id]");
    return items.length ? Number(items[items.length - 1].dataset.id) : 0;
  }
  function render(message) {
    if (thread.querySelector('li[data-id="' + message.id + '"]')) return;
    const item = document.createElement("li");
    item.className = "chat-" + message.sender;
    item.dataset.id = message.id;
    item.textContent = message.body;
    thread.appendChild(item);
  }
  function connect(attempt) {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + "/ws/support/" + conversation + "/");
    socket.onopen = function () { socket.send(JSON.stringify({ type: "hello", last_id: lastId() })); };
    socket.onmessage = function (event) {
      const data = JSON.parse(event.data);
      if (data.type === "messages") data.messages.forEach(render);
      else if (data.type === "message") render(data.message);
      socket.send(JSON.stringify({ type: "read", up_to: lastId() }));
    };
    socket.onclose = function () { setTimeout(function () { connect(attempt + 1); }, Math.min(30000, 1000 * attempt)); };
  }
  if ("WebSocket" in window) connect(1);
})();
