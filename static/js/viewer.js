/* StreamSpace session viewer: loads the session from its own origin (through the control
   plane's proxy) with a fresh short-lived viewer URL, follows the session's state live, shows a reconnect screen
   when the stream or the session goes away, and keeps the session marked active. */
(function () {
  "use strict";

  var HEARTBEAT_MS = 60000;

  function initViewer(root) {
    var Live = window.StreamSpaceLive;
    var frame = root.querySelector("[data-frame]");
    var overlay = root.querySelector("[data-overlay]");
    var title = root.querySelector("[data-overlay-title]");
    var text = root.querySelector("[data-overlay-text]");
    var reconnect = root.querySelector("[data-reconnect]");
    var back = root.querySelector("[data-overlay-back]");
    var data = document.getElementById("session-data");
    var session = data ? JSON.parse(data.textContent) : { state: root.dataset.state };
    var loaded = false;

    function showOverlay(heading, message, options) {
      options = options || {};
      title.textContent = heading;
      text.textContent = message || "";
      reconnect.hidden = !options.reconnect;
      back.hidden = !options.back;
      overlay.hidden = false;
      root.dataset.overlayReason = options.reason || "busy";
    }

    function hideOverlay() { overlay.hidden = true; root.dataset.overlayReason = ""; }

    function setBadge(state) {
      root.querySelectorAll("[data-state-badge]").forEach(function (badge) {
        badge.className = "state state--" + state;
        badge.textContent = state;
      });
    }

    function load() {
      showOverlay("Connecting…", "Opening a secure connection to your session.");
      return fetch(root.dataset.viewerUrlEndpoint, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          return response.json().then(function (body) { return { ok: response.ok, body: body }; });
        })
        .then(function (result) {
          if (!result.ok) {
            showOverlay("Cannot open the session", result.body.detail || "The session is not available.", { back: true, reason: "error" });
            return;
          }
          loaded = true;
          failed = false;
          frame.src = result.body.url;
        })
        .catch(function () {
          showOverlay("Connection lost", "Could not reach the server.", { reconnect: true, back: true, reason: "disconnected" });
        });
    }

    var retries = 0;
    var MAX_RETRIES = 6;

    // The session runs on its own origin, so this page cannot look into the frame. The
    // proxy's own pages there (errors, "not answering") report what happened with a
    // postMessage to this origin: {type: "streamspace.proxy", status, code}. A session's page
    // could send the same message; the worst it can do is make this viewer reconnect.
    var failed = false;
    function frameOrigin() {
      try { return new URL(frame.src).origin; } catch (e) { return null; }
    }

    function retryOrGiveUp(report) {
      if (report.status >= 500 && session.state === "running" && retries < MAX_RETRIES) {
        // The session is not answering (yet): it may still be binding its port after a
        // start or a wake. Retry with a fresh viewer URL and backoff.
        var wait = 500 * Math.pow(2, retries);
        retries += 1;
        showOverlay("Reconnecting…", "The session is not answering yet; retrying.", { reason: "retrying" });
        setTimeout(function () { if (session.state === "running") load(); }, wait);
        return;
      }
      if (report.status >= 500) {
        showOverlay("The stream dropped", "The session did not answer.", { reconnect: true, back: true, reason: "disconnected" });
      } else {
        showOverlay("Cannot open the session", "The session refused this viewer (" + report.code + ").", { reconnect: true, back: true, reason: "error" });
      }
    }

    window.addEventListener("message", function (event) {
      if (event.source !== frame.contentWindow || event.origin !== frameOrigin()) return;
      var report = event.data;
      if (!report || report.type !== "streamspace.proxy" || typeof report.status !== "number") return;
      if (!loaded || report.status < 400) return;
      failed = true;
      retryOrGiveUp({ status: report.status, code: String(report.code || "") });
    });

    frame.addEventListener("load", function () {
      if (!loaded || failed) return;
      retries = 0;
      hideOverlay();
    });

    function setToolbar(state) {
      var hibernate = root.querySelector('form[data-action="hibernate"]');
      var stop = root.querySelector('form[data-action="stop"]');
      if (hibernate) hibernate.hidden = state !== "running";
      if (stop) stop.hidden = ["stopping", "stopped", "failed"].indexOf(state) >= 0;
    }

    function apply(next) {
      var previous = session.state;
      session = next;
      root.dataset.state = next.state;
      setBadge(next.state);
      setToolbar(next.state);
      if (next.state === "running") {
        if (!loaded || previous !== "running") load();
      } else if (next.state === "hibernating" || next.state === "hibernated") {
        loaded = false;
        frame.removeAttribute("src");
        showOverlay("Hibernated", "The session is asleep. Wake it to continue.", { reconnect: true, back: true, reason: "hibernated" });
        reconnect.textContent = "Wake";
      } else if (next.state === "waking" || next.state === "starting" || next.state === "pending") {
        showOverlay("Waking up…", next.status_message || "Your session is starting.");
      } else if (next.state === "stopping" || next.state === "stopped" || next.state === "failed") {
        loaded = false;
        frame.removeAttribute("src");
        showOverlay("Session " + next.state, next.status_message || "", { back: true, reason: next.state });
      }
    }

    reconnect.addEventListener("click", function () {
      retries = 0;
      if (session.state === "hibernated" || session.state === "hibernating") {
        var form = document.createElement("form");
        form.action = "/sessions/" + root.dataset.sessionId + "/wake";
        var token = document.createElement("input");
        token.name = "csrfmiddlewaretoken";
        token.value = window.StreamSpaceCsrf();
        form.appendChild(token);
        reconnect.textContent = "Reconnect";
        showOverlay("Waking up…", "Your session is starting.");
        window.StreamSpacePostAction(form).then(function (result) {
          if (result.ok) apply(result.body);
          else showOverlay("Cannot wake the session", result.body.detail, { back: true, reason: "error" });
        });
        return;
      }
      load();
    });

    root.querySelector("[data-fullscreen]").addEventListener("click", function (event) {
      if (document.fullscreenElement) document.exitFullscreen();
      else if (root.requestFullscreen) root.requestFullscreen();
    });
    document.addEventListener("fullscreenchange", function () {
      root.querySelector("[data-fullscreen]").setAttribute("aria-pressed", document.fullscreenElement ? "true" : "false");
    });

    root.querySelectorAll("form[data-action]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        window.StreamSpacePostAction(form).then(function (result) {
          if (result.ok) apply(result.body);
          else showOverlay("The action failed", result.body.detail, { back: true, reason: "error" });
        });
      });
    });

    Live.on(function (frame_) {
      if (frame_.type === "session.update" && frame_.session && frame_.session.id === root.dataset.sessionId) {
        apply(frame_.session);
      }
    });
    Live.watch(root.dataset.sessionId);

    setInterval(function () {
      if (document.visibilityState !== "visible" || session.state !== "running") return;
      fetch(root.dataset.heartbeatEndpoint, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": window.StreamSpaceCsrf() }
      }).catch(function () {});
    }, HEARTBEAT_MS);

    apply(session);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.querySelector("[data-viewer]");
    if (root) initViewer(root);
  });
})();
