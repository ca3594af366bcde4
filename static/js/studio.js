// What the create page's scripts share (create.js, mask-editor.js and
// controlnet.js each drive their own part): the chosen mode and model, the
// output size a picture is fitted to, posts with the CSRF token, "the latest
// answer wins" guards, and setting a file input. The limits and URLs come
// from the server, on the form's data-* attributes.
window.Studio = (function () {
  "use strict";
  const form = document.getElementById("create-form");
  if (!form) return null;
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const minSide = Number(form.dataset.minSide);
  const multiple = Number(form.dataset.sizeMultiple);

  return {
    form: form,
    mode: function () {
      const checked = form.querySelector("input[name=mode]:checked");
      return checked ? checked.value : "img2img";
    },
    model: function () { return form.querySelector("input[name=model]:checked"); },
    // The output size when width and height are left empty: the picture
    // fitted within the model's max side, in whole multiples (the server's
    // rule, generation/params.py).
    fittedSize: function (size, maxSide) {
      const scale = Math.min(1, maxSide / Math.max(size[0], size[1]));
      return size.map(function (side) { return Math.max(minSide, Math.floor((side * scale) / multiple) * multiple); });
    },
    post: function (url, data) {
      return fetch(url, { method: "POST", body: data, headers: { "X-CSRFToken": csrf }, credentials: "same-origin" });
    },
    // latest(): a counter; ask() numbers a request, stale(n) says a newer one was asked since.
    latest: function () {
      let asked = 0;
      return { ask: function () { asked += 1; return asked; }, stale: function (n) { return n !== asked; } };
    },
    setFile: function (input, file) {
      const transfer = new DataTransfer();
      if (file) transfer.items.add(file);
      input.files = transfer.files;
    },
  };
})();
