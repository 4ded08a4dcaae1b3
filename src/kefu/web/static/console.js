/**
 * kefu agent console (/console): sign in, watch the handoff queue, claim a customer, read what the bot
 * knew, answer with the help of the knowledge base, and close (optionally handing back to the bot).
 *
 * Plain JS, no build step. REST calls go to /v1/console/*; live events (queue snapshots, customer
 * messages) arrive on the /v1/console/ws socket, which reconnects itself. The access token from
 * POST /v1/auth/login lives in sessionStorage (one tab, gone when it closes); in open demo mode,
 * where the queue answers without a token, there is no sign-in at all.
 */
(() => {
  "use strict";

  const { h, ApiError, session, lang, locale, $, translatePage } = window.KefuConsole;
  const RETRY_BASE_MS = 500;
  const RETRY_MAX_MS = 10_000;
  const HEARTBEAT_MS = 20_000;
  const OPEN_MODE_AGENT = "open-mode";
  const RESOLUTIONS = ["resolved", "refunded", "replaced", "escalated", "no_response", "duplicate", "other"];

  const STRINGS = {
    zh: {
      appTitle: "客服工作台",
      analytics: "服务分析",
      signinLead: "请使用客服账号登录。",
      username: "用户名",
      password: "密码",
      signIn: "登录",
      signOut: "退出登录",
      signInFailed: "登录失败：",
      needsAgent: "此账号没有客服权限。",
      queue: "等待队列",
      queueEmpty: "暂无等待的客户。",
      pickTicket: "从左侧队列选择一位客户开始服务。",
      claim: "接入",
      transcript: "对话记录",
      send: "发送",
      replyPlaceholder: "输入回复，Enter 发送，Shift+Enter 换行",
      replyLocked: "接入后即可回复客户。",
      botContext: "机器人已知信息",
      suggestions: "推荐回复（知识库）",
      search: "搜索",
      searchPlaceholder: "搜索知识库…",
      noSuggestions: "知识库中没有相关内容。",
      insert: "点击插入回复框",
      closeTicket: "结束服务",
      resolution: "处理结果",
      note: "备注（选填）",
      handBack: "交还给智能助手继续服务",
      closeButton: "结束服务",
      you: "我",
      connection: { connecting: "正在连接…", open: "实时连接", reconnecting: "连接断开，正在重连…" },
      roles: { user: "客户", assistant: "智能助手", agent: "客服", system: "系统" },
      status: { queued: "排队中", assigned: "服务中", closed: "已结束", returned: "已交还机器人" },
      position: (n) => `第 ${n} 位`,
      handledBy: (name) => `${name} 服务中`,
      waited: (t) => `等待 ${t}`,
      priority: (p) => `优先级 ${p}`,
      session: (id) => `会话 ${id}`,
      newMessages: (n) => `${n} 条新消息`,
      reasons: {
        customer_request: "客户要求转人工",
        complaint: "投诉",
        angry: "客户情绪激动",
        backend_failure: "系统故障",
        escalation: "机器人无法处理",
        unresolved: "问题未解决",
      },
      context: {
        summary: "摘要",
        intent: "意图",
        emotion: "情绪",
        language: "语言",
        entities: "提及信息",
        slots: "已收集信息",
        flow: "业务流程",
        actions: "已执行操作",
        customer: "客户身份",
        last_flow: "上一个流程",
      },
      resolutions: {
        resolved: "已解决",
        refunded: "已退款",
        replaced: "已换货",
        escalated: "已升级处理",
        no_response: "客户无回应",
        duplicate: "重复工单",
        other: "其他",
      },
    },
    en: {
      appTitle: "Agent console",
      analytics: "Analytics",
      signinLead: "Sign in with your agent account.",
      username: "Username",
      password: "Password",
      signIn: "Sign in",
      signOut: "Sign out",
      signInFailed: "Sign-in failed: ",
      needsAgent: "This account does not have the agent role.",
      queue: "Queue",
      queueEmpty: "Nobody is waiting.",
      pickTicket: "Pick a customer from the queue to start.",
      claim: "Claim",
      transcript: "Transcript",
      send: "Send",
      replyPlaceholder: "Type a reply: Enter sends, Shift+Enter for a new line",
      replyLocked: "Claim the ticket to reply.",
      botContext: "What the bot knew",
      suggestions: "Suggested replies (knowledge base)",
      search: "Search",
      searchPlaceholder: "Search the knowledge base…",
      noSuggestions: "Nothing relevant in the knowledge base.",
      insert: "Click to insert into the reply",
      closeTicket: "Close",
      resolution: "Resolution",
      note: "Note (optional)",
      handBack: "Hand the conversation back to the bot",
      closeButton: "Close ticket",
      you: "me",
      connection: { connecting: "Connecting…", open: "Live", reconnecting: "Connection lost, reconnecting…" },
      roles: { user: "Customer", assistant: "Bot", agent: "Agent", system: "System" },
      status: { queued: "Queued", assigned: "In progress", closed: "Closed", returned: "Back with the bot" },
      position: (n) => `#${n} in queue`,
      handledBy: (name) => `with ${name}`,
      waited: (t) => `waited ${t}`,
      priority: (p) => `priority ${p}`,
      session: (id) => `session ${id}`,
      newMessages: (n) => (n === 1 ? "1 new message" : `${n} new messages`),
      reasons: {
        customer_request: "Asked for a person",
        complaint: "Complaint",
        angry: "Upset customer",
        backend_failure: "System failure",
        escalation: "Bot could not help",
        unresolved: "Not resolved",
      },
      context: {
        summary: "Summary",
        intent: "Intent",
        emotion: "Emotion",
        language: "Language",
        entities: "Mentioned",
        slots: "Collected",
        flow: "Flow",
        actions: "Actions run",
        customer: "Customer",
        last_flow: "Previous flow",
      },
      resolutions: {
        resolved: "Resolved",
        refunded: "Refunded",
        replaced: "Replaced",
        escalated: "Escalated",
        no_response: "No response",
        duplicate: "Duplicate",
        other: "Other",
      },
    },
  };

  const t = STRINGS[lang];

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const hours = Math.floor(s / 3600);
    const mm = String(Math.floor((s % 3600) / 60)).padStart(hours ? 2 : 1, "0");
    const ss = String(s % 60).padStart(2, "0");
    return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function clock(iso) {
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? "" : at.toLocaleTimeString(locale, { hour12: false });
  }

  /** The operator id inside an access token (only to know which tickets are mine; the server decides). */
  function operatorId(token) {
    if (!token) return OPEN_MODE_AGENT;
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload)).sub ?? null;
    } catch {
      return null;
    }
  }

  // ---------------------------------------------------------------- the console

  class Console {
    constructor() {
      this.token = session.token();
      this.me = null;
      this.tickets = new Map(); // id → ticket from the latest queue snapshot
      this.snapshotAt = performance.now();
      this.current = null; // the ticket detail on screen
      this.shownMessages = new Set();
      this.unread = new Map(); // ticket id → new customer messages not looked at
      this.socket = null;
      this.failures = 0;
      this.retryTimer = null;
      this.heartbeat = null;
      this.running = false;
    }

    start() {
      translatePage(t);
      $("reply-text").placeholder = t.replyPlaceholder;
      $("suggest-q").placeholder = t.searchPlaceholder;
      for (const code of RESOLUTIONS) $("close-code").append(h("option", { value: code }, t.resolutions[code]));

      $("signin-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.signIn();
      });
      $("signout").addEventListener("click", () => this.signOut());
      $("ticket-claim").addEventListener("click", () => this.claim(this.current?.id));
      $("reply-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.reply();
      });
      $("reply-text").addEventListener("keydown", (event) => {
        if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
        event.preventDefault();
        this.reply();
      });
      $("suggest-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.loadSuggestions($("suggest-q").value.trim());
      });
      $("close-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.closeTicket();
      });
      setInterval(() => this.tick(), 1000);
      this.boot();
    }

    async api(path, { method = "GET", body } = {}) {
      const headers = {};
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const data = await response.json().catch(() => null);
      if (response.status === 401) this.showSignIn();
      if (!response.ok) throw new ApiError(response.status, data);
      return data;
    }

    /** Opens the workspace when the queue answers (signed in, or open demo mode), else the sign-in form. */
    async boot() {
      try {
        const tickets = await this.api("/v1/console/queue");
        this.me = operatorId(this.token);
        this.showWorkspace();
        this.renderQueue(tickets);
        this.connect();
      } catch (error) {
        this.showSignIn(error.status === 403 ? t.needsAgent : null);
      }
    }

    async signIn() {
      const username = $("signin-username").value.trim();
      const password = $("signin-password").value;
      $("signin-submit").disabled = true;
      try {
        this.token = await session.signIn(username, password);
        $("signin-password").value = "";
        await this.boot();
      } catch (error) {
        this.showError("signin-error", t.signInFailed + error.message);
      } finally {
        $("signin-submit").disabled = false;
      }
    }

    signOut() {
      session.signOut();
      this.token = null;
      location.reload();
    }

    showSignIn(message) {
      this.disconnect();
      this.token = null;
      session.dropToken();
      $("workspace").hidden = true;
      $("signin").hidden = false;
      if (message) this.showError("signin-error", message);
      $("signin-username").focus();
    }

    showWorkspace() {
      $("signin").hidden = true;
      $("workspace").hidden = false;
      $("signout").hidden = !this.token;
      $("whoami").textContent = this.token ? (session.user() ?? "") : "demo";
    }

    showError(id, message) {
      const el = $(id);
      el.textContent = message ?? "";
      el.hidden = !message;
    }

    // -- the live socket

    connect() {
      if (this.socket || this.running) return;
      this.running = true;
      this.open();
    }

    open() {
      const url = new URL("/v1/console/ws", location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      // The token travels as a subprotocol, not in the URL, so it stays out of server and proxy logs.
      const protocols = this.token ? ["kefu.v1", `kefu.token.${this.token}`] : ["kefu.v1"];
      const socket = new WebSocket(url, protocols);
      this.socket = socket;
      this.setConnection(this.failures ? "reconnecting" : "connecting");
      socket.onopen = () => {
        this.setConnection("open");
        this.heartbeat = setInterval(() => socket.send(JSON.stringify({ type: "ping" })), HEARTBEAT_MS);
        if (this.current) this.openTicket(this.current.id, { keepDraft: true }); // catch up on what we missed
      };
      socket.onmessage = (message) => {
        this.failures = 0;
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          return;
        }
        this.onEvent(event);
      };
      socket.onclose = () => {
        clearInterval(this.heartbeat);
        if (this.socket !== socket) return;
        this.socket = null;
        if (!this.running) return;
        this.failures += 1;
        const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** this.failures);
        this.retryTimer = setTimeout(() => this.open(), delay * (0.8 + Math.random() * 0.4));
        this.setConnection("reconnecting");
      };
    }

    disconnect() {
      this.running = false;
      clearTimeout(this.retryTimer);
      clearInterval(this.heartbeat);
      const socket = this.socket;
      this.socket = null;
      socket?.close();
    }

    setConnection(status) {
      $("connection").dataset.status = status;
      $("connection-text").textContent = t.connection[status];
    }

    onEvent(event) {
      switch (event.type) {
        case "queue":
          this.renderQueue(event.tickets);
          break;
        case "customer_message":
        case "agent_message":
          this.onMessage(event);
          break;
        case "ticket_claimed":
        case "ticket_closed":
          if (this.current && event.ticket?.id === this.current.id) this.openTicket(this.current.id, { keepDraft: true });
          break;
        case "error":
          if (event.error?.code === "unauthorized") this.showSignIn(event.error.message);
          else if (event.error?.code === "forbidden") this.showSignIn(t.needsAgent);
          break;
        default:
          break; // ticket_opened is followed by a queue snapshot; newer event types are ignored
      }
    }

    onMessage(event) {
      const message = { ...event.message, agent: event.agent };
      if (this.current && event.ticket_id === this.current.id) {
        this.appendMessage(message);
      } else if (event.type === "customer_message" && event.ticket_id) {
        this.unread.set(event.ticket_id, (this.unread.get(event.ticket_id) ?? 0) + 1);
        this.renderQueue([...this.tickets.values()], { keepClock: true });
      }
    }

    // -- the queue

    renderQueue(tickets, { keepClock = false } = {}) {
      if (!keepClock) this.snapshotAt = performance.now();
      this.tickets = new Map(tickets.map((ticket) => [ticket.id, ticket]));
      const list = $("queue-list");
      list.replaceChildren(...tickets.map((ticket) => this.queueItem(ticket)));
      $("queue-count").textContent = String(tickets.length);
      $("queue-empty").hidden = tickets.length > 0;
    }

    queueItem(ticket) {
      const mine = ticket.agent_id && ticket.agent_id === this.me;
      const level = ticket.priority >= 80 ? "high" : ticket.priority >= 60 ? "medium" : "normal";
      const place =
        ticket.status === "queued" ? t.position(ticket.position) : t.handledBy(mine ? t.you : ticket.agent_name);
      const unread = this.unread.get(ticket.id);
      const claim =
        ticket.status === "queued"
          ? h(
              "button",
              {
                type: "button",
                class: "primary small claim",
                onclick: (event) => {
                  event.stopPropagation();
                  this.claim(ticket.id);
                },
              },
              t.claim,
            )
          : null;
      return h(
        "li",
        {
          class: "queue-item",
          "data-ticket-id": ticket.id,
          "data-status": ticket.status,
          "aria-current": this.current?.id === ticket.id ? "true" : null,
          tabindex: "0",
          onclick: () => this.openTicket(ticket.id),
          onkeydown: (event) => {
            if (event.key === "Enter") this.openTicket(ticket.id);
          },
        },
        h(
          "div",
          { class: "queue-row" },
          h("span", { class: `priority priority--${level}`, title: t.priority(ticket.priority) }, String(ticket.priority)),
          h("span", { class: "reason" }, t.reasons[ticket.reason] ?? ticket.reason),
          ticket.language ? h("span", { class: "lang" }, ticket.language) : null,
          unread ? h("span", { class: "unread", title: t.newMessages(unread) }, String(unread)) : null,
        ),
        h(
          "div",
          { class: "queue-row queue-row--meta" },
          h("span", { class: "place" }, place),
          h("span", { class: "waiting", "data-ticket-id": ticket.id }, t.waited(duration(this.waited(ticket)))),
          claim,
        ),
      );
    }

    /** Seconds a ticket has waited: the server's figure plus the time since the snapshot while still queued. */
    waited(ticket) {
      const since = ticket.status === "queued" ? (performance.now() - this.snapshotAt) / 1000 : 0;
      return ticket.waiting_s + since;
    }

    tick() {
      for (const el of document.querySelectorAll(".waiting[data-ticket-id]")) {
        const ticket = this.tickets.get(el.dataset.ticketId);
        if (ticket) el.textContent = t.waited(duration(this.waited(ticket)));
      }
    }

    async claim(ticketId) {
      if (!ticketId) return;
      try {
        await this.api(`/v1/console/tickets/${encodeURIComponent(ticketId)}/claim`, { method: "POST" });
        await this.openTicket(ticketId);
        $("reply-text").focus();
      } catch (error) {
        await this.openTicket(ticketId);
        this.showError("reply-error", error.message);
      }
    }

    // -- one conversation

    async openTicket(ticketId, { keepDraft = false } = {}) {
      let ticket;
      try {
        ticket = await this.api(`/v1/console/tickets/${encodeURIComponent(ticketId)}`);
      } catch (error) {
        this.showError("reply-error", error.message);
        return;
      }
      const switched = this.current?.id !== ticket.id;
      this.current = ticket;
      this.unread.delete(ticket.id);
      this.renderQueue([...this.tickets.values()], { keepClock: true });
      $("conversation-empty").hidden = true;
      $("ticket").hidden = false;
      this.renderHead(ticket);
      this.renderContext(ticket);
      this.shownMessages.clear();
      $("transcript").replaceChildren();
      for (const message of ticket.transcript) this.appendMessage(message);
      if (switched || !keepDraft) {
        this.showError("reply-error", null);
        this.showError("close-error", null);
      }
      if (switched) {
        $("reply-text").value = "";
        $("close-note").value = "";
        $("suggest-q").value = "";
        this.loadSuggestions();
      }
    }

    renderHead(ticket) {
      const mine = ticket.agent_id === this.me;
      $("ticket-title").textContent = `${t.reasons[ticket.reason] ?? ticket.reason} · ${t.session(ticket.session_id.slice(0, 8))}`;
      const parts = [
        t.status[ticket.status] ?? ticket.status,
        ticket.status === "queued" ? t.position(ticket.position) : null,
        ticket.agent_name && ticket.status === "assigned" ? t.handledBy(mine ? t.you : ticket.agent_name) : null,
        t.priority(ticket.priority),
        t.waited(duration(ticket.waiting_s)),
      ];
      $("ticket-meta").textContent = parts.filter(Boolean).join(" · ");
      $("ticket").dataset.status = ticket.status;
      $("ticket-claim").hidden = ticket.status !== "queued";
      const canReply = ticket.status === "assigned" && mine;
      $("reply-text").disabled = !canReply;
      $("reply-send").disabled = !canReply;
      $("reply-text").placeholder = canReply ? t.replyPlaceholder : t.replyLocked;
      const open = ticket.status === "queued" || ticket.status === "assigned";
      for (const el of $("close-form").elements) el.disabled = !open || (ticket.status === "assigned" && !mine);
    }

    renderContext(ticket) {
      const context = ticket.context ?? {};
      const flow = context.flow && typeof context.flow === "object" ? context.flow : null;
      const emotion = context.emotion?.label ?? ticket.emotion;
      const rows = [
        ["summary", ticket.summary, "summary"],
        ["intent", ticket.intent ?? context.intent],
        ["emotion", emotion ? `${emotion}${context.emotion?.urgent ? " ⚠" : ""}` : null],
        ["language", ticket.language],
        ["entities", (context.entities ?? []).map((e) => `${e.type}=${e.value}`).join(", ")],
        ["slots", pairs(context.slots ?? flow?.slots)],
        ["flow", flow?.flow ? `${flow.flow}${flow.step ? ` @ ${flow.step}` : ""}` : null],
        [
          "actions",
          (flow?.actions ?? []).map((a) => `${a.action} ${a.ok ? "✓" : `✗${a.error_code ? ` (${a.error_code})` : ""}`}`).join(", "),
        ],
        ["customer", pairs(context.customer)],
        ["last_flow", typeof context.last_flow === "string" ? context.last_flow : pairs(context.last_flow)],
      ];
      const items = [];
      for (const [key, value, kind] of rows) {
        if (value == null || value === "") continue;
        items.push(h("dt", {}, t.context[key]), h("dd", { class: kind ?? null, "data-key": key }, String(value)));
      }
      $("context").replaceChildren(...items);
    }

    appendMessage(message) {
      if (!message?.id || this.shownMessages.has(message.id)) return;
      this.shownMessages.add(message.id);
      const log = $("transcript");
      const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
      const who = message.role === "agent" && message.agent ? `${t.roles.agent} · ${message.agent}` : t.roles[message.role];
      const meta = [who ?? message.role, clock(message.created_at), message.intent ? `#${message.intent}` : null];
      log.append(
        h(
          "li",
          { class: `msg msg--${message.role}`, "data-role": message.role, "data-id": message.id },
          h("p", { class: "msg-meta" }, meta.filter(Boolean).join(" · ")),
          h("p", { class: "msg-text" }, message.text),
        ),
      );
      if (stick) log.scrollTop = log.scrollHeight;
    }

    async reply() {
      const ticket = this.current;
      const text = $("reply-text").value.trim();
      if (!ticket || !text || $("reply-send").disabled) return;
      $("reply-send").disabled = true;
      try {
        const stored = await this.api(`/v1/console/tickets/${encodeURIComponent(ticket.id)}/messages`, {
          method: "POST",
          body: { text },
        });
        this.appendMessage(stored);
        $("reply-text").value = "";
        this.showError("reply-error", null);
      } catch (error) {
        this.showError("reply-error", error.message);
      } finally {
        $("reply-send").disabled = false;
        $("reply-text").focus();
      }
    }

    async loadSuggestions(query = "") {
      const ticket = this.current;
      if (!ticket) return;
      const params = query ? `?${new URLSearchParams({ q: query })}` : "";
      let body;
      try {
        body = await this.api(`/v1/console/tickets/${encodeURIComponent(ticket.id)}/suggestions${params}`);
      } catch {
        body = { suggestions: [] };
      }
      if (this.current?.id !== ticket.id) return;
      const items = body.suggestions.map((s) =>
        h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "suggestion", title: t.insert, onclick: () => this.insert(s.text) },
            h("strong", {}, s.title),
            h("span", {}, s.text),
          ),
        ),
      );
      $("suggestion-list").replaceChildren(...items);
      $("suggestions-empty").hidden = items.length > 0;
    }

    /** Puts a suggestion into the reply box at the cursor, for the agent to adapt before sending. */
    insert(text) {
      const box = $("reply-text");
      if (box.disabled) return;
      const start = box.selectionStart ?? box.value.length;
      const end = box.selectionEnd ?? box.value.length;
      box.setRangeText(text, start, end, "end");
      box.focus();
    }

    async closeTicket() {
      const ticket = this.current;
      if (!ticket) return;
      $("close-submit").disabled = true;
      try {
        await this.api(`/v1/console/tickets/${encodeURIComponent(ticket.id)}/close`, {
          method: "POST",
          body: {
            resolution_code: $("close-code").value,
            note: $("close-note").value.trim() || null,
            hand_back: $("close-hand-back").checked,
          },
        });
        await this.openTicket(ticket.id, { keepDraft: true });
      } catch (error) {
        this.showError("close-error", error.message);
        $("close-submit").disabled = false;
      }
    }
  }

  function pairs(value) {
    if (!value || typeof value !== "object") return value ?? null;
    const entries = Object.entries(value).filter(([, v]) => v != null && v !== "");
    return entries.map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ") || null;
  }

  const app = new Console();
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => app.start(), { once: true });
  else app.start();
})();
