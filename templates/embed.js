// The compact search page's one script (/embed only: the full page runs none).
//
// WordPress frames an embed it discovered with sandbox="allow-scripts": the browser then submits
// no form and lets no link leave the frame. This script keeps the frame usable there:
//  1. It runs the search form itself, navigating its own frame, which a sandbox allows. The URL is
//     the one the form would have asked for.
//  2. Where WordPress gave the frame a secret (src="...#?secret=..."), it speaks WordPress's embed
//     protocol to the host page's wp-embed.js: {message: "height"} sizes the frame (which stays
//     hidden behind the fallback link until a first message), and {message: "link"} asks the host
//     to open a result. The host opens only links on the frame's own host, so a result goes by its
//     data-link, this service's signed redirect (/link). The secret rides along on every
//     navigation inside the frame, or the next page could not speak.
// Without this script (or outside a sandbox) the page works as it always did.
(function () {
  "use strict";
  var found = /^#\?secret=([A-Za-z0-9]{1,64})$/.exec(window.location.hash);
  var secret = found ? found[1] : null;

  function withSecret(url) {
    return secret ? url.split("#")[0] + "#?secret=" + secret : url;
  }

  function tellHost(message, value) {
    window.parent.postMessage({ message: message, value: value, secret: secret }, "*");
  }

  // A click on the submit button, or Enter in a field (the browser clicks the button for it).
  var form = document.querySelector("form[role=search]");
  if (form) {
    form.addEventListener("click", function (event) {
      if (!event.target.closest("button[type=submit]")) return;
      event.preventDefault();
      if (!form.reportValidity()) return;
      var url = new URL(form.action);
      url.search = new URLSearchParams(new FormData(form)).toString();
      window.location.assign(withSecret(url.href));
    });
  }

  if (secret === null) return;

  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[href]");
    if (!link || link.getAttribute("href").charAt(0) === "#") return;
    event.preventDefault();
    if (link.target === "_self") {
      window.location.assign(withSecret(link.href));
    } else {
      tellHost("link", link.getAttribute("data-link") || link.href);
    }
  });

  var reported = -1;
  // The root element's box: its content's height, not the frame's (so it can shrink), with the
  // margins that collapse through the body (a root's margins do not collapse: CSS 2.1, 8.3.1).
  function reportHeight() {
    var height = Math.ceil(document.documentElement.getBoundingClientRect().height);
    if (height !== reported) {
      reported = height;
      tellHost("height", height);
    }
  }
  // Now, and again when images have loaded: a browser pauses the rendering of a cross-origin frame
  // it hides, as WordPress hides this one until it speaks, so a ResizeObserver alone would wait.
  reportHeight();
  window.addEventListener("load", reportHeight);
  new ResizeObserver(reportHeight).observe(document.documentElement);
})();
