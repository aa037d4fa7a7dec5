// The web UI's one script, served by the node as /ui.js (the CSP allows scripts from
// the node only, never inline ones or event handler attributes). It adds to pages that
// work without it: "select all" on a search result page, "Starting…" on its bulk form
// until the job's page comes (its buttons cannot be pressed twice meanwhile), and the
// live progress of a running job (the page refreshes itself every 2 s when scripts are
// off). It writes only text and properties, never markup or styles.
(function () {
  'use strict';
  var $ = function (i) { return document.getElementById(i); };

  var all = $('select-all');
  if (all) {
    all.addEventListener('click', function () {
      document.querySelectorAll('input[name=mid]').forEach(function (c) {
        c.checked = all.checked;
      });
    });
  }

  // The bulk form of a search result page: the buttons are disabled only after the
  // browser has taken the pressed one's name and value for the form.
  var results = $('results');
  if (results) {
    results.addEventListener('submit', function () {
      var busy = results.querySelector('.busy');
      if (busy) busy.hidden = false;
      setTimeout(function () {
        results.querySelectorAll('button').forEach(function (x) { x.disabled = true; });
      });
    });
    // Back from the job's page, a page kept by the browser is usable again.
    window.addEventListener('pageshow', function (e) {
      if (!e.persisted) return;
      var busy = results.querySelector('.busy');
      if (busy) busy.hidden = true;
      results.querySelectorAll('button').forEach(function (x) { x.disabled = false; });
    });
  }

  // A running job's page names its record in data-poll on the progress bar.
  var bar = $('progress');
  var u = bar && bar.getAttribute('data-poll');
  if (!u) return;
  function apply(j) {
    var t = j.total || 0;
    if (t > 0) { bar.max = t; bar.value = Math.min(j.done, t); }
    else { bar.max = 1; bar.value = j.state === 'running' ? 0 : 1; }
    $('done').textContent = j.done;
    $('total').textContent = (j.total_exact ? '' : 'at least ') + t;
    $('failed').textContent = j.failed;
    var s = {
      running: 'Running\u2026',
      done: 'Done.',
      cancelled: 'Cancelled: stopped before the end.'
    }[j.state] || ('Stopped: ' + (j.error || 'the job ended early'));
    $('state').textContent = s;
    var ul = $('refusals');
    while (ul.firstChild) ul.removeChild(ul.firstChild);
    (j.refusals || []).forEach(function (r) {
      var li = document.createElement('li');
      li.textContent = r;
      ul.appendChild(li);
    });
    if (j.state !== 'running') {
      $('cancel-form').hidden = true;
      if (j.state === 'stopped') $('result').className = 'err';
    }
  }
  function tick() {
    fetch(u, { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
      if (r.ok) return r.json();
      $('state').textContent = r.status === 401
        ? 'Your session ended: log in again to follow the job (it goes on).'
        : 'The progress could not be read (' + r.status + '); reload the page.';
      return null;
    }).then(function (j) {
      if (!j) return;
      apply(j);
      if (j.state === 'running') setTimeout(tick, 500);
    }, function () { setTimeout(tick, 2000); });
  }
  setTimeout(tick, 500);
})();
