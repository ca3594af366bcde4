// The job page: follow a queued or running job live over a websocket
// (queue position, progress, previews, then the results, shown in place),
// and fall back to polling the JSON API if the socket fails. Every
// (re)connect starts from the server's current state, so nothing is missed.
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
  let done = false;
  let socket = null;

  function showResults(job) {
    done = true;
    statusOut.textContent = job.status;
    const live = document.getElementById("live");
    if (live) live.hidden = true;
    if (job.error) {
      const error = document.getElementById("job-error");
      error.textContent = job.error + (job.status === "failed" ? " You were not charged." : "");
      error.hidden = false;
    }
    // What it cost, now that it ended: the charge, not the hold.
    const credits = document.getElementById("job-credits");
    if (job.status === "succeeded") {
      credits.textContent = "Charged " + job.credits_charged + " credit" + (job.credits_charged === 1 ? "" : "s");
    } else {
      credits.textContent = "Nothing charged";
    }
    const results = document.getElementById("results");
    const aside = results.querySelector("[data-aside]"); // the mask or control picture: the results go before it
    job.images.forEach(function (image, index) {
      const figure = document.createElement("figure");
      figure.className = "card";
      const img = document.createElement("img");
      img.src = image.url;
      img.alt = "Result " + (index + 1);
      const caption = document.createElement("figcaption");
      const download = document.createElement("a");
      download.href = image.url;
      download.download = job.id + "-" + (index + 1) + ".png";
      download.textContent = "Download";
      caption.appendChild(download);
      if (index === 0 && root.dataset.owner === "true") {
        const reuse = document.createElement("a");
        reuse.href = root.dataset.createUrl + "?parent=" + job.id;
        reuse.textContent = "Use as input";
        const inpaint = document.createElement("a");
        inpaint.href = root.dataset.createUrl + "?parent=" + job.id + "&mode=inpaint";
        inpaint.textContent = "Inpaint this";
        const structure = document.createElement("a");
        structure.href = root.dataset.createUrl + "?parent=" + job.id + "&mode=controlnet";
        structure.textContent = "Keep its structure";
        caption.append(" · ", reuse, " · ", inpaint, " · ", structure);
      }
      figure.append(img, caption);
      results.insertBefore(figure, aside);
    });
    results.hidden = job.images.length === 0 && !aside;
    const again = document.getElementById("again");
    if (again) again.hidden = false;
    if (socket) socket.close();
  }

  function showProgress(step, total) {
    if (!total) return;
    progress.max = total;
    progress.value = step;
    progressText.textContent = "step " + step + " of " + total;
  }

  function showWebhook(webhook) {
    const out = document.getElementById("webhook-status");
    if (!webhook || !out) return;
    out.textContent = webhook.status;
    document.getElementById("webhook-attempts").textContent =
      webhook.attempts ? "after " + webhook.attempts + " attempt" + (webhook.attempts === 1 ? "" : "s") : "";
  }

  // The server-rendered queue position, kept while queued only.
  function showQueue(job) {
    const out = document.getElementById("queue-position");
    if (!out) return;
    out.hidden = !(job.status === "queued" && job.queue_position);
    if (!out.hidden) out.textContent = " · number " + job.queue_position + " in the queue";
  }

  function showJob(job) {
    if (done) return;
    showQueue(job);
    if (finished.includes(job.status)) showWebhook(job.webhook);
    if (finished.includes(job.status)) { showResults(job); return; }
    statusOut.textContent = job.status;
    if (job.progress.total) showProgress(job.progress.step, job.progress.total);
    else if (job.queue_position) progressText.textContent = "number " + job.queue_position + " in the queue";
  }

  function onMessage(event) {
    const message = JSON.parse(event.data);
    if (message.type === "job") showJob(message.job);
    else if (message.type === "progress" && !done) {
      statusOut.textContent = "running";
      showQueue({ status: "running" });
      showProgress(message.step, message.total);
    }
    else if (message.type === "preview" && preview) { preview.src = message.image; preview.hidden = false; }
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    try { socket = new WebSocket(scheme + window.location.host + "/ws/jobs/" + jobId + "/"); }
    catch (error) { startPolling(); return; }
    socket.onopen = function () { failures = 0; };
    socket.onmessage = onMessage;
    socket.onclose = function () {
      if (done) return;
      failures += 1;
      if (failures >= 3) startPolling();
      else setTimeout(connect, 1000 * failures);
    };
  }

  // While queued, ask for the state now and then: the queue moves when
  // other people's jobs start, which sends this page no event.
  setInterval(function () {
    if (!done && socket && socket.readyState === 1 && statusOut.textContent === "queued") {
      socket.send(JSON.stringify({ type: "sync" }));
    }
  }, 5000);

  async function poll() {
    if (done) return;
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
