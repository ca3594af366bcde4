// The job page: follow a queued or running job by polling the JSON API,
// then reload once it ends to show the results and their actions.
(function () {
  "use strict";
  const root = document.getElementById("job");
  if (!root) return;
  const url = "/api/v1/jobs/" + root.dataset.jobId;
  const statusOut = document.getElementById("job-status");
  const progress = document.getElementById("progress");
  const progressText = document.getElementById("progress-text");
  const finished = ["succeeded", "failed", "canceled"];

  async function poll() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const job = await response.json();
        if (finished.includes(job.status)) { window.location.reload(); return; }
        statusOut.textContent = job.status;
        if (job.progress.total) {
          progress.max = job.progress.total;
          progress.value = job.progress.step;
          progressText.textContent = "step " + job.progress.step + " of " + job.progress.total;
        } else if (job.queue_position) {
          progressText.textContent = "number " + job.queue_position + " in the queue";
        }
      }
    } catch (error) { /* a network blip: try again on the next tick */ }
    setTimeout(poll, 1500);
  }
  setTimeout(poll, 1000);
})();
