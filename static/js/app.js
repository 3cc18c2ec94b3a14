// Small glue only: live updates over Socket.IO, swapped in by htmx. No markup is built here;
// every event carries server-rendered HTML and the CSS selector of the element it goes into,
// either once ({html, target, swap}) or as a list ({swaps: [{html, target, swap}, ...]}).
(function () {
  "use strict";

  function apply(swap) {
    var target = swap && typeof swap.html === "string" && swap.target &&
      document.querySelector(swap.target);
    if (!target) return false;
    var typed = typedIn(target);
    htmx.swap(target, swap.html, { swapStyle: swap.swap || "outerHTML" });
    keepTyped(typed);
    return true;
  }

  // A live update redraws a part of the page (a panel, after anyone's change, one's own
  // included) while someone may be typing in one of its fields: what they typed and did not
  // send goes into the same field of the new markup, unless the field's own value changed
  // meanwhile (then the change is shown). htmx already gives the focus back, by id.
  var TYPED = "textarea[id], input[id]:not([type=hidden]):not([type=checkbox])" +
    ":not([type=radio]):not([type=file]):not([type=submit]):not([type=button])";

  function typedIn(target) {
    var fields = Array.prototype.slice.call(target.querySelectorAll(TYPED));
    if (target.matches(TYPED)) fields.push(target);
    return fields.filter(function (field) { return field.value !== field.defaultValue; })
      .map(function (field) {
        return { id: field.id, value: field.value, base: field.defaultValue,
                 start: field.selectionStart, end: field.selectionEnd };
      });
  }

  function keepTyped(typed) {
    typed.forEach(function (was) {
      var field = document.getElementById(was.id);
      if (!field || !field.matches(TYPED) || field.defaultValue !== was.base) return;
      field.value = was.value;
      if (field === document.activeElement && was.start !== null) {
        field.setSelectionRange(was.start, was.end);
      }
    });
  }

  var UNAVAILABLE_RETRY_MS = 5000;

  function connect() {
    if (document.body.dataset.realtime !== "on" || typeof io === "undefined") return;
    var socket = io({ transports: ["websocket", "polling"] });
    var connectedOnce = false;

    socket.on("connect", function () {
      // After a reconnect (a web process or Redis restarted) the page re-fetches what it shows.
      if (connectedOnce) htmx.trigger(document.body, "realtime:reconnected");
      connectedOnce = true;
    });

    socket.on("connect_error", function (error) {
      // Refused while the database or Redis is down: try again a little later. Any other
      // refusal (no valid session) is final.
      if (!socket.active && error.message === "unavailable") {
        setTimeout(function () { socket.connect(); }, UNAVAILABLE_RETRY_MS);
      }
    });

    socket.on("disconnect", function (reason) {
      // The server closes the sockets of a user whose role changed (and of ended sessions):
      // connect again, into the new role's rooms; a session that ended is refused, for good.
      if (reason === "io server disconnect") socket.connect();
    });

    socket.onAny(function (event, data) {
      data = data || {};
      (data.swaps || [data]).forEach(apply);
      // A message that arrived in a conversation open on a visible page has been seen.
      var read = data.markAsRead;
      if (read && !document.hidden && document.querySelector(read.selector)) {
        socket.emit("markAsRead", { conversation_id: read.conversation_id });
      }
      htmx.trigger(document.body, "realtime:" + event, data);
      // The server lost Redis for a while (crm/realtime.py): events may have been lost, so
      // the page re-fetches what it shows, as after a reconnect.
      if (event === "resync") htmx.trigger(document.body, "realtime:reconnected");
    });
    window.waslSocket = socket;
  }

  // Lists marked data-sortable="<group>" drag with SortableJS (items: [data-sortable-item];
  // a list with data-sortable-handle drags by its [data-sortable-handle] only). Sortable fires
  // "end" on the list after a drop, and it bubbles to the form around it, whose
  // hx-trigger="end" posts the new order (htmx's own Sortable example).
  function initSortables(root) {
    if (typeof Sortable === "undefined") return;
    var lists = Array.prototype.slice.call(root.querySelectorAll("[data-sortable]"));
    if (root.matches && root.matches("[data-sortable]")) lists.push(root);
    lists.forEach(function (list) {
      if (Sortable.get(list)) return;
      Sortable.create(list, {
        group: list.dataset.sortable,
        draggable: "[data-sortable-item]",
        handle: list.hasAttribute("data-sortable-handle") ? "[data-sortable-handle]" : null,
        animation: 150,
        ghostClass: "sortable-ghost"
      });
    });
  }

  // A file input in the page's language (templates/_macros.html file_input): show the names of
  // the files chosen, or the translated "No file chosen" the input carries.
  document.addEventListener("change", function (event) {
    var input = event.target;
    if (!input.matches || !input.matches("input.file-input-native")) return;
    var shown = document.getElementById(input.id + "-name");
    if (shown) {
      var names = Array.prototype.map.call(input.files || [], function (file) { return file.name; });
      shown.textContent = names.length ? names.join(", ") : input.dataset.noFile;
    }
  });

  // A live update may replace the form that sent a request (a panel's form: the same change
  // reached the page over the socket first) before its answer arrives. htmx then looks for the
  // answer's target (HX-Retarget) and out-of-band parts beside the detached form, and fails
  // with htmx:targetError: such an answer is swapped where it says, found in the page, and its
  // events fired on the page. The listener sits on the form itself, which still hears it.
  function answerDetached(xhr) {
    var target = document.querySelector(xhr.getResponseHeader("HX-Retarget"));
    if (target) {
      htmx.swap(target, xhr.response,
                { swapStyle: xhr.getResponseHeader("HX-Reswap") || "outerHTML" });
    }
    var events = xhr.getResponseHeader("HX-Trigger");
    if (events && events.charAt(0) !== "{") {
      events.split(",").forEach(function (name) { htmx.trigger(document.body, name.trim()); });
    }
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    function loaded(answer) {
      if (answer.target !== elt) return;
      elt.removeEventListener("htmx:beforeOnLoad", loaded);
      if (elt.isConnected || !answer.detail.xhr.getResponseHeader("HX-Retarget")) return;
      answer.preventDefault();
      answerDetached(answer.detail.xhr);
    }
    elt.addEventListener("htmx:beforeOnLoad", loaded);
  });

  // Keyboard users: an answer that replaces the part of the page holding the focus (a row, a
  // list, a form) would drop the focus to the top of the page. It goes to the first field the
  // answer says is invalid, else stays on the control at the same place in the new part (or
  // the last one left), else goes to the flash area, which says what happened; Tab goes on
  // from there. A boosted page load moves on as a page does.
  var FOCUSABLE = "a[href], button:not([disabled]), input:not([type=hidden]):not([disabled])," +
    " select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])";
  var lostFocus = null;

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target, active = document.activeElement;
    lostFocus = null;
    if (event.detail.boosted || !target || target === document.body || !active ||
        active === document.body || !target.contains(active)) return;
    lostFocus = { id: target.id, index: Array.prototype.indexOf.call(
      target.querySelectorAll(FOCUSABLE), active) };
  });

  // A page that comes back refused (a plain or boosted post answered 422) puts the focus on
  // the first field it marks invalid, unless the focus is somewhere already.
  function focusInvalid() {
    var invalid = document.querySelector("main [aria-invalid=true]");
    if (invalid && (!document.activeElement || document.activeElement === document.body)) {
      invalid.focus();
    }
  }
  document.addEventListener("DOMContentLoaded", focusInvalid);

  // A button with data-copy="<id>" copies that element's text (recovery codes), and says so
  // with its data-copied label for a moment.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    var source = button && document.getElementById(button.dataset.copy);
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.value || source.textContent).then(function () {
      var label = button.textContent;
      button.textContent = button.dataset.copied;
      setTimeout(function () { button.textContent = label; }, 2000);
    });
  });

  // A page that answers a post it must not repeat (a new API key, shown once) turns its
  // history entry into a plain visit of the same address: reloading it gets the page again
  // instead of posting the form a second time.
  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector("[data-forget-post]")) {
      history.replaceState(history.state, "", location.href);
    }
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.detail.boosted) focusInvalid();
    var lost = lostFocus;
    lostFocus = null;
    if (!lost || (document.activeElement && document.activeElement !== document.body)) return;
    var target = lost.id && document.getElementById(lost.id);
    var controls = target ? target.querySelectorAll(FOCUSABLE) : [];
    var invalid = target && target.querySelector("[aria-invalid=true]");
    var next = invalid || (controls.length ?
      controls[Math.min(Math.max(lost.index, 0), controls.length - 1)] :
      document.getElementById("flashes"));
    if (!next) return;
    if (!invalid && !controls.length) next.setAttribute("tabindex", "-1");
    next.focus();
  });

  // Escape closes the menu (a <details>) that holds the focus, and gives it back to its button.
  var MENUS = "details.menu-toggle[open], details.user-menu[open], details.message-menu[open]";
  document.addEventListener("keydown", function (event) {
    var menu = event.key === "Escape" && document.activeElement &&
      document.activeElement.closest && document.activeElement.closest(MENUS);
    if (!menu) return;
    menu.open = false;
    menu.querySelector("summary").focus();
  });

  document.addEventListener("DOMContentLoaded", connect);
  htmx.onLoad(initSortables);
})();
