// The job page: follow a queued or running job live over a websocket
// (progress, previews), and fall back to polling the JSON API if the socket
// fails. Every (re)connect starts from the server's current state, so
// nothing is missed. When the job ends, reload to show results and actions.
(function () {
  "use strict";
  const root = document.getElementById("job");
  if (!root) return;
  const jobId = root.dataset.jobId;
  const statusOut = document.getElementById("job-status");
  const progress = document.getElementById("progress");
  const progressText = document.getElementById("progress-text");
  const preview = document.getElementById("live-preview");
  const finished = ["succeeded", "failed", "canceled"];
  let polling = false;
  let failures = 0;

  function showProgress(step, total) {
    if (!total) return;
    progress.max = total;
    progress.value = step;
    progressText.textContent = "step " + step + " of " + total;
  }

  function showJob(job) {
    if (finished.includes(job.status)) { window.location.reload(); return; }
    statusOut.textContent = job.status;
    if (job.progress.total) showProgress(job.progress.step, job.progress.total);
    else if (job.queue_position) progressText.textContent = "number " + job.queue_position + " in the queue";
  }

  function onMessage(event) {
    const message = JSON.parse(event.data);
    if (message.type === "job") showJob(message.job);
    else if (message.type === "progress") { statusOut.textContent = "running"; showProgress(message.step, message.total); }
    else if (message.type === "preview" && preview) { preview.src = message.image; preview.hidden = false; }
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    let socket;
    try { socket = new WebSocket(scheme + window.location.host + "/ws/jobs/" + jobId + "/"); }
    catch (error) { startPolling(); return; }
    socket.onopen = function () { failures = 0; };
    socket.onmessage = onMessage;
    socket.onclose = function () {
      failures += 1;
      if (failures >= 3) startPolling();
      else setTimeout(connect, 1000 * failures);
    };
  }

  async function poll() {
    try {
      const response = await fetch("/api/v1/jobs/" + jobId, { credentials: "same-origin" });
      if (response.ok) showJob(await response.json());
    } catch (error) { /* a network blip: try again on the next tick */ }
    setTimeout(poll, 1500);
  }

  function startPolling() {
    if (polling) return;
    polling = true;
    poll();
  }

  if ("WebSocket" in window) connect(); else startPolling();
})();
