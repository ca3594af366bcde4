// The create page: image to image (pick or drop or paste a picture, preview
// it), text to image (no picture; size presets of the chosen model),
// inpainting (a picture and its mask, painted in mask-editor.js, or the
// canvas extended) or ControlNet (its section in controlnet.js), with the
// price quote and the chosen model's expected wait kept live as the settings
// change. The server re-checks everything.
(function () {
  "use strict";
  const studio = window.Studio;
  if (!studio) return;
  const form = studio.form;
  const fileInput = document.getElementById("id_image");
  const dropzone = document.getElementById("dropzone");
  const preview = document.getElementById("preview");
  const strength = document.getElementById("id_strength");
  const strengthValue = document.getElementById("strength-value");
  const quoteOut = document.getElementById("quote");
  const short = document.getElementById("short");
  const balance = Number(form.dataset.balance);
  let sourceSize = null;
  let timer = null;

  function useFiles(files) {
    if (!files || !files.length) return;
    studio.setFile(fileInput, files[0]);
    showPreview();
  }

  // The chosen file, or without one the parent job's first result (the
  // picture that iterating on a job starts from).
  function showPreview() {
    const file = fileInput.files[0];
    const url = file ? URL.createObjectURL(file) : preview.dataset.parentSrc;
    if (!url) return;
    if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
    preview.src = url;
    preview.hidden = false;
  }
  preview.addEventListener("load", function () {
    sourceSize = [preview.naturalWidth, preview.naturalHeight];
    scheduleQuote();
  });

  dropzone.addEventListener("dragover", function (event) { event.preventDefault(); dropzone.classList.add("over"); });
  dropzone.addEventListener("dragleave", function () { dropzone.classList.remove("over"); });
  dropzone.addEventListener("drop", function (event) {
    event.preventDefault();
    dropzone.classList.remove("over");
    useFiles(event.dataTransfer.files);
  });
  document.addEventListener("paste", function (event) {
    const files = event.clipboardData && event.clipboardData.files;
    // ControlNet without a picture of one's own: the pasted one is the control picture.
    const control = document.getElementById("id_control_image");
    if (currentMode() === "controlnet" && fileInput.disabled && control && files && files.length) {
      studio.setFile(control, files[0]);
      control.dispatchEvent(new Event("change", { bubbles: true }));
      return;
    }
    useFiles(files);
  });
  fileInput.addEventListener("change", showPreview);
  showPreview();

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
      setStrength(currentMode() === "inpaint" ? 1 : radio.dataset.strength);
      showSamplers(radio);
    });
  });

  // The hires pass (text to image and image to image): its fields go with
  // the form only when the toggle is on.
  const hiresToggle = document.getElementById("hires-toggle");
  const hiresFields = document.getElementById("hires-fields");
  function showHires() {
    if (!hiresToggle) return;
    const on = hiresToggle.checked && !document.getElementById("hires-settings").hidden;
    hiresFields.hidden = !hiresToggle.checked;
    hiresFields.querySelectorAll("input, select").forEach(function (field) { field.disabled = !on; });
  }
  if (hiresToggle) {
    hiresToggle.addEventListener("change", function () { showHires(); scheduleQuote(); });
    const hiresStrength = document.getElementById("id_hires_strength");
    hiresStrength.addEventListener("input", function () {
      document.getElementById("hires-strength-value").textContent = hiresStrength.value;
    });
  }

  // The sampler select offers the chosen model's samplers; "Model's
  // default" names its default.
  const sampler = document.getElementById("id_scheduler");
  function showSamplers(radio) {
    if (!sampler || !radio) return;
    const offered = (radio.dataset.schedulers || "").split(" ");
    sampler.querySelectorAll("option").forEach(function (option) {
      if (!option.value) {
        const own = sampler.querySelector("option[value='" + radio.dataset.scheduler + "']");
        option.textContent = "Model's default" + (own ? " (" + own.textContent + ")" : "");
        return;
      }
      option.hidden = option.disabled = !offered.includes(option.value);
    });
    if (sampler.selectedOptions[0] && sampler.selectedOptions[0].disabled) sampler.value = "";
  }
  showSamplers(form.querySelector("input[name=model]:checked"));

  // The LoRA picker writes the `loras` field (slug:weight,...), the form's
  // own; typing there sets the picker. It shows the chosen model's LoRAs.
  const picker = document.getElementById("lora-picker");
  if (picker) {
    const field = document.getElementById("id_loras");
    const rows = Array.from(picker.querySelectorAll(".lora"));
    const search = document.getElementById("lora-search");
    // Each chosen LoRA's weight as typed or last set by its slider: the
    // slider's steps never round a typed weight.
    const weights = {};
    function weightOf(row) {
      return row.dataset.lora in weights ? weights[row.dataset.lora] : row.querySelector(".lora-strength").value;
    }
    function pickerToField() {
      // A row the search hides stays chosen; one of another model does not.
      field.value = rows.filter(function (row) { return row.dataset.fits === "1" && row.querySelector(".lora-use").checked; })
        .map(function (row) { return row.dataset.lora + ":" + weightOf(row); }).join(",");
      scheduleQuote();
    }
    function fieldToPicker() {
      const chosen = {};
      Object.keys(weights).forEach(function (slug) { delete weights[slug]; });
      field.value.split(",").forEach(function (item) {
        const parts = item.split(":");
        const slug = parts[0].trim();
        if (!slug) return;
        chosen[slug] = true;
        const typed = parts.length > 1 ? parseFloat(parts[1]) : NaN;
        if (!Number.isNaN(typed)) weights[slug] = String(typed);
      });
      rows.forEach(function (row) {
        const use = row.querySelector(".lora-use");
        const slider = row.querySelector(".lora-strength");
        use.checked = row.dataset.lora in chosen;
        slider.value = row.dataset.lora in weights ? weights[row.dataset.lora] : row.dataset.weight;
        row.querySelector("output").textContent = weightOf(row);
      });
    }
    function showLoras() {
      const model = form.querySelector("input[name=model]:checked");
      const offered = model ? (model.dataset.loras || "").split(" ") : [];
      const words = (search.value || "").toLowerCase().trim();
      let shown = 0;
      rows.forEach(function (row) {
        const fits = offered.includes(row.dataset.lora);
        row.dataset.fits = fits ? "1" : "0";
        row.hidden = !fits || (words && !row.dataset.name.includes(words));
        if (!fits) row.querySelector(".lora-use").checked = false;
        if (!row.hidden) shown += 1;
      });
      document.getElementById("no-lora-fits").hidden = shown > 0 || words !== "";
    }
    rows.forEach(function (row) {
      const use = row.querySelector(".lora-use");
      const weight = row.querySelector(".lora-strength");
      use.addEventListener("change", function () {
        if (use.checked && rows.filter(function (r) { return r.querySelector(".lora-use").checked; }).length > 4) {
          use.checked = false;
          return;
        }
        pickerToField();
      });
      weight.addEventListener("input", function () {
        weights[row.dataset.lora] = weight.value;
        row.querySelector("output").textContent = weight.value;
        if (use.checked) pickerToField();
      });
      const trigger = row.querySelector(".lora-trigger");
      if (trigger) trigger.addEventListener("click", function () {
        const prompt = document.getElementById("id_prompt");
        if (!prompt.value.includes(trigger.dataset.words)) {
          prompt.value = prompt.value.trim() ? prompt.value.trim() + ", " + trigger.dataset.words : trigger.dataset.words;
        }
        prompt.focus();
      });
    });
    field.addEventListener("change", fieldToPicker);
    search.addEventListener("input", showLoras);
    form.querySelectorAll("input[name=model]").forEach(function (radio) {
      radio.addEventListener("change", function () { showLoras(); pickerToField(); });
    });
    fieldToPicker();
    showLoras();
  }

  function setStrength(value) {
    strength.value = value;
    strengthValue.textContent = strength.value;
  }

  // Text to image hides (and disables, so the form does not send them) the
  // picture and the strength and shows the size presets; inpainting starts
  // at strength 1 (the masked area repainted from noise). Each mode offers
  // only the models that can do it.
  const sizeSelect = document.getElementById("id_size");
  const widthInput = document.getElementById("id_width");
  const heightInput = document.getElementById("id_height");

  const currentMode = studio.mode;

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

  let shownMode = currentMode();

  // ControlNet (controlnet.js drives its section): a picture of one's own
  // only when asked for (its image to image variant).
  const controlSection = document.getElementById("control-section");
  const usePicture = document.getElementById("id_use_picture");

  function showMode() {
    const text = currentMode() === "txt2img";
    const control = currentMode() === "controlnet";
    const picture = !text && (!control || (usePicture && usePicture.checked));
    document.getElementById("picture-section").hidden = !picture;
    document.getElementById("strength-settings").hidden = !picture;
    document.getElementById("size-settings").hidden = !text;
    fileInput.disabled = !picture;
    strength.disabled = !picture;
    if (controlSection) {
      controlSection.hidden = !control;
      controlSection.querySelectorAll("input, select").forEach(function (field) { field.disabled = !control; });
    }
    form.querySelectorAll("[data-mode-text]").forEach(function (node) {
      node.hidden = node.dataset.modeText.split(" ").indexOf(currentMode()) < 0;
    });
    showHires();
    const chosen = form.querySelector("input[name=model]:checked");
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
    // The chosen model cannot do this mode: the first that can and is available.
    const offered = form.querySelector("input[name=model]:not(:disabled)");
    if (chosen && chosen.disabled && offered) {
      offered.checked = true;
      offered.dispatchEvent(new Event("change", { bubbles: true }));
    }
    if (text) { fillSizes(); if (!widthInput.value && !heightInput.value) applySize(); }
    if (currentMode() !== shownMode) {
      const model = form.querySelector("input[name=model]:checked");
      if (currentMode() === "inpaint") setStrength(1);
      else if (shownMode === "inpaint" && model) setStrength(model.dataset.strength);
      shownMode = currentMode();
    }
  }

  form.querySelectorAll("input[name=mode]").forEach(function (radio) {
    radio.addEventListener("change", showMode);
  });
  if (usePicture) usePicture.addEventListener("change", showMode);
  sizeSelect.addEventListener("change", applySize);
  form.querySelectorAll("input[name=model]").forEach(function (radio) {
    radio.addEventListener("change", function () { if (currentMode() === "txt2img") { fillSizes(); applySize(); } });
  });
  showMode();

  // The model list: a search over names and a tag filter narrow the cards.
  const search = document.getElementById("model-search");
  const tagButtons = form.querySelectorAll(".tag-filter .tag-button");
  function filterModels() {
    const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const pressed = form.querySelector(".tag-filter .tag-button[aria-pressed=true]");
    const tag = pressed ? pressed.dataset.tag : "";
    let shown = 0;
    form.querySelectorAll(".model-card").forEach(function (card) {
      const text = card.dataset.name + " " + card.dataset.tags;
      const match = words.every(function (word) { return text.indexOf(word) >= 0; }) &&
        (!tag || card.dataset.tags.split(" ").indexOf(tag) >= 0);
      card.hidden = !match;
      if (match && !card.classList.contains("unavailable")) shown += 1;
    });
    document.getElementById("no-model-matches").hidden = shown > 0;
  }
  if (search) {
    search.addEventListener("input", filterModels);
    tagButtons.forEach(function (button) {
      button.addEventListener("click", function () {
        const on = button.getAttribute("aria-pressed") !== "true";
        tagButtons.forEach(function (other) { other.setAttribute("aria-pressed", "false"); });
        button.setAttribute("aria-pressed", on ? "true" : "false");
        filterModels();
      });
    });
  }

  // Outpainting's pixels added to the picture's width and height.
  function extension(data) {
    if (currentMode() !== "inpaint") return [0, 0];
    const more = function (name) { return Number(data.get(name)) || 0; };
    return [more("expand_left") + more("expand_right"), more("expand_top") + more("expand_bottom")];
  }

  function noQuote() {
    quoteOut.textContent = "–";
    short.hidden = true;
  }

  function scheduleQuote() {
    clearTimeout(timer);
    timer = setTimeout(updateQuote, 250);
  }

  const quotes = studio.latest(); // an older answer arriving late is dropped
  async function updateQuote() {
    const model = studio.model();
    if (!model) return;
    const ask = quotes.ask();
    const data = new FormData(form);
    data.delete("image");
    data.delete("mask");
    data.delete("control_image");
    data.delete("use_picture");
    data.delete("prompt");
    for (const [key, value] of Array.from(data.entries())) { if (value === "") data.delete(key); }
    const extra = extension(data);
    // ControlNet from the prompt alone: the control picture's size (controlnet.js).
    let base = sourceSize;
    if (currentMode() === "controlnet" && strength.disabled) {
      base = controlSection.dataset.size ? controlSection.dataset.size.split("x").map(Number) : null;
    }
    const size = currentMode() === "txt2img" || !base ? null : [base[0] + extra[0], base[1] + extra[1]];
    const maxSide = Number(model.dataset.maxSide);
    if (size && ((extra[0] && size[0] > maxSide) || (extra[1] && size[1] > maxSide))) {
      noQuote(); // extended past the model's max side: the submit is refused (generation.params._canvas)
      return;
    }
    if (size && !data.get("width") && !data.get("height")) {
      const fitted = studio.fittedSize(size, maxSide);
      data.set("width", fitted[0]);
      data.set("height", fitted[1]);
    }
    const response = await studio.post(form.dataset.quoteUrl, data);
    const body = await response.json().catch(function () { return {}; });
    if (quotes.stale(ask)) return;
    if (response.ok) {
      quoteOut.textContent = body.credits;
      short.hidden = body.credits <= balance;
    } else {
      noQuote();
    }
  }

  form.addEventListener("input", scheduleQuote);
  form.addEventListener("change", scheduleQuote);
  scheduleQuote();
})();
