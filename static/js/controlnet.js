// The create page's ControlNet section (templates/generation/_controlnet.html):
// offers the ControlNets that fit the chosen model, follows a ControlNet's
// kind with its preprocess, and shows the map a worker will make, live, from
// POST /api/v1/controlnet/preview (canny, scribble, none; the annotators with
// weights run on the worker only). create.js shows the section in the
// "controlnet" mode; this file works on its own fields.
(function () {
  "use strict";
  const studio = window.Studio;
  const section = document.getElementById("control-section");
  if (!studio || !section) return;
  const form = studio.form;
  const controlInput = document.getElementById("id_control_image");
  const controlSelect = document.getElementById("id_control");
  const preprocess = document.getElementById("id_preprocess");
  const scale = document.getElementById("id_conditioning_scale");
  const scaleValue = document.getElementById("conditioning-value");
  const map = document.getElementById("control-map");
  const note = document.getElementById("control-map-note");
  const none = document.getElementById("control-none");
  const WEIGHT_FREE = ["none", "canny", "scribble"];
  let timer = null;
  let shown = null;

  const chosenModel = studio.model;

  // Only the ControlNets a worker serving the chosen model has (its card
  // lists their slugs, and how many fit it at all).
  const busy = document.getElementById("control-busy");
  function fitControls() {
    const model = chosenModel();
    const offered = model && model.dataset.controls ? model.dataset.controls.trim().split(" ") : [];
    let first = null;
    Array.from(controlSelect.options).forEach(function (option) {
      const ok = offered.indexOf(option.value) >= 0;
      option.hidden = !ok;
      option.disabled = !ok;
      if (ok && !first) first = option;
    });
    const current = controlSelect.selectedOptions[0];
    if ((!current || current.disabled) && first) { controlSelect.value = first.value; followKind(); }
    const fit = model ? Number(model.dataset.controlsFit || 0) : 0;
    none.hidden = Boolean(first) || fit > 0;
    busy.hidden = Boolean(first) || fit === 0;
  }

  // A ControlNet's kind is the map it wants: its preprocess by default, or
  // "none" (a ready map) where this service lacks that annotator.
  function followKind() {
    const option = controlSelect.selectedOptions[0];
    if (!option || !option.dataset.kind) return;
    const wanted = preprocess.querySelector("option[value='" + option.dataset.kind + "']");
    preprocess.value = wanted && !wanted.disabled ? option.dataset.kind : "none";
    if (preprocess.value !== option.dataset.kind) {
      note.textContent = "This service cannot make a " + option.dataset.kind + " map: send a ready one (made as \"none\").";
    }
    schedulePreview();
  }

  function schedulePreview() {
    clearTimeout(timer);
    timer = setTimeout(showPreview, 200);
  }

  // The output size the worker will use: the fields, else the picture fitted.
  function outputSize(picture) {
    const width = form.querySelector("#id_width").value;
    const height = form.querySelector("#id_height").value;
    if (width && height) return [width, height];
    const model = chosenModel();
    if (!model || !picture) return null;
    return studio.fittedSize(picture, Number(model.dataset.maxSide));
  }

  function pictureSize(file) {
    return new Promise(function (resolve) {
      const probe = new Image();
      probe.onload = function () { resolve([probe.naturalWidth, probe.naturalHeight]); URL.revokeObjectURL(probe.src); };
      probe.onerror = function () { resolve(null); URL.revokeObjectURL(probe.src); };
      probe.src = URL.createObjectURL(file);
    });
  }

  // Iterating on a job without a control picture: its result is the control
  // picture (the server takes it), previewed and sized the same way.
  const parentPicture = document.getElementById("preview");
  const usePicture = document.getElementById("id_use_picture");
  let parentFile = null;
  async function controlFile() {
    if (controlInput.files[0]) return controlInput.files[0];
    const src = parentPicture && parentPicture.dataset.parentSrc;
    if (!src) return null;
    if (!parentFile) {
      const response = await fetch(src, { credentials: "same-origin" });
      if (!response.ok) return null;
      parentFile = new File([await response.blob()], "parent.png", { type: "image/png" });
    }
    return parentFile;
  }

  const previews = studio.latest(); // an older answer arriving late is dropped
  async function showPreview() {
    if (section.hidden) return;
    const ask = previews.ask();
    const file = await controlFile();
    if (previews.stale(ask)) return;
    if (!file) {
      map.hidden = true;
      note.textContent = "Choose a control picture to see its map.";
      if (section.dataset.size) { delete section.dataset.size; form.dispatchEvent(new Event("change")); }
      return;
    }
    const natural = await pictureSize(file);
    if (previews.stale(ask)) return;
    if (natural && section.dataset.size !== natural.join("x")) {
      section.dataset.size = natural.join("x"); // the output's size without a picture: the quote follows it
      form.dispatchEvent(new Event("change"));
    }
    if (WEIGHT_FREE.indexOf(preprocess.value) < 0) {
      map.hidden = true;
      note.textContent = "This map is made on the worker (its annotator needs learned weights).";
      return;
    }
    const data = new FormData();
    data.append("control_image", file);
    data.append("preprocess", preprocess.value);
    // With a picture of one's own, the output (and so the map) is its size.
    const own = usePicture && usePicture.checked && parentPicture && !parentPicture.hidden && parentPicture.naturalWidth
      ? [parentPicture.naturalWidth, parentPicture.naturalHeight] : null;
    const size = outputSize(own || natural);
    if (size) { data.append("width", size[0]); data.append("height", size[1]); }
    const response = await studio.post(section.dataset.previewUrl, data);
    if (previews.stale(ask)) return;
    if (!response.ok) {
      const body = await response.json().catch(function () { return {}; });
      map.hidden = true;
      note.textContent = (body.error && body.error.message) || "No preview right now.";
      return;
    }
    const blob = await response.blob();
    if (previews.stale(ask)) return;
    if (shown) URL.revokeObjectURL(shown);
    shown = URL.createObjectURL(blob);
    map.src = shown;
    map.hidden = false;
    map.dataset.preprocess = preprocess.value;
    note.textContent = "The map the ControlNet will follow (" + preprocess.selectedOptions[0].textContent + ").";
  }

  controlInput.addEventListener("change", schedulePreview);
  ["id_width", "id_height", "id_use_picture", "id_image"].forEach(function (id) {
    const field = document.getElementById(id);
    if (field) field.addEventListener("change", schedulePreview);
  });
  if (parentPicture) parentPicture.addEventListener("load", schedulePreview);
  preprocess.addEventListener("change", schedulePreview);
  controlSelect.addEventListener("change", followKind);
  scale.addEventListener("input", function () { scaleValue.textContent = scale.value; });
  form.querySelectorAll("input[name=model]").forEach(function (radio) { radio.addEventListener("change", fitControls); });
  form.querySelectorAll("input[name=mode]").forEach(function (radio) {
    radio.addEventListener("change", function () { fitControls(); schedulePreview(); });
  });
  fitControls();
  schedulePreview();
})();
