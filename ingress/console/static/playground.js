// The Playground page: send without reloading, and show the conversation as the bot answers (polling
// messages.json). Without this script the page still works: plain forms, and a reload shows the replies.
"use strict";

wabot.ready(() => {
  const root = document.querySelector("[data-playground]");
  if (!root) return;
  const log = document.getElementById("pg-log");
  const empty = document.getElementById("pg-empty");
  const waiting = document.getElementById("pg-waiting");
  const form = document.getElementById("pg-send");
  const text = document.getElementById("pg-text");
  const reset = document.getElementById("pg-reset");
  const url = root.dataset.messagesUrl;
  let shown = "";

  const el = (tag, cls, content) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (content !== undefined) node.textContent = content;
    return node;
  };

  function tokens(t) {
    if (!t) return "tokens: 0";
    const parts = t.prompt !== undefined ? ` (${t.prompt} prompt + ${t.completion} completion)` : "";
    return `tokens: ${t.total || 0}${parts}`;
  }

  function item(m) {
    const li = el("li", `pg-msg pg-${m.role}`);
    li.dataset.id = m.id;
    li.appendChild(el("div", "pg-text", m.text));
    const meta = el("div", "pg-meta");
    if (m.role === "assistant") {
      meta.appendChild(el("span", "pg-agent", `agent: ${m.agent || "none"}`));
      meta.appendChild(el("span", "pg-tools", `tools: ${m.tools.length ? m.tools.join(", ") : "none"}`));
      meta.appendChild(el("span", "pg-tokens", tokens(m.tokens)));
      li.appendChild(meta);
    } else if (m.role === "user") {
      meta.appendChild(el("span", "pg-status", m.status));
      li.appendChild(meta);
    }
    return li;
  }

  function render(messages) {
    const key = JSON.stringify(messages.map((m) => [m.id, m.status]));
    if (key === shown) return;
    shown = key;
    log.replaceChildren(...messages.map(item));
    empty.hidden = messages.length > 0;
    waiting.hidden = !messages.some((m) => m.role === "user" && m.status === "received");
    log.lastElementChild && log.lastElementChild.scrollIntoView({block: "nearest"});
  }

  async function refresh() {
    const response = await wabot.call(url);
    if (response.ok) render((await response.json()).messages);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = text.value.trim();
    if (!value) return;
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const response = await wabot.call(form.action, {method: "POST", body: JSON.stringify({text: value}),
                                                      headers: {"Content-Type": "application/json"}});
      if (response.ok) {
        text.value = "";
        waiting.hidden = false;
        await refresh();
      } else {
        const body = await response.json().catch(() => ({}));
        window.alert(body.error || `The message was not sent (HTTP ${response.status}).`);
      }
    } finally {
      button.disabled = false;
      text.focus();
    }
  });

  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  reset.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await wabot.call(reset.action, {method: "POST"});
    if (response.ok) {
      shown = "";
      render([]);
    }
  });

  wabot.poll(refresh, 1000);
});
