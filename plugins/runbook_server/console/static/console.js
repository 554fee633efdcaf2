// runbook console: live run pages. Progressive enhancement only: every page reads and works without this file.
//
// On a run page (<main data-events-url data-live-url data-after>), the run's journal streams in over
// Server-Sent Events. Each event is added to the events table (as text, never as HTML), and the live part of
// the page (steps, probes, output, next action, buttons) is fetched again from the server, which renders it
// the same way as the full page. A form a person is typing in is never replaced under their hands.
(function () {
  "use strict";

  var main = document.querySelector("main[data-events-url]");
  if (!main || !window.EventSource || !window.fetch) {
    return;
  }
  var liveUrl = main.getAttribute("data-live-url");
  var eventsUrl = main.getAttribute("data-events-url");
  var after = main.getAttribute("data-after") || "0";
  var live = document.getElementById("live");
  var rows = document.getElementById("events-body");
  var status = document.getElementById("live-status");
  var timer = null;
  var deferred = false;

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function busyIn(part) {
    // True if the person is typing in a field of this part (keep their text).
    var active = document.activeElement;
    if (!active || !part.contains(active)) {
      return false;
    }
    var tag = active.tagName;
    return (tag === "TEXTAREA" || tag === "INPUT") && active.value !== active.defaultValue;
  }

  function swap(html) {
    var fresh = document.createElement("div");
    fresh.innerHTML = html; // server-rendered with autoescaping; the CSP forbids inline scripts anyway
    var parts = fresh.querySelectorAll("[data-live-part]");
    deferred = false;
    for (var i = 0; i < parts.length; i++) {
      var old = document.getElementById(parts[i].id);
      if (!old) {
        continue;
      }
      if (busyIn(old)) {
        deferred = true;
        continue;
      }
      var open = old.querySelectorAll("details[open]");
      var ids = [];
      for (var j = 0; j < open.length; j++) {
        if (open[j].id) {
          ids.push(open[j].id);
        }
      }
      old.replaceWith(parts[i]);
      for (var k = 0; k < ids.length; k++) {
        var again = document.getElementById(ids[k]);
        if (again) {
          again.open = true;
        }
      }
    }
    var badge = fresh.querySelector("[data-run-state]");
    if (badge) {
      main.setAttribute("data-run-state", badge.getAttribute("data-run-state"));
    }
  }

  // One refresh at a time: an event that arrives while one is in flight asks for another once it is done. Two
  // fetches in flight could answer out of order, and the older page would then stay until the next event.
  var busy = false;
  var again = false;

  function refresh() {
    timer = null;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(liveUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected && response.url.indexOf("/login") !== -1) {
          throw new Error("your session ended; log in again");
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(swap)
      .catch(function (err) {
        say("Could not refresh the page (" + err.message + "); reload it to see the latest state.");
      })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          schedule();
        }
      });
  }

  function schedule() {
    if (timer === null) {
      timer = window.setTimeout(refresh, 150);
    }
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
  }

  function addRow(ev) {
    if (!rows) {
      return;
    }
    var data = ev.data || {};
    var row = document.createElement("tr");
    cell(row, ev.seq);
    cell(row, (ev.ts || "").replace("T", " ").replace(/\.\d+Z$/, "Z"));
    cell(row, ev.type);
    cell(row, ev.step_id || "");
    cell(row, data.target || "");
    cell(row, ev.actor || "");
    cell(row, data.reason || data.detail || data.state || "");
    rows.appendChild(row);
  }

  var source = new EventSource(eventsUrl + "?after=" + encodeURIComponent(after));
  source.onopen = function () {
    say("Live: this page updates as the run goes on.");
  };
  source.onmessage = function (message) {
    var ev;
    try {
      ev = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    addRow(ev);
    if (ev.type === "step.finished" && ev.step_id && ev.data) {
      say("Step " + ev.step_id + (ev.data.target ? " on " + ev.data.target : "") + ": " + (ev.data.state || "finished") + ".");
    }
    schedule();
  };
  source.addEventListener("end", function (message) {
    source.close();
    var end = {};
    try {
      end = JSON.parse(message.data);
    } catch (e) {
      end = {};
    }
    refresh();
    say("The run " + (end.state || "ended") + "; live updates stopped.");
  });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) {
      say("Live updates stopped; reload the page to see the latest state.");
    } else {
      say("Connection lost; reconnecting…");
    }
  };
  document.addEventListener("focusout", function () {
    if (deferred) {
      schedule();
    }
  });
})();
