// Small glue only: live updates over Socket.IO, swapped in by htmx. No markup is built here;
// every event carries server-rendered HTML and the id of the element it replaces.
(function () {
  "use strict";

  function connect() {
    if (document.body.dataset.realtime !== "on" || typeof io === "undefined") return;
    var socket = io({ transports: ["websocket", "polling"] });
    var connectedOnce = false;

    socket.on("connect", function () {
      // After a reconnect (a web process or Redis restarted) the page re-fetches what it shows.
      if (connectedOnce) htmx.trigger(document.body, "realtime:reconnected");
      connectedOnce = true;
    });

    socket.onAny(function (event, data) {
      if (!data || !data.html || !data.target) {
        htmx.trigger(document.body, "realtime:" + event, data || {});
        return;
      }
      var target = document.querySelector(data.target);
      if (target) htmx.swap(target, data.html, { swapStyle: data.swap || "outerHTML" });
      htmx.trigger(document.body, "realtime:" + event, data);
    });
    window.waslSocket = socket;
  }

  document.addEventListener("DOMContentLoaded", connect);
})();
