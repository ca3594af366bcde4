// The create page: pick or drop or paste a picture, preview it, keep the
// price quote and the chosen model's expected wait live as the settings
// change. The server re-checks everything.
(function () {
  "use strict";
  const form = document.getElementById("create-form");
  if (!form) return;
  const fileInput = document.getElementById("id_image");
  const dropzone = document.getElementById("dropzone");
  const preview = document.getElementById("preview");
  const strength = document.getElementById("id_strength");
  const strengthValue = document.getElementById("strength-value");
  const quoteOut = document.getElementById("quote");
  const short = document.getElementById("short");
  const balance = Number(form.dataset.balance);
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  let sourceSize = null;
  let timer = null;

  function useFiles(files) {
    if (!files || !files.length) return;
    const transfer = new DataTransfer();
    transfer.items.add(files[0]);
    fileInput.files = transfer.files;
    showPreview();
  }

  function showPreview() {
    const file = fileInput.files[0];
    if (!file) return;
    const url = URL.createObjectURL(file);
    preview.onload = function () {
      sourceSize = [preview.naturalWidth, preview.naturalHeight];
      scheduleQuote();
    };
    preview.src = url;
    preview.hidden = false;
  }

  dropzone.addEventListener("dragover", function (event) { event.preventDefault(); dropzone.classList.add("over"); });
  dropzone.addEventListener("dragleave", function () { dropzone.classList.remove("over"); });
  dropzone.addEventListener("drop", function (event) {
    event.preventDefault();
    dropzone.classList.remove("over");
    useFiles(event.dataTransfer.files);
  });
  document.addEventListener("paste", function (event) { useFiles(event.clipboardData && event.clipboardData.files); });
  fileInput.addEventListener("change", showPreview);

  form.querySelectorAll(".preset").forEach(function (button) {
    button.addEventListener("click", function () {
      strength.value = button.dataset.strength;
      strength.dispatchEvent(new Event("input", { bubbles: true }));
    });
  });
  strength.addEventListener("input", function () { strengthValue.textContent = strength.value; });

  // The chosen model's expected wait (server-rendered on each model card).
  const waitOut = document.getElementById("wait");
  function showWait() {
    const model = form.querySelector("input[name=model]:checked");
    waitOut.textContent = model ? model.dataset.wait : "–";
  }
  showWait();

  // Choosing a model fills its defaults into empty fields.
  form.querySelectorAll("input[name=model]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      showWait();
      const steps = document.getElementById("id_steps");
      const guidance = document.getElementById("id_guidance_scale");
      steps.max = radio.dataset.maxSteps;
      if (!steps.value) steps.placeholder = radio.dataset.steps;
      if (!guidance.value) guidance.placeholder = radio.dataset.guidance;
      strength.value = radio.dataset.strength;
      strengthValue.textContent = strength.value;
    });
  });

  // Output size when left empty: the picture fitted within the model's max
  // side, in multiples of 8 (the same rule as generation/params.py).
  function fittedSize(maxSide) {
    if (!sourceSize) return null;
    const scale = Math.min(1, maxSide / Math.max(sourceSize[0], sourceSize[1]));
    return sourceSize.map(function (side) { return Math.max(64, Math.floor((side * scale) / 8) * 8); });
  }

  function scheduleQuote() {
    clearTimeout(timer);
    timer = setTimeout(updateQuote, 250);
  }

  async function updateQuote() {
    const model = form.querySelector("input[name=model]:checked");
    if (!model) return;
    const data = new FormData(form);
    data.delete("image");
    data.delete("prompt");
    for (const [key, value] of Array.from(data.entries())) { if (value === "") data.delete(key); }
    if (!data.get("width") && !data.get("height")) {
      const size = fittedSize(Number(model.dataset.maxSide));
      if (size) { data.set("width", size[0]); data.set("height", size[1]); }
    }
    const response = await fetch(form.dataset.quoteUrl, {
      method: "POST", body: data, headers: { "X-CSRFToken": csrf }, credentials: "same-origin",
    });
    const body = await response.json();
    if (response.ok) {
      quoteOut.textContent = body.credits;
      short.hidden = body.credits <= balance;
    } else {
      quoteOut.textContent = "–";
      short.hidden = true;
    }
  }

  form.addEventListener("input", scheduleQuote);
  form.addEventListener("change", scheduleQuote);
  scheduleQuote();
})();
