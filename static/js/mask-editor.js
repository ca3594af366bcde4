// The create page's mask editor (inpainting). A canvas lies over the
// picture's preview at the picture's natural size (CSS scales it to the
// preview), so the mask painted on it is the picture's size whatever the
// screen. It is painted in one opaque colour that CSS shows translucent;
// what the colour covers is the mask. Pointer Events paint with mouse, pen
// and touch alike; each move draws a line from the last point, so a fast
// stroke stays continuous.
//
// On submit the painting becomes the form's `mask` file (a PNG, white where
// painted on black), unless the canvas is extended (outpainting: the added
// area is the mask and the server takes expand_* instead, never both). An
// empty mask is refused here before anything is sent; the server checks the
// mask again (generation.images.mask_clean: a pixel of at least half
// brightness is white, which this export matches).
(function () {
  "use strict";
  const form = document.getElementById("create-form");
  const editor = document.getElementById("mask-editor");
  if (!form || !editor) return;
  const dropzone = document.getElementById("dropzone");
  const preview = document.getElementById("preview");
  const canvas = document.getElementById("mask-canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const ring = document.getElementById("brush-ring");
  const maskInput = document.getElementById("id_mask");
  const sizeInput = document.getElementById("mask-size");
  const sizeOut = document.getElementById("mask-size-value");
  const brushButton = document.getElementById("mask-brush");
  const eraserButton = document.getElementById("mask-eraser");
  const undoButton = document.getElementById("mask-undo");
  const errorOut = document.getElementById("mask-error");
  const blur = document.getElementById("id_mask_blur");
  const blurOut = document.getElementById("mask-blur-value");
  const expandInputs = Array.from(form.querySelectorAll("[data-expand]"));
  const expandNote = document.getElementById("expand-note");
  const PAINT = "rgb(255, 32, 96)";
  const OPAQUE = 128; // the server's threshold: an alpha at least this is white in the export
  const UNDO_BYTES = 96 * 1024 * 1024; // snapshots kept for undo, at most
  const TEXT_TYPES = ["text", "number", "email", "url", "search", "password", "tel", "date", "time"];
  let erasing = false;
  let ready = false; // the canvas has the picture's size
  let undoStack = [];
  let stroke = null; // the pointer painting now: {id, last}

  function active() { return window.Studio.mode() === "inpaint"; }

  function expanding() {
    return expandInputs.some(function (input) { return Number(input.value) > 0; });
  }

  // --- Tools -------------------------------------------------------------------

  function brushSize() { return Number(sizeInput.value); }

  function setBrushSize(value) {
    sizeInput.value = Math.round(Math.min(Number(sizeInput.max), Math.max(Number(sizeInput.min), value)));
    sizeOut.textContent = sizeInput.value;
  }

  function setTool(erase) {
    erasing = erase;
    brushButton.setAttribute("aria-pressed", String(!erase));
    eraserButton.setAttribute("aria-pressed", String(erase));
  }

  // Undo: a snapshot of the whole mask before each change (stroke, clear,
  // invert), the oldest dropped past UNDO_BYTES.
  function remember() {
    if (!ready) return;
    undoStack.push(context.getImageData(0, 0, canvas.width, canvas.height));
    const each = canvas.width * canvas.height * 4;
    while (undoStack.length > 1 && undoStack.length * each > UNDO_BYTES) undoStack.shift();
    undoButton.disabled = false;
  }

  function undo() {
    if (!undoStack.length) return;
    context.putImageData(undoStack.pop(), 0, 0);
    if (undoStack.length === 0 && document.activeElement === undoButton) {
      canvas.focus({ preventScroll: true }); // a disabled button drops the focus: keep it in the editor
    }
    undoButton.disabled = undoStack.length === 0;
  }

  function clearMask() {
    if (!ready || !painted()) return;
    remember();
    context.clearRect(0, 0, canvas.width, canvas.height);
  }

  function invert() {
    if (!ready) return;
    remember();
    const flipped = document.createElement("canvas");
    flipped.width = canvas.width;
    flipped.height = canvas.height;
    const other = flipped.getContext("2d");
    other.fillStyle = PAINT;
    other.fillRect(0, 0, flipped.width, flipped.height);
    other.globalCompositeOperation = "destination-out";
    other.drawImage(canvas, 0, 0);
    context.clearRect(0, 0, canvas.width, canvas.height);
    context.drawImage(flipped, 0, 0);
    hideError();
  }

  // --- Painting ----------------------------------------------------------------

  function canvasPoint(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * canvas.width) / box.width,
      y: ((event.clientY - box.top) * canvas.height) / box.height,
    };
  }

  function withTool(draw) {
    context.save();
    context.globalCompositeOperation = erasing ? "destination-out" : "source-over";
    context.fillStyle = context.strokeStyle = PAINT;
    context.lineWidth = brushSize();
    context.lineCap = context.lineJoin = "round";
    draw();
    context.restore();
  }

  function dot(point) {
    withTool(function () {
      context.beginPath();
      context.arc(point.x, point.y, brushSize() / 2, 0, 2 * Math.PI);
      context.fill();
    });
  }

  function line(from, to) {
    withTool(function () {
      context.beginPath();
      context.moveTo(from.x, from.y);
      context.lineTo(to.x, to.y);
      context.stroke();
    });
  }

  function showRing(event) {
    const box = canvas.getBoundingClientRect();
    const side = (brushSize() * box.width) / canvas.width;
    ring.style.width = ring.style.height = side + "px";
    ring.style.left = event.clientX - box.left + "px";
    ring.style.top = event.clientY - box.top + "px";
    ring.hidden = !ready || expanding() || event.pointerType === "touch";
  }

  canvas.addEventListener("pointerdown", function (event) {
    if (!ready || !active() || expanding() || event.button !== 0) return;
    event.preventDefault();
    canvas.focus({ preventScroll: true });
    canvas.setPointerCapture(event.pointerId);
    remember();
    stroke = { id: event.pointerId, last: canvasPoint(event) };
    dot(stroke.last);
    hideError();
  });
  canvas.addEventListener("pointermove", function (event) {
    showRing(event);
    if (!stroke || event.pointerId !== stroke.id) return;
    // The moves the browser merged into this event, so a fast stroke keeps its shape.
    const moves = (event.getCoalescedEvents && event.getCoalescedEvents()) || [];
    (moves.length ? moves : [event]).forEach(function (move) {
      const point = canvasPoint(move);
      line(stroke.last, point);
      stroke.last = point;
    });
  });
  function endStroke(event) {
    if (stroke && event.pointerId === stroke.id) stroke = null;
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("lostpointercapture", endStroke);
  canvas.addEventListener("pointerleave", function () { ring.hidden = true; });

  // --- The mask as a file --------------------------------------------------------

  // The mask in black and white at the picture's size.
  function exported() {
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      data[i] = data[i + 1] = data[i + 2] = data[i + 3] >= OPAQUE ? 255 : 0;
      data[i + 3] = 255;
    }
    return pixels;
  }

  function painted() {
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] >= OPAQUE) return true;
    return false;
  }

  // A PNG file of the mask, made synchronously (toDataURL) so that the
  // submit carries it without a second, scripted submit.
  function maskFile() {
    const out = document.createElement("canvas");
    out.width = canvas.width;
    out.height = canvas.height;
    out.getContext("2d").putImageData(exported(), 0, 0);
    const bytes = atob(out.toDataURL("image/png").split(",")[1]);
    const array = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i += 1) array[i] = bytes.charCodeAt(i);
    return new File([array], "mask.png", { type: "image/png" });
  }

  function setMaskFile(file) { window.Studio.setFile(maskInput, file); }

  function showError(text) {
    errorOut.textContent = text;
    errorOut.hidden = false;
  }

  function hideError() { errorOut.hidden = true; }

  form.addEventListener("submit", function (event) {
    setMaskFile(null);
    // Without a picture there is nothing to paint on: the server names the picture.
    if (!active() || expanding() || !ready) return;
    if (!painted()) {
      event.preventDefault();
      showError("Paint over the part of the picture that should change, or extend the canvas below.");
      canvas.focus();
      return;
    }
    setMaskFile(maskFile());
  });

  // --- The picture, the mode and the canvas's extension -----------------------------

  // A new picture (chosen, dropped, pasted, or the parent job's result): a
  // fresh mask of its size, and a brush a tenth of its longer side.
  preview.addEventListener("load", function () {
    const longer = Math.max(preview.naturalWidth, preview.naturalHeight);
    canvas.width = preview.naturalWidth;
    canvas.height = preview.naturalHeight;
    ready = true;
    undoStack = [];
    undoButton.disabled = true;
    sizeInput.max = Math.max(16, Math.round(longer / 2));
    setBrushSize(Math.max(4, Math.round(longer / 10)));
    sync();
  });

  function showExpansion() {
    const extending = expanding();
    canvas.classList.toggle("off", extending);
    expandNote.hidden = !extending;
    if (extending) {
      hideError();
      const value = function (id) { return Number(document.getElementById(id).value) || 0; };
      const width = (ready ? canvas.width : 0) + value("id_expand_left") + value("id_expand_right");
      const height = (ready ? canvas.height : 0) + value("id_expand_top") + value("id_expand_bottom");
      document.getElementById("expand-size").textContent = ready ? width + "×" + height + " px" : "the picture's size plus these";
    }
  }

  // Inpainting shows the editor and the canvas and sends their fields; the
  // other modes neither show nor send them.
  function sync() {
    const on = active();
    editor.hidden = !on;
    canvas.hidden = !on || !ready || preview.hidden;
    dropzone.classList.toggle("painting", on);
    form.querySelectorAll("[data-inpaint-only]").forEach(function (input) { input.disabled = !on; });
    if (!on) ring.hidden = true;
    showExpansion();
  }

  // Keys while inpainting, unless typing in a field (there they keep their own meaning).
  function typing(target) {
    if (!target || !target.tagName) return false;
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    return target.tagName === "INPUT" && TEXT_TYPES.indexOf(target.type) >= 0;
  }

  // Only while the picture or the editor's tools have focus (single-key
  // shortcuts anywhere else would catch keys meant for the rest of the page).
  const stage = document.getElementById("mask-stage");
  function inEditor(target) {
    return Boolean(target) && (editor.contains(target) || stage.contains(target));
  }

  document.addEventListener("keydown", function (event) {
    if (!active() || !inEditor(document.activeElement) || typing(event.target) || event.altKey) return;
    const key = event.key.toLowerCase();
    if (event.ctrlKey || event.metaKey) {
      if (key !== "z" || event.shiftKey) return;
      undo();
    } else if (key === "[") {
      setBrushSize(Math.min(brushSize() - 1, brushSize() / 1.25));
    } else if (key === "]") {
      setBrushSize(Math.max(brushSize() + 1, brushSize() * 1.25));
    } else if (key === "b") {
      setTool(false);
    } else if (key === "e") {
      setTool(true);
    } else if (key === "i") {
      invert();
    } else {
      return;
    }
    event.preventDefault();
  });

  brushButton.addEventListener("click", function () { setTool(false); });
  eraserButton.addEventListener("click", function () { setTool(true); });
  undoButton.addEventListener("click", undo);
  document.getElementById("mask-invert").addEventListener("click", invert);
  document.getElementById("mask-clear").addEventListener("click", clearMask);
  sizeInput.addEventListener("input", function () { sizeOut.textContent = sizeInput.value; });
  blur.addEventListener("input", function () { blurOut.textContent = blur.value; });
  expandInputs.forEach(function (input) { input.addEventListener("input", showExpansion); });
  form.querySelectorAll("input[name=mode]").forEach(function (radio) { radio.addEventListener("change", sync); });
  sync();
})();
