// The create page's results, in place: the form is sent with fetch (after
// the other scripts' submit handlers: the mask editor attaches its mask),
// the job is followed over its websocket (queue, progress, a rough preview,
// then the pictures beside the picture they came from, and what was
// charged), and "Use as input", "Inpaint this" and "Keep its structure" set
// the form up on this page. The session's results sit in a strip below.
// Without fetch or websockets the form posts and the job page follows the job.
(function () {
  "use strict";
  const Studio = window.Studio;
  if (!Studio || !window.fetch || !("WebSocket" in window)) return;
  const form = Studio.form;
  const pane = document.getElementById("studio-results");
  const statusOut = document.getElementById("studio-status");
  const progress = document.getElementById("studio-progress");
  const progressText = document.getElementById("studio-progress-text");
  const preview = document.getElementById("studio-preview");
  const images = document.getElementById("studio-images");
  const credits = document.getElementById("studio-credits");
  const errorOut = document.getElementById("studio-error");
  const submit = form.querySelector("button[type=submit]");
  const finished = ["succeeded", "failed", "canceled"];
  // Per person: a tab signed in as someone else never shows these.
  const RECENT = "studio-recent:" + form.dataset.user;
  let current = null; // {id, before, socket, done}

  function showError(body, status) {
    const fallback = status === 403
      ? "This page is out of date (you signed in again elsewhere): reload it and try again."
      : "The request failed; try again.";
    const error = (body && body.error) || { message: fallback };
    const fields = error.fields ? Object.keys(error.fields).map(function (name) {
      return name + ": " + error.fields[name];
    }) : [];
    errorOut.textContent = error.message + (fields.length && !error.message.includes(fields[0]) ? " " + fields.join("; ") : "");
    errorOut.hidden = false;
  }

  form.addEventListener("submit", async function (event) {
    if (event.defaultPrevented) return;
    event.preventDefault();
    errorOut.hidden = true;
    submit.disabled = true;
    // What the pictures will be judged against: the picture it starts from.
    const start = document.getElementById("preview");
    const mode = Studio.mode();
    const before = (mode === "img2img" || mode === "inpaint") && start && !start.hidden ? start.src : null;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json", "X-CSRFToken": form.querySelector("input[name=csrfmiddlewaretoken]").value },
        credentials: "same-origin",
      });
      const body = await response.json().catch(function () { return null; });
      // Not a job (an error, or the sign-in page a lapsed session is sent to).
      if (!response.ok || !body || !body.id) {
        if (response.redirected && !body) { window.location.assign(response.url); return; }
        showError(body, response.status);
        return;
      }
      follow(body, before);
    } catch (error) {
      showError(null);
    } finally {
      // One job at a time here: the button comes back when it ends.
      submit.disabled = Boolean(current && !current.done);
    }
  });

  function follow(job, before) {
    if (current && current.socket) current.socket.close();
    current = { id: job.id, before: before, socket: null, done: false };
    pane.hidden = false;
    images.replaceChildren();
    credits.textContent = job.credits_held + " credit" + (job.credits_held === 1 ? "" : "s") + " held, charged when it succeeds";
    document.getElementById("studio-job-link").href = "/jobs/" + job.id + "/";
    preview.hidden = true;
    progress.hidden = false;
    progress.value = 0;
    show(job);
    connect(current);
    pane.scrollIntoView({ block: "nearest" });
  }

  function show(job) {
    if (!current || job.id !== current.id || current.done) return;
    statusOut.textContent = job.status;
    if (finished.includes(job.status)) { showResults(job); return; }
    if (job.progress.total) showProgress(job.progress.step, job.progress.total);
    else progressText.textContent = job.queue_position ? "number " + job.queue_position + " in the queue" : "";
  }

  function showProgress(step, total) {
    progress.max = total;
    progress.value = step;
    progressText.textContent = "step " + step + " of " + total;
  }

  function figure(src, label, caption) {
    const out = document.createElement("figure");
    const img = document.createElement("img");
    img.src = src;
    img.alt = label;
    const text = document.createElement("figcaption");
    text.append(caption || label);
    out.append(img, text);
    return out;
  }

  function action(label, handler) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link-button";
    button.textContent = label;
    button.addEventListener("click", handler);
    return button;
  }

  function showResults(job) {
    current.done = true;
    submit.disabled = false;
    // What it cost, kept by the quote's "not enough credits" check.
    if (job.status === "succeeded") form.dataset.balance = String(Number(form.dataset.balance) - job.credits_charged);
    if (current.socket) current.socket.close();
    progress.hidden = true;
    preview.hidden = true;
    progressText.textContent = "";
    // What it cost, now that it ended: the charge, not the hold.
    credits.textContent = job.status === "succeeded"
      ? "Charged " + job.credits_charged + " credit" + (job.credits_charged === 1 ? "" : "s")
      : "Nothing charged" + (job.error ? ": " + job.error : "");
    if (current.before && job.images.length) images.append(figure(current.before, "Before: the picture it started from", "Before"));
    job.images.forEach(function (image, index) {
      const caption = document.createElement("span");
      const download = document.createElement("a");
      download.href = image.url;
      download.download = job.id + "-" + (index + 1) + ".png";
      download.textContent = "Download";
      caption.append("Result " + (index + 1) + " · ", download);
      if (index === 0) {
        caption.append(
          " · ", action("Use as input", function () { reuse(job, image, "img2img"); }),
          " · ", action("Inpaint this", function () { reuse(job, image, "inpaint"); }),
          " · ", action("Keep its structure", function () { reuse(job, image, "controlnet"); }),
        );
      }
      images.append(figure(image.url, "Result " + (index + 1), caption));
    });
    if (job.images.length) remember(job);
  }

  // The result becomes the next job's picture (or control picture) on this
  // page, its job the parent (lineage), in the chosen mode.
  async function reuse(job, image, mode) {
    let file;
    try {
      const response = await fetch(image.url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      file = new File([await response.blob()], "result.png", { type: "image/png" });
    } catch (error) {
      // E.g. a bucket's signed URL without CORS for this site: the job page's links still work.
      showError({ error: { message: "Could not fetch the picture here; use the job page's links instead." } });
      return;
    }
    let parent = form.querySelector("input[name=parent_job]");
    if (!parent) {
      parent = document.createElement("input");
      parent.type = "hidden";
      parent.name = "parent_job";
      parent.dataset.inPlace = "1";
      form.append(parent);
    }
    parent.value = job.id;
    const radio = form.querySelector("input[name=mode][value=" + mode + "]");
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
    const input = document.getElementById(mode === "controlnet" ? "id_control_image" : "id_image");
    Studio.setFile(input, file);
    input.dispatchEvent(new Event("change", { bubbles: true }));
    document.getElementById("id_prompt").focus();
  }

  function connect(followed) {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    let socket;
    try { socket = new WebSocket(scheme + window.location.host + "/ws/jobs/" + followed.id + "/"); }
    catch (error) { poll(followed); return; }
    followed.socket = socket;
    socket.onmessage = function (event) {
      const message = JSON.parse(event.data);
      if (followed !== current || followed.done) return;
      if (message.type === "job") show(message.job);
      else if (message.type === "progress") { statusOut.textContent = "running"; showProgress(message.step, message.total); }
      else if (message.type === "preview") { preview.src = message.image; preview.hidden = false; }
    };
    socket.onclose = function () { if (!followed.done && followed === current) poll(followed); };
  }

  async function poll(followed) {
    if (followed.done || followed !== current) return;
    try {
      const response = await fetch("/api/v1/jobs/" + followed.id, { credentials: "same-origin" });
      if (response.ok) show(await response.json());
    } catch (error) { /* a network blip: try again on the next tick */ }
    setTimeout(function () { poll(followed); }, 1500);
  }

  // The session's results, newest first, as a strip of links to their jobs.
  function recent() {
    try { return JSON.parse(sessionStorage.getItem(RECENT) || "[]"); } catch (error) { return []; }
  }

  function remember(job) {
    const list = [{ id: job.id, url: job.images[0].url, prompt: job.prompt }]
      .concat(recent().filter(function (item) { return item.id !== job.id; })).slice(0, 12);
    try { sessionStorage.setItem(RECENT, JSON.stringify(list)); } catch (error) { /* storage full or off */ }
    showRecent();
  }

  function showRecent() {
    const list = recent();
    const strip = document.getElementById("recent-strip");
    strip.replaceChildren();
    list.forEach(function (item) {
      const entry = document.createElement("li");
      const link = document.createElement("a");
      link.href = "/jobs/" + item.id + "/";
      const img = document.createElement("img");
      img.src = item.url;
      img.alt = item.prompt ? "Result of “" + item.prompt + "”" : "A result";
      img.width = 96;
      link.append(img);
      entry.append(link);
      strip.append(entry);
    });
    document.getElementById("studio-recent").hidden = list.length === 0;
  }
  showRecent();

  // A picture chosen by hand replaces "Use as input"'s: the job it came
  // from is no longer the next one's parent.
  ["id_image", "id_control_image"].forEach(function (id) {
    const input = document.getElementById(id);
    if (input) input.addEventListener("input", function () {
      const parent = form.querySelector("input[name=parent_job][data-in-place]");
      if (parent) parent.remove();
    });
  });
})();
