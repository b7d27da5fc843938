/* StreamSpace: files in the session's home, from the viewer page (docs/architecture.md §23).
   Lists a folder, downloads (a plain link: the API answers with Content-Disposition),
   deletes, and uploads several files, picked or dropped onto the viewer, each with its own
   progress bar (XHR upload progress). Errors say what happened: too large, session not
   running (with the hint to wake it), not allowed. */
(function () {
  "use strict";

  function formatSize(bytes) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit ? value.toFixed(1) : String(value)) + " " + units[unit];
  }

  function encodePath(parts) { return parts.map(encodeURIComponent).join("/"); }

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function explain(status, body, name, maxBytes) {
    var detail = body && body.detail ? body.detail : "";
    if (status === 413) { return (name ? name + " is too large: " : "Too large: ") + "uploads are limited to " + formatSize(maxBytes) + "."; }
    if (status === 409) { return detail || "The session is not running: wake it and try again."; }
    if (status === 403) { return detail || "You may not change files in this session."; }
    if (status === 401) { return "Your sign-in has expired: reload the page and sign in again."; }
    if (status === 404) { return detail || "Not found (it may have been moved or deleted)."; }
    if (status === 0) { return "The connection was interrupted."; }
    return detail || "The request failed (" + status + ").";
  }

  function parseJSON(text) { try { return JSON.parse(text); } catch (e) { return null; } }

  function initFiles(panel) {
    var endpoint = panel.dataset.endpoint;
    var canWrite = panel.dataset.canWrite === "true";
    var maxBytes = parseInt(panel.dataset.maxBytes, 10) || 0;
    var rows = panel.querySelector("[data-files-rows]");
    var crumbs = panel.querySelector("[data-files-crumbs]");
    var errorBox = panel.querySelector("[data-files-error]");
    var uploads = panel.querySelector("[data-files-uploads]");
    var input = panel.querySelector("[data-files-input]");
    var hint = panel.querySelector("[data-dropzone]");
    var toggle = document.querySelector("[data-files-toggle]");
    var overlay = document.querySelector("[data-drop-overlay]");
    var dropFolder = document.querySelector("[data-drop-folder]");
    var path = [];
    var queue = [];
    var busy = false;

    function showError(message) { errorBox.textContent = message; errorBox.hidden = !message; }

    function open(show) {
      panel.hidden = !show;
      if (toggle) { toggle.setAttribute("aria-pressed", show ? "true" : "false"); }
      if (show) { refresh(); }
    }

    function renderCrumbs() {
      crumbs.textContent = "";
      var parts = [{ label: "Home", depth: 0 }].concat(path.map(function (p, i) { return { label: p, depth: i + 1 }; }));
      parts.forEach(function (part, index) {
        if (index) { crumbs.appendChild(document.createTextNode(" / ")); }
        var button = document.createElement("button");
        button.type = "button";
        button.textContent = part.label;
        if (index === parts.length - 1) { button.setAttribute("aria-current", "location"); }
        button.addEventListener("click", function () { path = path.slice(0, part.depth); refresh(); });
        crumbs.appendChild(button);
      });
      if (dropFolder) { dropFolder.textContent = path.length ? path.join("/") : "your home"; }
    }

    function row(entry) {
      var tr = document.createElement("tr");
      tr.dataset.entry = entry.name;
      var name = document.createElement("td");
      var target = path.concat([entry.name]);
      if (entry.type === "directory") {
        var go = document.createElement("button");
        go.type = "button";
        go.className = "link";
        go.textContent = entry.name + "/";
        go.setAttribute("aria-label", "Open folder " + entry.name);
        go.addEventListener("click", function () { path = target; refresh(); });
        name.appendChild(go);
      } else {
        var link = document.createElement("a");
        link.href = endpoint + encodePath(target);
        link.setAttribute("download", entry.name);
        link.textContent = entry.name + (entry.type === "link" ? " ↪" : "");
        link.setAttribute("aria-label", "Download " + entry.name);
        name.appendChild(link);
      }
      var size = document.createElement("td");
      size.textContent = entry.type === "directory" ? "—" : formatSize(entry.size);
      var modified = document.createElement("td");
      modified.textContent = new Date(entry.mtime * 1000).toLocaleString();
      var actions = document.createElement("td");
      if (canWrite) {
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "button button--danger button--small";
        remove.textContent = "Delete";
        remove.setAttribute("aria-label", "Delete " + entry.name);
        remove.addEventListener("click", function () {
          var what = entry.type === "directory" ? "the folder " + entry.name + " and everything in it" : entry.name;
          if (!window.confirm("Delete " + what + "?")) { return; }
          fetch(endpoint + encodePath(target), { method: "DELETE", headers: { "X-CSRFToken": csrfToken() }, credentials: "same-origin" })
            .then(function (response) {
              if (response.status === 204) { refresh(); return; }
              return response.text().then(function (text) { showError(explain(response.status, parseJSON(text), entry.name, maxBytes)); });
            })
            .catch(function () { showError(explain(0)); });
        });
        actions.appendChild(remove);
      }
      [name, size, modified, actions].forEach(function (cell) { tr.appendChild(cell); });
      return tr;
    }

    function refresh() {
      renderCrumbs();
      var shown = path.slice();
      return fetch(endpoint + encodePath(path), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          return response.text().then(function (text) {
            if (shown.join("/") !== path.join("/")) { return; }  // the user moved on meanwhile
            var body = parseJSON(text);
            if (!response.ok || !body || body.type !== "directory") {
              rows.textContent = "";
              showError(explain(response.status, body, "", maxBytes));
              return;
            }
            showError("");
            rows.textContent = "";
            if (!body.entries.length) {
              var empty = document.createElement("tr");
              empty.innerHTML = '<td colspan="4">This folder is empty.</td>';
              rows.appendChild(empty);
            }
            body.entries.forEach(function (entry) { rows.appendChild(row(entry)); });
            panel.dataset.loaded = path.join("/") || "/";
          });
        })
        .catch(function () { showError(explain(0)); });
    }

    function addUpload(file) {
      var item = document.createElement("li");
      item.dataset.upload = file.name;
      var label = document.createElement("span");
      label.textContent = file.name;
      var status = document.createElement("span");
      status.dataset.uploadStatus = "";
      var bar = document.createElement("progress");
      bar.max = file.size || 1;
      bar.value = 0;
      bar.setAttribute("aria-label", "Upload of " + file.name);
      item.appendChild(label);
      item.appendChild(status);
      item.appendChild(bar);
      uploads.appendChild(item);
      var job = { file: file, folder: path.slice(), item: item, status: status, bar: bar };
      if (maxBytes && file.size > maxBytes) {
        finish(job, "failed", explain(413, null, file.name, maxBytes));
        return;
      }
      status.textContent = "waiting";
      item.dataset.state = "waiting";
      queue.push(job);
      next();
    }

    function finish(job, state, message) {
      job.item.dataset.state = state;
      job.item.className = state === "done" ? "is-done" : "is-failed";
      job.status.textContent = message;
      if (state === "done") { job.bar.value = job.bar.max; }
    }

    function next() {
      if (busy || !queue.length) { return; }
      busy = true;
      var job = queue.shift();
      var xhr = new XMLHttpRequest();
      xhr.open("PUT", endpoint + encodePath(job.folder.concat([job.file.name])));
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      job.item.dataset.state = "uploading";
      job.status.textContent = "0 %";
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) {
          job.bar.max = event.total || 1;
          job.bar.value = event.loaded;
          job.status.textContent = Math.floor((100 * event.loaded) / (event.total || 1)) + " %";
        }
      });
      xhr.addEventListener("load", function () {
        if (xhr.status === 200 || xhr.status === 201) {
          finish(job, "done", "uploaded (" + formatSize(job.file.size) + ")");
          if (job.folder.join("/") === path.join("/")) { refresh(); }
        } else {
          finish(job, "failed", explain(xhr.status, parseJSON(xhr.responseText), job.file.name, maxBytes));
        }
        busy = false;
        next();
      });
      xhr.addEventListener("error", function () { finish(job, "failed", explain(0)); busy = false; next(); });
      xhr.send(job.file);
    }

    function takeFiles(list) {
      if (!canWrite) { showError("You may look at this session's files but not upload."); return; }
      Array.prototype.forEach.call(list || [], addUpload);
    }

    function hasFiles(event) {
      var types = event.dataTransfer ? event.dataTransfer.types : [];
      return Array.prototype.indexOf.call(types, "Files") !== -1;
    }

    if (toggle) { toggle.addEventListener("click", function () { open(panel.hidden); }); }
    panel.querySelector("[data-files-refresh]").addEventListener("click", refresh);
    if (input) {
      input.addEventListener("change", function () { takeFiles(input.files); input.value = ""; });
    }
    if (canWrite && overlay) {
      // The session's frame swallows drag events over it, so a drag that enters the page
      // anywhere else raises a drop target above the frame.
      document.addEventListener("dragenter", function (event) {
        if (!hasFiles(event)) { return; }
        if (panel.hidden) { open(true); }
        overlay.hidden = false;
      });
      [overlay, hint].forEach(function (zone) {
        if (!zone) { return; }
        zone.addEventListener("dragover", function (event) { event.preventDefault(); zone.classList.add("is-over"); });
        zone.addEventListener("dragleave", function (event) {
          zone.classList.remove("is-over");
          if (zone === overlay && event.target === overlay) { overlay.hidden = true; }
        });
        zone.addEventListener("drop", function (event) {
          event.preventDefault();
          zone.classList.remove("is-over");
          overlay.hidden = true;
          if (panel.hidden) { open(true); }
          takeFiles(event.dataTransfer && event.dataTransfer.files);
        });
      });
      document.addEventListener("drop", function (event) { if (hasFiles(event)) { event.preventDefault(); overlay.hidden = true; } });
      document.addEventListener("dragover", function (event) { if (hasFiles(event)) { event.preventDefault(); } });
    }
  }

  document.querySelectorAll("[data-files]").forEach(initFiles);
})();
