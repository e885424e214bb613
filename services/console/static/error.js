// "Try again" reloads the page (a javascript: link would need an inline-script CSP exception).
document.querySelectorAll('a[data-reload]').forEach(function (link) {
  link.addEventListener('click', function (event) { event.preventDefault(); location.reload(); });
});
