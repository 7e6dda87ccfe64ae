// Loaded on widget pages after RequireJS and before the widget manager bundle (see _config.yml, nb_ipywidgets_js).
// Part of the course's own code, not a vendored file: book/_vendor/update.sh leaves it alone.
(function () {
  "use strict";
  // 1. The widget manager computes where its font files live from its AMD module id, as if it were on a CDN.
  //    Map that id onto the copy served by this site, wherever the site is hosted.
  var script = document.currentScript;
  var base = script ? script.src.replace(/widgets-setup\.js(\?.*)?$/, "") : "";
  if (window.require && window.require.config) {
    window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": base + "html-manager" } });
  }

  // 2. Widget labels are typeset through the MathJax 2 API (MathJax.Hub.Queue); the book runs MathJax 3.
  //    Give MathJax 3 a minimal Hub that forwards to typesetPromise, whenever MathJax (re)defines itself.
  function typeset(element) {
    var mj = window.MathJax;
    if (!mj || !mj.startup || !mj.startup.promise || !element) return;
    mj.startup.promise
      .then(function () { return mj.typesetPromise ? mj.typesetPromise([element]) : null; })
      .catch(function () { /* a label that fails to typeset stays as text */ });
  }
  function addHub(mj) {
    if (!mj || typeof mj !== "object" || !mj.version || mj.Hub) return;
    mj.Hub = {
      Queue: function () {
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (Array.isArray(job) && job[0] === "Typeset") typeset(job[2]);
        }
      },
    };
  }
  var current = window.MathJax;
  addHub(current);
  try {
    Object.defineProperty(window, "MathJax", {
      configurable: true,
      enumerable: true,
      get: function () { return current; },
      set: function (value) { current = value; addHub(value); },
    });
  } catch (err) { /* MathJax already locked the property: it is loaded, and addHub ran above */ }
  // Pages with widgets but no math load no MathJax; then the manager skips typesetting on its own.
})();
