// Conversations pages: keep the list and an open conversation up to date by polling their JSON endpoints
// (about once a second), rendering the same fields the server's templates render. Text goes in with
// textContent only: nothing a user wrote is ever parsed as HTML.
"use strict";

(() => {
  const POLL_MS = 1000;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // ------------------------------------------------------------ the list

  function rowNode(c) {
    const li = el("li", "conv");
    li.dataset.userId = c.user_id;
    const a = el("a", "conv-link");
    a.href = c.url;
    const top = el("span", "conv-top");
    top.append(el("span", "conv-name", c.name || "+" + c.phone), el("span", "conv-phone muted", "+" + c.phone));
    const badge = el("span", "badge " + c.state, c.state_label);
    badge.dataset.state = c.state;
    const unread = el("span", "unread", String(c.unread));
    unread.dataset.unread = c.unread;
    unread.title = "unread messages";
    unread.hidden = !c.unread;
    top.append(badge, unread);
    const bottom = el("span", "conv-bottom");
    const last = el("span", "conv-last");
    if (c.last_role) last.append(el("span", "conv-role", c.last_role + ":"), " ");
    last.append(c.last_text);
    const time = el("time", null, c.last_at_text);
    time.dateTime = c.last_at;
    bottom.append(last, time);
    a.append(top, bottom);
    li.append(a);
    return li;
  }

  function listPage(list) {
    const empty = document.querySelector("[data-conv-empty]");
    let shown = "";
    const refresh = async () => {
      const response = await wabot.call(list.dataset.source);
      if (!response.ok) return;
      const data = await response.json();
      const signature = JSON.stringify(data.conversations);
      if (signature === shown) return;
      shown = signature;
      list.replaceChildren(...data.conversations.map(rowNode));
      if (empty) empty.hidden = data.conversations.length > 0;
    };
    // Typing in the search box or picking a state filters at once (the form still works without this).
    const form = document.querySelector("[data-conv-filters]");
    if (form) {
      let timer = null;
      const apply = () => {
        const params = new URLSearchParams(new FormData(form));
        for (const [k, v] of [...params]) if (!v) params.delete(k);
        const query = params.toString();
        list.dataset.source = list.dataset.source.split("?")[0] + (query ? "?" + query : "");
        window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
        refresh();
      };
      form.addEventListener("input", () => { window.clearTimeout(timer); timer = window.setTimeout(apply, 250); });
      form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
    }
    wabot.poll(refresh, POLL_MS);
  }

  // ------------------------------------------------------------ one conversation

  function messageNode(m) {
    const li = el("li", "msg " + m.role);
    li.dataset.id = m.id;
    const meta = el("div", "msg-meta");
    const time = el("time", null, m.at_text);
    time.dateTime = m.at;
    meta.append(el("span", "msg-role", m.role), " ", el("span", "msg-type", m.type), " ", time);
    if (m.status) {
      const status = el("span", "msg-status " + m.status, m.status_text);
      status.dataset.status = m.status;
      meta.append(" ", status);
    }
    li.append(meta, el("div", "msg-body", m.body));
    return li;
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  function conversationPage(thread) {
    const list = thread.querySelector("[data-messages]");
    const empty = thread.querySelector("[data-messages-empty]");
    const badge = document.querySelector("[data-conv-state]");
    const windowNote = document.querySelector("[data-window]");
    let shown = "";
    const refresh = async () => {
      const response = await wabot.call(thread.dataset.source);
      if (response.status === 404) { window.location.assign(document.querySelector(".back a").href); return; }
      if (!response.ok) return;
      const data = await response.json();
      const state = data.conversation.state;
      badge.className = "badge " + state;
      badge.dataset.convState = state;
      badge.textContent = data.conversation.state_label;
      document.querySelectorAll("[data-show-when]").forEach((f) => { f.hidden = f.dataset.showWhen !== state; });
      windowNote.textContent = data.window.text;
      windowNote.className = "window " + (data.window.open ? "open" : "closed");
      const signature = JSON.stringify(data.messages);
      if (signature === shown) return;
      const follow = shown === "" || nearBottom();
      shown = signature;
      list.replaceChildren(...data.messages.map(messageNode));
      if (empty) empty.hidden = data.messages.length > 0;
      if (follow) window.scrollTo(0, document.body.scrollHeight);
    };
    wabot.poll(refresh, POLL_MS);
  }

  wabot.ready(() => {
    const list = document.querySelector("[data-conv-list]");
    if (list) listPage(list);
    const thread = document.querySelector("[data-thread]");
    if (thread) conversationPage(thread);
  });
})();
