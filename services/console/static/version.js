// Follow the version's journey: reload when a stage changes (e.g. the deployment after an approval).
// The stages the page was rendered with come in the script tag's data-stages attribute.
(function () {
  var shown = JSON.parse(document.currentScript.dataset.stages);
  var url = location.pathname + '/stages.json';
  var polls = 0;
  function changed(a, b) {
    var keys = Object.keys(a).concat(Object.keys(b));
    return keys.some(function (k) { return a[k] !== b[k]; });
  }
  var timer = setInterval(function () {
    if (++polls > 300) { clearInterval(timer); return; }
    fetch(url, {credentials: 'same-origin'}).then(function (r) { return r.ok ? r.json() : null; }).then(function (now) {
      if (now && changed(shown, now)) { location.reload(); }
    }).catch(function () {});
  }, 2000);
})();
