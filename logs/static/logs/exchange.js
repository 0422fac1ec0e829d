// "Copy" buttons on the exchange page: copy the text of the element named in data-copy.
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) return;
  var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(source.textContent).then(done);
  } else {  // plain-HTTP admin: the clipboard API is unavailable, fall back to a selection copy
    var range = document.createRange();
    range.selectNodeContents(source);
    var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    document.execCommand("copy"); sel.removeAllRanges(); done();
  }
});
