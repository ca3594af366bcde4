// The create page: image to image (pick or drop or paste a picture, preview
// it) or text to image (no picture; size presets of the chosen model), with
// the price quote and the chosen model's expected wait kept live as the
// settings change. The server re-checks everything.
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

  // Image to image or text to image: text to image hides (and disables, so
  // the form does not send them) the picture and the strength, shows the
  // size presets, and offers only the models that can do it.
  const sizeSelect = document.getElementById("id_size");
  const widthInput = document.getElementById("id_width");
  const heightInput = document.getElementById("id_height");

  function currentMode() {
    const checked = form.querySelector("input[name=mode]:checked");
    return checked ? checked.value : "img2img";
  }

  function fillSizes() {
    const model = form.querySelector("input[name=model]:checked");
    sizeSelect.innerHTML = "";
    if (!model) return;
    model.dataset.sizes.split(";").forEach(function (preset) {
      const parts = preset.split("=");
      const option = document.createElement("option");
      option.value = parts[1];
      option.textContent = parts[0] + " " + parts[1].replace("x", "×");
      sizeSelect.appendChild(option);
    });
    const chosen = widthInput.value + "x" + heightInput.value;
    if (Array.from(sizeSelect.options).some(function (o) { return o.value === chosen; })) sizeSelect.value = chosen;
  }

  function applySize() {
    const parts = sizeSelect.value.split("x");
    widthInput.value = parts[0];
    heightInput.value = parts[1];
  }

  function showMode() {
    const text = currentMode() === "txt2img";
    document.getElementById("picture-section").hidden = text;
    document.getElementById("strength-settings").hidden = text;
    document.getElementById("size-settings").hidden = !text;
    fileInput.disabled = text;
    strength.disabled = text;
    form.querySelectorAll("[data-mode-text]").forEach(function (node) {
      node.hidden = node.dataset.modeText !== currentMode();
    });
    form.querySelectorAll("input[name=model]").forEach(function (radio) {
      const offered = radio.dataset.modes.split(" ").indexOf(currentMode()) >= 0;
      radio.closest(".model-card").classList.toggle("wrong-mode", !offered);
      if (!offered) {
        radio.dataset.noMode = "1";
        radio.disabled = true;
        radio.checked = false;
      } else if (radio.dataset.noMode) {
        delete radio.dataset.noMode;
        radio.disabled = false;
      }
    });
    if (text) { fillSizes(); if (!widthInput.value && !heightInput.value) applySize(); }
  }

  form.querySelectorAll("input[name=mode]").forEach(function (radio) {
    radio.addEventListener("change", showMode);
  });
  sizeSelect.addEventListener("change", applySize);
  form.querySelectorAll("input[name=model]").forEach(function (radio) {
    radio.addEventListener("change", function () { if (currentMode() === "txt2img") { fillSizes(); applySize(); } });
  });
  showMode();

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
    if (currentMode() === "img2img" && !data.get("width") && !data.get("height")) {
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
