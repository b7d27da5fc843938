/* StreamSpace share dialog on the viewer page: lists the session's shares and links and who is
   connected now, grants to a user or group, creates a link (its URL is shown once) and revokes,
   all through /api/v1/sessions/<id>/shares with the portal's cookie and CSRF token. */
(function () {
  "use strict";

  var REFRESH_MS = 5000;

  function initShare(dialog, opener) {
    var endpoint = dialog.dataset.sharesEndpoint;
    var rows = dialog.querySelector("[data-share-rows]");
    var connected = dialog.querySelector("[data-share-connected]");
    var error = dialog.querySelector("[data-share-error]");
    var timer = null;

    function csrf() { return window.StreamSpaceCsrf ? window.StreamSpaceCsrf() : ""; }

    function call(method, url, body) {
      var options = {
        method: method,
        credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRFToken": csrf() }
      };
      if (body !== undefined) {
        options.headers["Content-Type"] = "application/json";
        options.body = JSON.stringify(body);
      }
      return fetch(url, options).then(function (response) {
        if (response.status === 204) return { ok: true, body: {} };
        return response.json().then(function (data) { return { ok: response.ok, body: data }; });
      });
    }

    function showError(text) {
      error.textContent = text || "";
      error.hidden = !text;
    }

    function cell(row, text, label) {
      var td = document.createElement("td");
      td.textContent = text;
      if (label) td.dataset.label = label;
      row.appendChild(td);
      return td;
    }

    function recipient(share) {
      if (share.kind === "user") return share.user;
      if (share.kind === "group") return "group " + share.group;
      return "link #" + share.id;
    }

    function render(body) {
      rows.textContent = "";
      if (!body.shares.length) {
        var empty = document.createElement("tr");
        cell(empty, "Not shared yet.").colSpan = 4;
        rows.appendChild(empty);
      }
      body.shares.forEach(function (share) {
        var row = document.createElement("tr");
        row.dataset.shareId = share.id;
        cell(row, recipient(share), "Recipient");
        cell(row, share.role + (share.may_manage ? ", may manage" : ""), "Role");
        cell(row, share.expires_at ? new Date(share.expires_at).toLocaleString() : "—", "Expires");
        var actions = cell(row, "");
        var revoke = document.createElement("button");
        revoke.type = "button";
        revoke.className = "button button--danger button--small";
        revoke.textContent = "Revoke";
        revoke.dataset.revoke = share.id;
        revoke.setAttribute("aria-label", "Revoke " + recipient(share));
        actions.appendChild(revoke);
        rows.appendChild(row);
      });
      connected.textContent = "";
      if (!body.connected.length) {
        var none = document.createElement("li");
        none.textContent = "Nobody is connected.";
        connected.appendChild(none);
      }
      body.connected.forEach(function (entry) {
        var item = document.createElement("li");
        var who = entry.user || ("someone with link #" + entry.share_id);
        var since = entry.since ? new Date(entry.since * 1000).toLocaleTimeString() : "";
        item.textContent = who + " (" + entry.role + ")" + (since ? ", since " + since : "");
        item.dataset.connected = entry.user || "link";
        connected.appendChild(item);
      });
    }

    function refresh() {
      return call("GET", endpoint).then(function (result) {
        if (!result.ok) { showError(result.body.detail || "Could not load the shares."); return; }
        render(result.body);
      }).catch(function () { showError("Could not reach the server."); });
    }

    opener.addEventListener("click", function () {
      showError("");
      dialog.showModal();
      refresh();
      timer = setInterval(refresh, REFRESH_MS);
    });
    dialog.addEventListener("close", function () { clearInterval(timer); timer = null; });
    dialog.querySelector("[data-share-close]").addEventListener("click", function () { dialog.close(); });

    dialog.querySelector("[data-share-grant]").addEventListener("submit", function (event) {
      event.preventDefault();
      var form = event.target;
      var body = { role: form.elements.role.value, may_manage: form.elements.may_manage.checked };
      body[form.elements.kind.value] = form.elements.name.value.trim();
      call("POST", endpoint, body).then(function (result) {
        if (!result.ok) { showError(result.body.detail || "Could not share."); return; }
        showError("");
        form.elements.name.value = "";
        refresh();
      }).catch(function () { showError("Could not reach the server."); });
    });

    var linkResult = dialog.querySelector("[data-share-link-result]");
    var linkUrl = dialog.querySelector("[data-share-link-url]");
    dialog.querySelector("[data-share-link]").addEventListener("submit", function (event) {
      event.preventDefault();
      var form = event.target;
      var body = { link: true, role: form.elements.role.value, expires_in_s: parseInt(form.elements.expires_in_s.value, 10) };
      call("POST", endpoint, body).then(function (result) {
        if (!result.ok) { showError(result.body.detail || "Could not create the link."); return; }
        showError("");
        linkUrl.value = result.body.url;
        linkResult.hidden = false;
        linkUrl.select();
        refresh();
      }).catch(function () { showError("Could not reach the server."); });
    });
    dialog.querySelector("[data-share-copy]").addEventListener("click", function () {
      linkUrl.select();
      if (navigator.clipboard) navigator.clipboard.writeText(linkUrl.value).catch(function () {});
    });

    rows.addEventListener("click", function (event) {
      var button = event.target.closest("[data-revoke]");
      if (!button) return;
      button.disabled = true;
      call("DELETE", endpoint + "/" + button.dataset.revoke).then(function (result) {
        if (!result.ok) showError(result.body.detail || "Could not revoke.");
        refresh();
      }).catch(function () { showError("Could not reach the server."); button.disabled = false; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var dialog = document.querySelector("[data-share-dialog]");
    var opener = document.querySelector("[data-share-open]");
    if (dialog && opener) initShare(dialog, opener);
  });
})();
