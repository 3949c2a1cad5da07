"use strict";
// The web chat: the JSON API and its event stream, with the token in a header only. Every text a person or an
// agent wrote goes into the page as a text node, never as markup.
(() => {
  const $ = (id) => document.getElementById(id);
  const AGENT = document.body.dataset.agent;
  const MENTION = /(^|[^\w@])@([A-Za-z0-9_.-]+)/g;
  const state = {
    token: sessionStorage.getItem("loopwright-token"),
    me: null,
    thread: null,
    threads: new Map(),  // name -> the thread object
    messages: new Map(),  // id -> the message object, of the thread shown
    tasks: new Map(),  // id -> the task object
    watched: new Set(),  // the ids of the tasks asked for (their events update them)
    fresh: null,  // while a thread's history loads: the ids the stream brought meanwhile (newer than the history's)
    lastEvent: null,  // the stream's last event id: a reconnect resumes after it
    editing: null,  // the id of the message the composer edits
    stream: null,  // the AbortController of the open stream
  };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function showError(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  class ApiError extends Error {}

  async function api(method, path, body, headers = {}) {
    const init = { method, headers: { Authorization: `Bearer ${state.token}`, ...headers }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const data = await res.json().catch(() => ({}));
    if (res.status === 401) {
      signOut("The token was refused: sign in again.");
      throw new ApiError("signed out");
    }
    if (!res.ok) {
      const wait = res.headers.get("Retry-After");
      throw new ApiError([data.error || `${res.status} ${res.statusText}`, data.hint,
        wait ? `retry in ${wait} s` : ""].filter(Boolean).join(" — "));
    }
    return data;
  }

  // -- signing in and out ------------------------------------------------------------------------------------

  async function signIn(token) {
    state.token = token;
    let me;
    try {
      me = await api("GET", "/api/me");
    } catch (e) {
      if (!(e instanceof ApiError)) {
        showError(`Cannot reach the server: ${e.message}`);
        $("token").value = token;
        $("login").hidden = false;
      } else if (state.token) {
        showError(e.message);
      }
      return;
    }
    sessionStorage.setItem("loopwright-token", token);
    state.me = me.person;
    showError("");
    $("me").textContent = `${me.person}${me.admin ? " (admin)" : ""}`;
    $("login").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    $("live").hidden = false;
    await new Promise((listening) => stream(listening));  // what changes from here on comes live
    try {
      await loadThreads();
      const first = sessionStorage.getItem("loopwright-thread") || [...state.threads.keys()][0];
      if (first && state.threads.has(first)) await openThread(first);
    } catch (e) {
      showError(e.message);
    }
  }

  function signOut(why) {
    sessionStorage.removeItem("loopwright-token");
    if (state.stream) state.stream.abort();
    Object.assign(state, { token: null, me: null, thread: null, lastEvent: null, editing: null, stream: null });
    for (const seen of [state.threads, state.messages, state.tasks, state.watched]) seen.clear();
    $("messages").replaceChildren();
    $("threads").replaceChildren();
    $("app").hidden = true;
    $("sign-out").hidden = true;
    $("live").hidden = true;
    $("me").textContent = "";
    $("login").hidden = false;
    $("token").value = "";
    showError(why || "");
  }

  // -- threads -----------------------------------------------------------------------------------------------

  async function loadThreads() {
    const data = await api("GET", "/api/threads");
    for (const t of data.threads) state.threads.set(t.name, t);
    renderThreads();
  }

  function renderThreads() {
    const list = $("threads");
    const unread = new Set([...list.querySelectorAll(".unread")].map((b) => b.dataset.name));
    list.replaceChildren();
    for (const name of [...state.threads.keys()].sort()) {
      const b = el("button", unread.has(name) && name !== state.thread ? "unread" : "", `#${name}`);
      b.type = "button";
      b.dataset.name = name;
      b.setAttribute("aria-current", String(name === state.thread));
      b.addEventListener("click", () => openThread(name).catch((e) => showError(e.message)));
      const li = el("li");
      li.append(b);
      list.append(li);
    }
    if (!state.threads.size) list.append(el("li", "empty", "No threads yet: add one below."));
  }

  async function openThread(name) {
    state.thread = name;
    sessionStorage.setItem("loopwright-thread", name);
    state.messages.clear();
    $("messages").replaceChildren();
    $("thread-title").textContent = `#${name}`;
    $("composer").hidden = false;
    stopEditing();
    renderThreads();
    renderTasks();
    const fresh = new Set();
    state.fresh = fresh;
    let after = 0;
    for (;;) {
      const data = await api("GET", `/api/threads/${encodeURIComponent(name)}/messages?after=${after}&limit=200`);
      if (state.thread !== name) return;
      for (const m of data.messages) if (!fresh.has(m.id)) showMessage(m);
      if (data.messages.length < 200) break;
      after = data.messages[data.messages.length - 1].id;
    }
    state.fresh = null;
    scrollDown(true);
  }

  $("new-thread").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("new-thread-name").value.trim();
    try {
      const t = await api("POST", "/api/threads", { name });
      state.threads.set(t.name, t);
      $("new-thread-name").value = "";
      await openThread(t.name);
    } catch (e) {
      showError(e.message);
    }
  });

  // -- messages ----------------------------------------------------------------------------------------------

  function withMentions(text) {
    const out = el("div", "text");
    let at = 0;
    for (const m of text.matchAll(MENTION)) {
      const start = m.index + m[1].length;
      out.append(document.createTextNode(text.slice(at, start)), el("span", "mention", `@${m[2]}`));
      at = start + 1 + m[2].length;
    }
    out.append(document.createTextNode(text.slice(at)));
    return out;
  }

  const FLAGS = { duplicate: "duplicate: not acted on", refused: "refused: rate limit", cleared: "cleared by /stop" };

  function messageItem(m) {
    const li = el("li", `kind-${m.kind}`);
    li.dataset.id = m.id;
    const meta = el("div", "meta");
    meta.append(el("span", "who", m.author_name || m.author));
    if (m.kind === "status" || m.kind === "system") meta.append(el("span", "", m.kind));
    const when = new Date(m.created_at * 1000);
    meta.append(el("time", "", when.toLocaleTimeString()));
    if (m.edited) meta.append(el("span", "", "(edited)"));
    if (FLAGS[m.state]) meta.append(el("span", "flag", FLAGS[m.state]));
    if (m.task_id) meta.append(el("span", "", `task ${m.task_id}`));
    if (m.author === state.me && m.kind === "user") {
      const edit = el("button", "", "edit");
      edit.type = "button";
      edit.addEventListener("click", () => startEditing(m));
      meta.append(edit);
      if (m.state === "pending" || m.state === "context") {
        const del = el("button", "", "delete");
        del.type = "button";
        del.addEventListener("click", () => deleteMessage(m));
        meta.append(del);
      }
    }
    li.append(meta, withMentions(m.text));
    return li;
  }

  function showMessage(m) {
    const list = $("messages");
    const old = list.querySelector(`li[data-id="${Number(m.id)}"]`);
    if (m.deleted) {
      state.messages.delete(m.id);
      if (old) old.remove();
      return;
    }
    state.messages.set(m.id, m);
    const li = messageItem(m);
    if (old) {
      old.replaceWith(li);  // an edit, or the status line changing: the same message, in place
    } else {
      const later = [...list.children].find((x) => Number(x.dataset.id) > m.id);
      list.insertBefore(li, later || null);
    }
    if (m.task_id) watchTask(m.task_id);
  }

  function scrollDown(force) {
    const list = $("messages");
    if (force || list.scrollHeight - list.scrollTop - list.clientHeight < 80) list.scrollTop = list.scrollHeight;
  }

  function randomKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  let pendingKey = null;  // kept until a post succeeds: a retry of the same text posts once

  $("composer").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("text").value.trim();
    if (!text || !state.thread) return;
    $("send").disabled = true;
    try {
      if (state.editing !== null) {
        await api("PATCH", `/api/messages/${state.editing}`, { text });  // the stream brings the edit
        stopEditing();
        showError("");
      } else {
        pendingKey = pendingKey || randomKey();
        const m = await api("POST", `/api/threads/${encodeURIComponent(state.thread)}/messages`, { text },
          { "Idempotency-Key": pendingKey });
        pendingKey = null;
        if (m.thread === state.thread && !state.messages.has(m.id)) showMessage(m);  // else the stream was first
        scrollDown(true);
        showError("");
      }
      $("text").value = "";
      suggest();
    } catch (e) {
      showError(e.message);
    } finally {
      $("send").disabled = false;
    }
  });

  $("text").addEventListener("input", () => {
    pendingKey = null;  // another text: another message
    suggest();
  });

  $("text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    } else if (ev.key === "Tab" && $("suggest").firstChild) {
      ev.preventDefault();
      $("suggest").firstChild.click();
    } else if (ev.key === "Escape" && state.editing !== null) {
      stopEditing();
    }
  });

  function startEditing(m) {
    state.editing = m.id;
    $("editing-what").textContent = `Editing message ${m.id}`;
    $("editing").hidden = false;
    $("text").value = m.text;
    $("text").focus();
  }

  function stopEditing() {
    if (state.editing === null) return;
    state.editing = null;
    $("editing").hidden = true;
    $("text").value = "";
  }

  $("edit-cancel").addEventListener("click", stopEditing);

  async function deleteMessage(m) {
    if (!confirm(`Delete message ${m.id}?`)) return;
    try {
      await api("DELETE", `/api/messages/${m.id}`);
      showMessage({ ...m, deleted: true });
    } catch (e) {
      showError(e.message);
    }
  }

  // @mentions: the word being typed, completed from the agent and the people in the thread.
  function suggest() {
    const box = $("suggest");
    box.replaceChildren();
    const input = $("text");
    const typed = /(^|[^\w@])@([A-Za-z0-9_.-]*)$/.exec(input.value.slice(0, input.selectionStart));
    if (!typed) return;
    const people = new Set([AGENT]);
    for (const m of state.messages.values()) if (m.kind === "user" && m.author !== state.me) people.add(m.author);
    for (const name of people) {
      if (!name.toLowerCase().startsWith(typed[2].toLowerCase()) || name === typed[2]) continue;
      const b = el("button", "", `@${name}`);
      b.type = "button";
      b.addEventListener("click", () => {
        const end = input.selectionStart;
        const start = end - typed[2].length;
        input.setRangeText(`${name} `, start, end, "end");
        input.focus();
        suggest();
      });
      box.append(b);
    }
  }

  // -- tasks -------------------------------------------------------------------------------------------------

  async function watchTask(id) {
    if (state.watched.has(id)) return renderTasks();
    state.watched.add(id);
    try {
      const t = await api("GET", `/api/tasks/${id}`);
      if (!state.tasks.has(id)) state.tasks.set(id, t);  // a stream event may have brought a newer one meanwhile
    } catch (e) {
      state.watched.delete(id);
      return;
    }
    renderTasks();
  }

  function taskItem(t) {
    const li = el("li");
    li.dataset.task = t.id;
    li.append(el("div", "task-title", t.title || `task ${t.id}`));
    const line = el("div", "task-state");
    const review = t.status === "needs_review" || (t.run && t.run.status === "needs_review");
    const badge = el("span", `badge ${review ? "review" : t.status === "running" ? "running" : ""}`,
      review ? "needs review" : t.status.replace(/_/g, " "));
    line.append(document.createTextNode(`task ${t.id} `), badge);
    if (t.run) {
      const n = t.run.checkpoints;
      line.append(document.createTextNode(` · ${n} checkpoint${n === 1 ? "" : "s"}`));
      if (t.run.cost_usd !== null && t.run.cost_usd !== undefined) {
        line.append(document.createTextNode(` · $${t.run.cost_usd.toFixed(4)}`));
      }
    }
    li.append(line);
    if (t.run && t.run.last_summary) li.append(el("p", "summary", t.run.last_summary));
    return li;
  }

  function renderTasks() {
    const ids = new Set([...state.messages.values()].map((m) => m.task_id).filter(Boolean));
    const shown = [...ids].filter((id) => state.tasks.has(id)).sort((a, b) => b - a);
    $("tasks").replaceChildren(...shown.map((id) => taskItem(state.tasks.get(id))));
    if (!shown.length) $("tasks").append(el("li", "empty", "No task in this thread yet."));
  }

  // -- the live stream ---------------------------------------------------------------------------------------

  function onEvent(type, data) {
    if (type === "message") {
      const m = JSON.parse(data);
      if (!state.threads.has(m.thread)) {
        loadThreads().catch(() => {});
      } else if (m.thread !== state.thread) {
        const b = $("threads").querySelector(`button[data-name="${CSS.escape(m.thread)}"]`);
        if (b && !m.deleted) b.classList.add("unread");
      }
      if (m.thread === state.thread) {
        if (state.fresh) state.fresh.add(m.id);
        showMessage(m);
        renderTasks();
        scrollDown(false);
      }
    } else if (type === "task") {
      const t = JSON.parse(data);
      state.tasks.set(t.id, t);
      if (state.watched.has(t.id)) renderTasks();
    } else if (type === "thread") {
      const t = JSON.parse(data);
      state.threads.set(t.name, t);
      renderThreads();
    } else if (type === "reload") {
      reloadAll().catch((e) => showError(e.message));
    }
  }

  // The stream could not bring everything missed (it is kept for [http] feed_hours): load it all again.
  async function reloadAll() {
    state.threads.clear();
    state.tasks.clear();
    state.watched.clear();
    await loadThreads();
    if (state.thread && state.threads.has(state.thread)) await openThread(state.thread);
  }

  function setLive(on) {
    $("live").textContent = on ? "● live" : "○ reconnecting";
    $("live").className = on ? "on" : "";
  }

  // EventSource cannot send a header, so the stream is read with fetch; a reconnect resumes after the last event
  // (before any event there is no id to resume from: the thread shown is loaded again instead).
  // `listening` is called once the server has taken the first connection (or it failed).
  async function stream(listening) {
    if (state.stream) state.stream.abort();
    const control = new AbortController();
    state.stream = control;
    let wait = 500;
    while (!control.signal.aborted && state.token) {
      try {
        const after = state.lastEvent === null ? "" : `?after=${encodeURIComponent(state.lastEvent)}`;
        const res = await fetch(`/api/stream${after}`, {
          headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
          cache: "no-store", signal: control.signal,
        });
        if (res.status === 401) {
          if (listening) listening();
          return signOut("The token was refused: sign in again.");
        }
        if (!res.ok || !res.body) throw new Error(`${res.status}`);
        setLive(true);
        wait = 500;
        const reload = !listening && state.lastEvent === null && state.thread;
        await readEvents(res.body, () => {
          if (listening) listening();
          else if (reload) openThread(state.thread).catch(() => {});
          listening = null;
        });
      } catch (e) {
        if (control.signal.aborted) return;
      }
      if (listening) listening();
      listening = null;
      setLive(false);
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 5000);
    }
  }

  async function readEvents(body, started) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let type = "message", data = [], id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (started) started();
      started = null;
      buffer += value;
      for (;;) {
        const end = buffer.search(/\r\n|\r|\n/);
        if (end < 0 || (buffer[end] === "\r" && end === buffer.length - 1)) break;  // a \r\n may be cut in two
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (data.length) {
            if (id !== null) state.lastEvent = id;
            onEvent(type, data.join("\n"));
          }
          type = "message";
          data = [];
          id = null;
          continue;
        }
        if (line.startsWith(":")) continue;  // a keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") type = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
    }
  }

  // -- start -------------------------------------------------------------------------------------------------

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("token").value.trim());
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  if (state.token) signIn(state.token);
  else signOut("");
})();
