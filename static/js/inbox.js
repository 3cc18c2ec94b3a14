// The inbox's glue where htmx cannot do it alone, no markup built here: the composer's keys
// (Enter sends, or Shift+Enter does), the "/" menu of saved replies (rendered by the server),
// presence (which conversation this page shows; typing), and, while the tab is hidden, the
// unread count in its title and a browser notification for each new message.
(function () {
  "use strict";

  var TYPING_EVERY_MS = 2000;
  var viewing = null;
  var lastTyping = 0;
  var unseen = 0;
  var baseTitle = document.title;

  function socket() { return window.waslSocket; }

  // -- presence: the conversation this page shows ------------------------------------------
  function sayViewing(force) {
    var open = document.querySelector("[data-viewing]");
    var id = open ? parseInt(open.dataset.viewing, 10) : null;
    if (!socket() || (!force && id === viewing)) return;
    viewing = id;
    socket().emit("viewing", { conversation_id: id });
  }

  // -- the composer ------------------------------------------------------------------------
  function menuOf(textarea) {
    return document.getElementById(textarea.getAttribute("aria-controls"));
  }

  function slashToken(textarea) {
    var before = textarea.value.slice(0, textarea.selectionStart);
    var match = /(^|\s)\/([^\s\/]*)$/.exec(before);
    return match ? { start: before.length - match[2].length - 1, query: match[2] } : null;
  }

  function closeMenu(menu) {
    menu.hidden = true;
    menu.innerHTML = "";
  }

  function options(menu) {
    return Array.prototype.slice.call(menu.querySelectorAll("[role=option]"));
  }

  function move(menu, step) {
    var all = options(menu);
    if (!all.length) return;
    var index = all.findIndex(function (o) { return o.getAttribute("aria-selected") === "true"; });
    var next = (index + step + all.length) % all.length;
    all.forEach(function (o, i) { o.setAttribute("aria-selected", i === next ? "true" : "false"); });
    all[next].scrollIntoView({ block: "nearest" });
  }

  function insert(textarea, option) {
    var token = slashToken(textarea);
    if (!token) return;
    var end = textarea.selectionStart;
    var text = option.dataset.text;
    textarea.value = textarea.value.slice(0, token.start) + text + textarea.value.slice(end);
    var caret = token.start + text.length;
    textarea.setSelectionRange(caret, caret);
    closeMenu(menuOf(textarea));
    textarea.focus();
  }

  function onInput(event) {
    var textarea = event.target;
    if (!textarea.matches || !textarea.matches("textarea[data-composer]")) return;
    var now = Date.now();
    if (socket() && now - lastTyping > TYPING_EVERY_MS) {
      lastTyping = now;
      socket().emit("typing", { conversation_id: parseInt(textarea.dataset.composer, 10) });
    }
    var menu = menuOf(textarea);
    var token = slashToken(textarea);
    if (!token) { closeMenu(menu); return; }
    htmx.ajax("GET", textarea.dataset.repliesUrl + "?q=" + encodeURIComponent(token.query),
              { target: menu, swap: "innerHTML" }).then(function () {
      menu.hidden = !slashToken(textarea);
    });
  }

  function onKeydown(event) {
    var textarea = event.target;
    if (!textarea.matches || !textarea.matches("textarea[data-composer]")) return;
    var menu = menuOf(textarea);
    var open = menu && !menu.hidden && options(menu).length;
    if (open && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
      event.preventDefault();
      move(menu, event.key === "ArrowDown" ? 1 : -1);
      return;
    }
    if (open && (event.key === "Enter" || event.key === "Tab")) {
      event.preventDefault();
      insert(textarea, menu.querySelector("[aria-selected=true]") || options(menu)[0]);
      return;
    }
    if (menu && !menu.hidden && event.key === "Escape") {
      event.preventDefault();
      closeMenu(menu);
      return;
    }
    if (event.key !== "Enter" || event.isComposing) return;
    var enterSends = textarea.dataset.enterSends === "1";
    if (event.shiftKey !== enterSends) {
      event.preventDefault();
      textarea.form.requestSubmit();
    }
  }

  function onClick(event) {
    var option = event.target.closest && event.target.closest(".replies-menu [role=option]");
    if (option) {
      var textarea = document.querySelector("[aria-controls='" + option.parentNode.id + "']");
      if (textarea) insert(textarea, option);
      return;
    }
    var button = event.target.closest && event.target.closest("[data-notifications]");
    if (button && "Notification" in window) {
      Notification.requestPermission().then(showNotificationButton);
    }
  }

  // -- while the tab is hidden: unread count in the title, notifications ---------------------
  function showNotificationButton() {
    var wanted = "Notification" in window && Notification.permission === "default";
    document.querySelectorAll("[data-notifications]").forEach(function (button) {
      button.hidden = !wanted;
    });
  }

  function onNewMessage(event) {
    if (!document.hidden) return;
    unseen += 1;
    document.title = "(" + unseen + ") " + baseTitle;
    var notify = event.detail && event.detail.notify;
    if (notify && "Notification" in window && Notification.permission === "granted") {
      new Notification(notify.title, { body: notify.body, tag: "wasl-" + event.detail.conversation_id });
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      unseen = 0;
      document.title = baseTitle;
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.body.addEventListener("input", onInput);
    document.body.addEventListener("keydown", onKeydown);
    document.body.addEventListener("click", onClick);
    document.body.addEventListener("realtime:newMessage", onNewMessage);
    document.body.addEventListener("htmx:afterSettle", function () {
      if (!unseen) baseTitle = document.title;
      showNotificationButton();
      sayViewing(false);
    });
    if (socket()) socket().on("connect", function () { sayViewing(true); });
    showNotificationButton();
  });
})();
