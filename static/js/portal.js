/* StreamSpace portal: live session updates over /ws/portal/, catalog filtering, session
   actions without a page reload, launch progress and idle countdowns. No dependencies;
   every page works without this file (plain forms and links). */
(function () {
  "use strict";

  var ACTIVE = ["pending", "starting", "running", "hibernating", "hibernated", "waking", "stopping"];

  // --- live connection ---------------------------------------------------------------
  var Live = {
    listeners: [],
    socket: null,
    delay: 500,
    wanted: [],
    connected: false,
    on: function (fn) { this.listeners.push(fn); },
    emit: function (frame) { this.listeners.forEach(function (fn) { fn(frame); }); },
    watch: function (sessionId) {
      // Ask for the current state once connected: an update sent before the socket opened
      // would otherwise be missed (the group only reaches connected sockets).
      this.wanted.push(sessionId);
      if (this.connected) this.send({ type: "session.get", session_id: sessionId });
    },
    send: function (frame) {
      if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify(frame));
    },
    start: function () {
      var self = this;
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var socket = new WebSocket(scheme + location.host + "/ws/portal/");
      self.socket = socket;
      socket.onopen = function () {
        self.connected = true;
        self.delay = 500;
        self.emit({ type: "live.open" });
        self.wanted.forEach(function (id) { self.send({ type: "session.get", session_id: id }); });
      };
      socket.onmessage = function (event) {
        var frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        self.emit(frame);
      };
      socket.onclose = function () {
        var wasConnected = self.connected;
        self.connected = false;
        if (wasConnected) self.emit({ type: "live.closed" });
        // Reconnect with jittered exponential backoff (0.5 s -> 30 s).
        var wait = self.delay * (0.75 + Math.random() * 0.5);
        self.delay = Math.min(self.delay * 2, 30000);
        setTimeout(function () { self.start(); }, wait);
      };
    }
  };
  window.StreamSpaceLive = Live;

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }
  window.StreamSpaceCsrf = csrfToken;

  function announce(text) {
    var region = document.querySelector("[data-live-status]");
    if (region) region.textContent = text;
  }

  function setBadge(root, state) {
    root.querySelectorAll("[data-state-badge]").forEach(function (badge) {
      badge.className = "state state--" + state;
      badge.textContent = state;
    });
  }

  // --- session actions (forms posted with fetch) ----------------------------------------
  function postAction(form, submitter) {
    var button = submitter || form.querySelector("button");
    var url = submitter && submitter.formAction ? submitter.formAction : form.action;
    if (button) button.disabled = true;
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": csrfToken() },
      body: new FormData(form)
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).finally(function () { if (button) button.disabled = false; });
  }
  window.StreamSpacePostAction = postAction;

  // --- my sessions --------------------------------------------------------------------
  function updateCard(card, session) {
    card.dataset.state = session.state;
    card.dataset.lastActivity = session.last_activity || "";
    card.dataset.idleTimeout = session.idle_timeout_s;
    setBadge(card, session.state);
    var message = card.querySelector("[data-status-message]");
    if (message) message.textContent = session.status_message || "";
    var visible = {
      open: ["running", "hibernated", "waking"].indexOf(session.state) >= 0,
      hibernate: session.state === "running",
      wake: session.state === "hibernated",
      stop: ["stopping", "stopped", "failed"].indexOf(session.state) < 0
    };
    Object.keys(visible).forEach(function (name) {
      var el = card.querySelector('[data-action="' + name + '"]');
      if (el) el.hidden = !visible[name];
    });
    var idle = card.querySelector("[data-idle]");
    if (idle) idle.hidden = session.state !== "running";
  }

  function formatRemaining(seconds) {
    if (seconds <= 0) return "now";
    var m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function tickIdle(list) {
    var now = Date.now();
    list.querySelectorAll("[data-session-id]").forEach(function (card) {
      var idle = card.querySelector("[data-idle]");
      if (!idle || card.dataset.state !== "running" || !card.dataset.lastActivity) return;
      var timeout = parseInt(card.dataset.idleTimeout, 10);
      var last = Date.parse(card.dataset.lastActivity);
      if (!timeout || isNaN(last)) return;
      var remaining = (last + timeout * 1000 - now) / 1000;
      idle.textContent = "Hibernates if idle in " + formatRemaining(remaining);
    });
  }

  function initSessions(list) {
    Live.on(function (frame) {
      if (frame.type !== "session.update" || !frame.session) return;
      var card = list.querySelector('[data-session-id="' + frame.session.id + '"]');
      if (card) {
        updateCard(card, frame.session);
        announce(frame.session.name + " is " + frame.session.state);
      }
    });
    list.addEventListener("submit", function (event) {
      var form = event.target.closest("form[data-actions]");
      if (!form) return;
      event.preventDefault();
      var card = form.closest("[data-session-id]");
      postAction(form, event.submitter).then(function (result) {
        if (result.ok) { updateCard(card, result.body); announce(result.body.name + " is " + result.body.state); }
        else { announce(result.body.detail || "The action failed."); showError(card, result.body.detail); }
      }).catch(function () { showError(card, "The request failed; check your connection."); });
    });
    tickIdle(list);
    setInterval(function () { tickIdle(list); }, 1000);
  }

  function showError(card, text) {
    var message = card && card.querySelector("[data-status-message]");
    if (message) { message.textContent = text || "The action failed."; message.setAttribute("role", "alert"); }
  }

  // --- launch progress ----------------------------------------------------------------
  var ORDER = { pending: 0, starting: 1, running: 2 };
  var STEP_CLASS = { active: "is-current", failed: "is-failed", done: "is-done" };

  // The steps the agent reported (label, state, duration), replacing the list's items.
  function renderAgentSteps(list, steps) {
    while (list.firstChild) list.removeChild(list.firstChild);
    steps.forEach(function (step) {
      var item = document.createElement("li");
      item.dataset.stepName = step.step;
      item.className = STEP_CLASS[step.state] || "is-done";
      var label = document.createElement("span");
      label.textContent = step.label || step.step;
      item.appendChild(label);
      if (step.duration_s !== null && step.duration_s !== undefined) {
        var took = document.createElement("span");
        took.className = "step-duration";
        took.textContent = step.duration_s.toFixed(1) + " s";
        item.appendChild(document.createTextNode(" "));
        item.appendChild(took);
      }
      list.appendChild(item);
    });
  }

  // The session's states as steps, for agents that report no steps of their own.
  function renderStateSteps(root, session) {
    var position = ORDER[session.state];
    if (session.state === "waking") position = 1;
    root.querySelectorAll("[data-step]").forEach(function (step) {
      var index = ORDER[step.dataset.step];
      step.className = "";
      if (session.state === "failed") { if (index === 0) step.className = "is-failed"; return; }
      if (position === undefined) return;
      if (index < position || session.state === "running") step.className = "is-done";
      else if (index === position) step.className = "is-current";
    });
  }

  // A failed session's output tail, read once from the logs API (owners and operators only:
  // the page names the URL only for them).
  function loadLogs(root) {
    var url = root.dataset.logsUrl;
    if (!url || root.dataset.logsLoaded) return;
    root.dataset.logsLoaded = "1";
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (logs) {
        if (!logs) return;
        var block = root.querySelector("[data-log-block]");
        if (block && logs.log_tail) {
          root.querySelector("[data-log-tail]").textContent = logs.log_tail;
          block.hidden = false;
        }
      })
      .catch(function () { delete root.dataset.logsLoaded; });
  }

  function renderProgress(root, session) {
    root.dataset.state = session.state;
    setBadge(root, session.state);
    var message = root.querySelector("[data-status-message]");
    if (message && session.status_message) message.textContent = session.status_message;
    var agentSteps = root.querySelector("[data-agent-steps]");
    var stateSteps = root.querySelector("[data-steps]");
    var reported = session.progress && session.progress.length > 0;
    if (agentSteps) {
      agentSteps.hidden = !reported;
      if (reported) renderAgentSteps(agentSteps, session.progress);
    }
    if (stateSteps) stateSteps.hidden = reported;
    if (!reported) renderStateSteps(root, session);
    var failure = root.querySelector("[data-failure]");
    if (session.state === "failed" || session.state === "stopped") {
      failure.hidden = false;
      root.querySelector("[data-cancel]").hidden = true;
      if (message) message.hidden = true;
      root.querySelector("[data-failure-title]").textContent =
        session.state === "stopped" ? "The session was stopped" : "The session failed";
      root.querySelector("[data-failure-reason]").textContent =
        session.status_message || (session.state === "stopped" ? "The session was stopped." : "Unknown error.");
      var exitLine = root.querySelector("[data-exit-line]");
      if (exitLine) {
        exitLine.hidden = session.exit_code === null || session.exit_code === undefined;
        root.querySelector("[data-exit-code]").textContent = exitLine.hidden ? "" : String(session.exit_code);
      }
      if (session.state === "failed") loadLogs(root);
    }
    var open = root.querySelector("[data-open-viewer]");
    if (session.state === "running" || session.state === "hibernated") {
      open.hidden = false;
      // An agent that reports steps says when the stream answers: the viewer opens then,
      // after the page has shown the wait. Without steps, it opens as soon as it runs.
      if (session.state === "running" && (session.streaming_ready || !reported)) location.assign(root.dataset.viewerUrl);
    }
  }

  function initProgress(root) {
    var data = document.getElementById("session-data");
    var session = data ? JSON.parse(data.textContent) : null;
    if (session) renderProgress(root, session);
    Live.on(function (frame) {
      if (frame.type === "session.update" && frame.session && frame.session.id === root.dataset.sessionId) {
        renderProgress(root, frame.session);
      }
    });
    Live.watch(root.dataset.sessionId);
  }

  // --- catalog ------------------------------------------------------------------------
  function initCatalog(form) {
    var search = form.querySelector("[name=q]");
    var category = form.querySelector("[name=category]");
    var empty = document.querySelector("[data-catalog-empty]");
    function apply() {
      var words = search.value.trim().toLowerCase();
      var wanted = category.value;
      var shown = 0;
      document.querySelectorAll("[data-template]").forEach(function (card) {
        var match = (!wanted || card.dataset.category === wanted) && (!words || card.dataset.search.indexOf(words) >= 0);
        card.hidden = !match;
        if (match) shown += 1;
      });
      if (empty) empty.hidden = shown > 0;
    }
    search.addEventListener("input", apply);
    category.addEventListener("change", apply);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.querySelector("[data-session-list]");
    var progress = document.querySelector("[data-progress]");
    var catalogFilter = document.querySelector("[data-catalog-filter]");
    if (catalogFilter) initCatalog(catalogFilter);
    if (list) initSessions(list);
    if (progress) initProgress(progress);
    if (list || progress || document.querySelector("[data-viewer]")) Live.start();
  });
  window.StreamSpaceActive = ACTIVE;
})();
