// A rejection needs a comment: say so before the round trip (the approver checks it too).
document.querySelectorAll('#decision-form button.reject').forEach(function (button) {
  button.addEventListener('click', function (event) {
    var comment = document.querySelector('#decision-form textarea');
    if (!comment.value.trim()) { event.preventDefault(); comment.placeholder = 'Say why you reject it'; comment.focus(); }
  });
});
