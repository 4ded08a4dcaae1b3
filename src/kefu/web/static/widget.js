/**
 * kefu web chat widget: a launcher button and a chat panel for any web page.
 *
 *   <script src="https://kefu.example.com/static/widget.js" async></script>
 *
 * Optional attributes on that tag:
 *   data-kefu-server   server origin (default: the origin this script was loaded from)
 *   data-kefu-lang     "zh" or "en" (default: from the browser's language)
 *   data-kefu-channel  channel name reported to the server (default: "web")
 *   data-kefu-title    shop name shown in the panel header
 *   data-kefu-open     "true" opens the panel on page load
 * Theme: set --kefu-accent (a colour) on the page, e.g. :root { --kefu-accent: #c2410c; }
 * Page API: window.kefu.open(), window.kefu.close(), window.kefu.prefill(text).
 *
 * The widget renders in a shadow root so the page's CSS cannot reach it. It keeps one WebSocket
 * to the server and reconnects with capped exponential backoff. Customer messages wait in an
 * outbox (persisted in localStorage) until their reply arrives and are re-sent after every
 * reconnect with their original client_message_id, which the server de-duplicates. After every
 * (re)connect the session history is fetched and whatever is missing is rendered.
 */
(() => {
  "use strict";

  const script = document.currentScript || document.querySelector('script[src*="widget.js"]');
  if (window.kefu) return; // the tag was included twice

  const MAX_MESSAGE_CHARS = 4000;
  const COUNTER_FROM_CHARS = 3600;
  const RETRY_BASE_MS = 500;
  const RETRY_MAX_MS = 10_000;
  const CONNECT_TIMEOUT_MS = 10_000;
  const HEARTBEAT_MS = 20_000;
  const SILENCE_LIMIT_MS = 2.5 * HEARTBEAT_MS;
  const HISTORY_TIMEOUT_MS = 8_000;
  const CLOSE_POLICY_VIOLATION = 1008; // the server rejected the connection's parameters

  const STRINGS = {
    zh: {
      title: "在线客服",
      openChat: "打开在线客服",
      closeChat: "关闭对话",
      logLabel: "对话记录",
      inputLabel: "输入消息",
      placeholder: "请输入您的问题…",
      send: "发送",
      greeting: "您好！我是智能客服，有什么可以帮您？",
      status: { connecting: "正在连接…", open: "在线", reconnecting: "正在重新连接…" },
      reconnectingBanner: "网络连接已断开，正在重新连接…消息会在连接恢复后自动发送。",
      queued: "等待发送",
      failed: "发送失败",
      typing: "客服正在输入…",
      sources: "参考来源",
      agent: "人工客服",
      handoff: {
        queued: "正在为您转接人工客服…",
        assigned: "人工客服已接入",
        closed: "人工服务已结束，如有其他问题请继续留言。",
      },
      mode: {
        queued: "排队等待人工客服",
        agent: (name) => (name ? `人工客服 ${name} 为您服务` : "人工客服为您服务"),
        bot: "智能助手为您服务",
      },
      error: "抱歉，服务暂时出了点问题，请稍后再试。",
      charsLeft: (n) => `还可输入 ${n} 字`,
      unread: (n) => `${n} 条未读消息`,
      feedback: {
        label: "这条回复有帮助吗？",
        up: "有帮助",
        down: "没有帮助",
        thanks: "感谢您的反馈！",
        failed: "反馈未能提交，请稍后再试。",
      },
      rating: {
        open: "评价本次服务",
        prompt: "您对本次服务满意吗？",
        stars: ["非常不满意", "不满意", "一般", "满意", "非常满意"],
        star: (n, label) => `${n} 星：${label}`,
        comment: "留言（选填）",
        submit: "提交评价",
        thanks: "感谢您的评价！",
        failed: "评价未能提交，请稍后再试。",
      },
    },
    en: {
      title: "Customer service",
      openChat: "Open customer service chat",
      closeChat: "Close chat",
      logLabel: "Conversation",
      inputLabel: "Type a message",
      placeholder: "Type your question…",
      send: "Send",
      greeting: "Hi! I'm the virtual assistant. How can I help you today?",
      status: { connecting: "Connecting…", open: "Online", reconnecting: "Reconnecting…" },
      reconnectingBanner: "Connection lost. Reconnecting… your messages will be sent once we're back.",
      queued: "Waiting to send",
      failed: "Not sent",
      typing: "The assistant is typing…",
      sources: "Sources",
      agent: "Agent",
      handoff: {
        queued: "Connecting you to a human agent…",
        assigned: "A human agent has joined the chat",
        closed: "The agent has left the chat. Feel free to keep asking.",
      },
      mode: {
        queued: "Waiting for an agent",
        agent: (name) => (name ? `Chatting with ${name}` : "Chatting with an agent"),
        bot: "Virtual assistant",
      },
      error: "Sorry, something went wrong on our side. Please try again shortly.",
      charsLeft: (n) => `${n} characters left`,
      unread: (n) => (n === 1 ? "1 unread message" : `${n} unread messages`),
      feedback: {
        label: "Was this reply helpful?",
        up: "Helpful",
        down: "Not helpful",
        thanks: "Thanks for your feedback!",
        failed: "Your feedback could not be sent. Please try again later.",
      },
      rating: {
        open: "Rate this chat",
        prompt: "How satisfied are you with this chat?",
        stars: ["Very unsatisfied", "Unsatisfied", "Okay", "Satisfied", "Very satisfied"],
        star: (n, label) => `${n} ${n === 1 ? "star" : "stars"}: ${label}`,
        comment: "Comment (optional)",
        submit: "Send rating",
        thanks: "Thank you for rating this chat!",
        failed: "Your rating could not be sent. Please try again later.",
      },
    },
  };

  /** Inline icons (no external resources): 24×24 outline drawings in the current text colour. */
  const icon = (body) =>
    '<svg viewBox="0 0 24 24" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2" ' +
    `stroke-linecap="round" stroke-linejoin="round">${body}</svg>`;
  const ICONS = {
    chat: icon(
      '<path d="M4 5.5A2.5 2.5 0 0 1 6.5 3h11A2.5 2.5 0 0 1 20 5.5v8a2.5 2.5 0 0 1-2.5 2.5H10l-4.5 3.8V16' +
        'A2.5 2.5 0 0 1 4 13.5z"/><path d="M8.5 9.5h.01M12 9.5h.01M15.5 9.5h.01" stroke-width="2.6"/>',
    ),
    close: icon('<path d="M6 6l12 12M18 6L6 18"/>'),
    chevronDown: icon('<path d="M6 9l6 6 6-6"/>'),
    send: icon('<path d="M12 19V5.5M5.5 12L12 5.5 18.5 12"/>'),
    thumbUp: icon(
      '<path d="M7 11v9H4.5A1.5 1.5 0 0 1 3 18.5v-6A1.5 1.5 0 0 1 4.5 11z"/>' +
        '<path d="M7 11l4-7.5a2 2 0 0 1 2.5 2.3L12.8 10H19a2 2 0 0 1 2 2.3l-1.2 6.4A2 2 0 0 1 17.8 20H7"/>',
    ),
    thumbDown: icon(
      '<path d="M17 13V4h2.5A1.5 1.5 0 0 1 21 5.5v6a1.5 1.5 0 0 1-1.5 1.5z"/>' +
        '<path d="M17 13l-4 7.5a2 2 0 0 1-2.5-2.3l.7-4.2H5a2 2 0 0 1-2-2.3l1.2-6.4A2 2 0 0 1 6.2 4H17"/>',
    ),
    star: icon('<path d="M12 3.5l2.6 5.3 5.9.9-4.3 4.1 1 5.8-5.2-2.7-5.2 2.7 1-5.8-4.3-4.1 5.9-.9z"/>'),
    headset: icon(
      '<path d="M4 14v-2a8 8 0 0 1 16 0v2"/><rect x="3" y="13" width="4" height="6" rx="1.5"/>' +
        '<rect x="17" y="13" width="4" height="6" rx="1.5"/><path d="M19 19c0 1.5-2 2-5 2"/>',
    ),
  };

  // ---------------------------------------------------------------- configuration and storage

  function readConfig(tag) {
    const data = tag ? tag.dataset : {};
    const scriptUrl = new URL(tag && tag.src ? tag.src : "/static/widget.js", location.href);
    const server = new URL(data.kefuServer || scriptUrl.origin, location.href).origin;
    const language = (data.kefuLang || navigator.language || "en").toLowerCase();
    return {
      server,
      socketBase: server.replace(/^http/, "ws"),
      stylesheet: new URL("widget.css", scriptUrl).href,
      lang: language.startsWith("zh") ? "zh" : "en",
      channel: data.kefuChannel || "web",
      title: data.kefuTitle || "",
      startOpen: data.kefuOpen === "true",
    };
  }

  /** localStorage scoped to one kefu server; falls back to memory where storage is blocked. */
  function createStore(server) {
    const prefix = `kefu:${server}:`;
    const memory = new Map();
    return {
      get(key) {
        try {
          return localStorage.getItem(prefix + key);
        } catch {
          return memory.get(key) ?? null;
        }
      },
      set(key, value) {
        try {
          localStorage.setItem(prefix + key, value);
        } catch {
          memory.set(key, value);
        }
      },
    };
  }

  /** A v4 UUID; crypto.randomUUID exists only on secure origins, getRandomValues everywhere. */
  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  /** Only http(s) links are rendered; anything else (javascript:, data:) is shown as plain text. */
  function safeLink(value, base) {
    if (!value) return null;
    try {
      const url = new URL(value, base);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  /** Creates an element: h("a", { class: "x", href, onclick }, "text", child). */
  function h(tag, props = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value == null || value === false) continue;
      if (key === "class") {
        el.className = value;
      } else if (key === "html") {
        el.innerHTML = value; // only ever our own ICONS, never text from the server or the customer
      } else if (key.startsWith("on")) {
        el.addEventListener(key.slice(2), value);
      } else {
        el.setAttribute(key, value === true ? "" : String(value));
      }
    }
    el.append(...children.filter((child) => child != null));
    return el;
  }

  function parseEvent(data) {
    try {
      return JSON.parse(data);
    } catch {
      console.warn("kefu: ignored a server message that is not JSON");
      return null;
    }
  }

  // ---------------------------------------------------------------- the WebSocket

  /** One WebSocket that reconnects itself with capped, jittered exponential backoff. */
  class Connection {
    constructor(urlFor, { onEvent, onStatus, onRejected }) {
      this.urlFor = urlFor;
      this.onEvent = onEvent;
      this.onStatus = onStatus;
      this.onRejected = onRejected;
      this.socket = null;
      this.status = "idle"; // idle → connecting → open ⇄ reconnecting
      this.failures = 0;
      this.retryTimer = null;
      this.connectTimer = null;
      this.heartbeat = null;
      this.lastHeard = 0;
      window.addEventListener("online", () => this.retryNow());
    }

    start() {
      if (this.status === "idle") this.open();
    }

    /** Sends one event; false when there is no open socket (the caller keeps it queued). */
    send(event) {
      if (this.status !== "open") return false;
      this.socket.send(JSON.stringify(event));
      return true;
    }

    retryNow() {
      if (this.status !== "reconnecting" || this.socket || this.opening) return;
      clearTimeout(this.retryTimer);
      this.open();
    }

    open() {
      this.retryTimer = null;
      this.setStatus(this.failures === 0 && this.status === "idle" ? "connecting" : "reconnecting");
      if (this.opening) return;
      this.opening = true;
      // The address may need a round trip first (a customer token): resolve it, then connect.
      Promise.resolve()
        .then(() => this.urlFor())
        .then(
          (target) => {
            this.opening = false;
            this.connect(target);
          },
          () => {
            this.opening = false;
            this.failures += 1;
            const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** this.failures);
            this.retryTimer = setTimeout(() => this.open(), delay * (0.8 + Math.random() * 0.4));
          },
        );
    }

    /** `target` is a URL, or { url, protocols } to offer WebSocket subprotocols (how the token travels). */
    connect(target) {
      const socket =
        typeof target === "string" ? new WebSocket(target) : new WebSocket(target.url, target.protocols);
      this.socket = socket;
      this.connectTimer = setTimeout(() => this.drop(socket), CONNECT_TIMEOUT_MS);
      socket.onopen = () => {
        clearTimeout(this.connectTimer);
        this.lastHeard = Date.now();
        this.heartbeat = setInterval(() => this.checkPulse(), HEARTBEAT_MS);
        this.setStatus("open");
      };
      socket.onmessage = (message) => {
        this.lastHeard = Date.now();
        this.failures = 0; // the server is talking: the next drop starts the backoff afresh
        const event = parseEvent(message.data);
        if (event && event.type !== "pong") this.onEvent(event);
      };
      socket.onclose = (close) => {
        if (close.code === CLOSE_POLICY_VIOLATION) this.onRejected();
        this.drop(socket);
      };
    }

    /** Forgets `socket` (closed, or silent for too long) and schedules the next attempt. */
    drop(socket) {
      if (socket !== this.socket) return;
      socket.onopen = socket.onmessage = socket.onclose = null;
      if (socket.readyState < WebSocket.CLOSING) socket.close();
      this.socket = null;
      clearTimeout(this.connectTimer);
      clearInterval(this.heartbeat);
      const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** this.failures);
      this.failures += 1;
      this.retryTimer = setTimeout(() => this.open(), delay * (0.8 + Math.random() * 0.4));
      this.setStatus("reconnecting");
    }

    /** A half-open TCP connection never fires `close`; silence past the limit counts as a drop. */
    checkPulse() {
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) this.drop(this.socket);
      else this.send({ type: "ping" });
    }

    setStatus(status) {
      if (status === this.status) return;
      this.status = status;
      this.onStatus(status);
    }
  }

  // ---------------------------------------------------------------- the DOM

  /** Renders the launcher and the panel; knows nothing about the protocol. */
  class ChatView {
    constructor(config, t, { onSubmit, onOpen, onFeedback, onRate, voteOf }) {
      this.t = t;
      this.linkBase = config.server;
      this.onSubmit = onSubmit;
      this.onOpen = onOpen;
      this.onFeedback = onFeedback; // (message id, "up" | "down") → Promise
      this.onRate = onRate; // (score 1-5, comment) → Promise
      this.voteOf = voteOf; // message id → the customer's earlier vote, if any
      this.unread = 0;
      this.userBubbles = new Map(); // client_message_id → customer message element
      this.replies = new Map(); // client_message_id → bot reply element

      this.launcher = h("button", {
        class: "kefu-launcher",
        type: "button",
        "aria-label": t.openChat,
        "aria-expanded": "false",
        "aria-controls": "kefu-panel",
        onclick: () => this.setOpen(!this.isOpen),
      });
      this.launcher.append(
        h("span", { class: "kefu-launcher-icon kefu-launcher-icon--open", html: ICONS.chat }),
        h("span", { class: "kefu-launcher-icon kefu-launcher-icon--close", html: ICONS.chevronDown }),
      );
      this.badge = h("span", { class: "kefu-badge", hidden: true });
      this.launcher.append(this.badge);

      this.statusText = h("span", { class: "kefu-status-text" }, t.status.connecting);
      this.status = h(
        "p",
        { class: "kefu-status", "data-status": "connecting" },
        h("span", { class: "kefu-dot" }),
        this.statusText,
      );
      // Who answers: the assistant, the queue for a person, or a named agent (hidden until a handoff).
      this.mode = h("p", { class: "kefu-mode", role: "status", hidden: true });
      const title = config.title || t.title;
      const header = h(
        "header",
        { class: "kefu-header" },
        h("span", { class: "kefu-avatar", html: ICONS.headset }),
        h(
          "div",
          { class: "kefu-heading" },
          h("h2", { class: "kefu-title" }, title),
          h("div", { class: "kefu-statusline" }, this.status, this.mode),
        ),
        (this.rateButton = h("button", {
          class: "kefu-rate-open",
          type: "button",
          "aria-label": t.rating.open,
          title: t.rating.open,
          html: ICONS.star,
          hidden: true,
          onclick: () => this.showRating(),
        })),
        h("button", {
          class: "kefu-close",
          type: "button",
          "aria-label": t.closeChat,
          html: ICONS.close,
          onclick: () => this.setOpen(false),
        }),
      );

      this.banner = h("div", { class: "kefu-banner", role: "status", hidden: true }, t.reconnectingBanner);
      this.log = h(
        "div",
        { class: "kefu-log", role: "log", "aria-live": "polite", "aria-label": t.logLabel, tabindex: "0" },
        h("p", { class: "kefu-greeting" }, t.greeting),
      );
      this.typing = h(
        "div",
        { class: "kefu-msg kefu-msg--assistant kefu-typing", "data-live": "" },
        h(
          "div",
          { class: "kefu-bubble" },
          h("span", { class: "kefu-dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")),
          h("span", { class: "kefu-sr-only" }, t.typing),
        ),
      );

      this.input = h("textarea", {
        class: "kefu-input",
        rows: "1",
        maxlength: String(MAX_MESSAGE_CHARS),
        placeholder: t.placeholder,
        "aria-label": t.inputLabel,
        oninput: () => this.onInput(),
        onkeydown: (event) => this.onKeyDown(event),
      });
      this.sendButton = h("button", {
        class: "kefu-send",
        type: "submit",
        "aria-label": t.send,
        disabled: true,
        html: ICONS.send,
      });
      this.counter = h("p", { class: "kefu-counter", "aria-live": "polite", hidden: true });
      const composer = h(
        "form",
        {
          class: "kefu-composer",
          onsubmit: (event) => {
            event.preventDefault();
            this.submit();
          },
        },
        this.input,
        this.sendButton,
      );

      this.rating = this.ratingForm();

      this.panel = h(
        "section",
        {
          class: "kefu-panel",
          id: "kefu-panel",
          role: "dialog",
          "aria-label": title,
          onkeydown: (e) => this.onPanelKey(e),
        },
        header,
        this.banner,
        this.log,
        this.rating,
        composer,
        this.counter,
      );
      this.root = h(
        "div",
        { class: "kefu", lang: config.lang === "zh" ? "zh-CN" : "en", hidden: true },
        this.panel,
        this.launcher,
      );
    }

    /** The 1-5 star rating of the whole chat, with an optional comment (hidden until asked for). */
    ratingForm() {
      const { rating } = this.t;
      this.score = 0;
      this.stars = rating.stars.map((label, i) =>
        h("button", {
          class: "kefu-star",
          type: "button",
          "data-score": i + 1,
          "aria-label": rating.star(i + 1, label),
          "aria-pressed": "false",
          title: label,
          html: ICONS.star,
          onclick: () => this.pickScore(i + 1),
        }),
      );
      this.ratingComment = h("textarea", {
        class: "kefu-rating-comment",
        rows: "2",
        maxlength: "1000",
        "aria-label": rating.comment,
        placeholder: rating.comment,
      });
      this.ratingSubmit = h("button", { class: "kefu-rating-submit", type: "submit", disabled: true }, rating.submit);
      this.ratingStatus = h("p", { class: "kefu-rating-status", role: "status" });
      const title = h("p", { class: "kefu-rating-title", id: "kefu-rating-title" }, rating.prompt);
      return h(
        "form",
        {
          class: "kefu-rating",
          "aria-labelledby": "kefu-rating-title",
          hidden: true,
          onsubmit: (event) => {
            event.preventDefault();
            this.submitRating();
          },
        },
        title,
        h("div", { class: "kefu-stars", role: "group", "aria-labelledby": "kefu-rating-title" }, ...this.stars),
        this.ratingComment,
        h("div", { class: "kefu-rating-actions" }, this.ratingStatus, this.ratingSubmit),
      );
    }

    /** The "rate this chat" control appears once there is a conversation to rate. */
    setRatable(ratable) {
      this.rateButton.hidden = !ratable;
    }

    /** Opens the rating form; `focus: false` when the chat asks by itself (a handoff ended). */
    showRating({ focus = true } = {}) {
      this.rating.hidden = false;
      this.ratingStatus.textContent = "";
      if (focus) this.stars[Math.max(0, this.score - 1)].focus();
    }

    pickScore(score) {
      this.score = score;
      for (const star of this.stars) {
        const value = Number(star.dataset.score);
        star.setAttribute("aria-pressed", String(value === score));
        star.toggleAttribute("data-on", value <= score);
      }
      this.ratingSubmit.disabled = false;
    }

    async submitRating() {
      if (!this.score) return;
      this.ratingSubmit.disabled = true;
      try {
        await this.onRate(this.score, this.ratingComment.value.trim() || null);
        this.ratingStatus.textContent = this.t.rating.thanks;
        this.rating.dataset.sent = "";
      } catch {
        this.ratingStatus.textContent = this.t.rating.failed;
      } finally {
        this.ratingSubmit.disabled = false;
      }
    }

    /** Thumbs up and down under a bot reply; the customer's earlier vote is shown pressed. */
    renderFeedback(el, messageId) {
      el.querySelector(".kefu-feedback")?.remove();
      const { feedback } = this.t;
      const status = h("span", { class: "kefu-feedback-status", role: "status" });
      const buttons = ["up", "down"].map((rating) =>
        h("button", {
          class: `kefu-vote kefu-vote--${rating}`,
          type: "button",
          "data-rating": rating,
          "aria-label": feedback[rating],
          "aria-pressed": String(this.voteOf(messageId) === rating),
          title: feedback[rating],
          html: rating === "up" ? ICONS.thumbUp : ICONS.thumbDown,
          onclick: async () => {
            try {
              await this.onFeedback(messageId, rating);
              for (const button of buttons) {
                button.setAttribute("aria-pressed", String(button.dataset.rating === rating));
              }
              status.textContent = feedback.thanks;
            } catch {
              status.textContent = feedback.failed;
            }
          },
        }),
      );
      el.append(h("div", { class: "kefu-feedback", role: "group", "aria-label": feedback.label }, ...buttons, status));
    }

    /** Attaches to the page; stays hidden until the stylesheet has loaded (no unstyled flash). */
    mount(stylesheetUrl) {
      const host = h("div", { "data-kefu-widget": "" });
      const shadow = host.attachShadow({ mode: "open" });
      const stylesheet = h("link", { rel: "stylesheet", href: stylesheetUrl });
      stylesheet.addEventListener("load", () => {
        this.root.hidden = false;
      });
      stylesheet.addEventListener("error", () => console.error(`kefu: could not load ${stylesheetUrl}`));
      shadow.append(stylesheet, this.root);
      document.body.append(host);
    }

    get isOpen() {
      return this.root.hasAttribute("data-open");
    }

    /** Opens or closes the panel; `focus: false` leaves the page's focus alone (opening on load). */
    setOpen(open, { focus = true } = {}) {
      if (open === this.isOpen) return;
      this.root.toggleAttribute("data-open", open);
      this.launcher.setAttribute("aria-expanded", String(open));
      if (open) {
        this.unread = 0;
        this.scrollToEnd();
        if (focus) this.input.focus({ preventScroll: true });
        this.onOpen();
      } else if (this.panel.contains(this.panel.getRootNode().activeElement)) {
        this.launcher.focus();
      }
      this.renderLauncher();
    }

    setStatus(status) {
      this.status.dataset.status = status;
      this.statusText.textContent = this.t.status[status] ?? this.t.status.connecting;
      this.banner.hidden = status !== "reconnecting";
    }

    /** Shows who is answering: "queued", "agent" (with the agent's name, if known) or "bot" after a handoff. */
    setMode(mode, agentName) {
      this.mode.hidden = !mode;
      this.mode.dataset.mode = mode ?? "";
      const label = this.t.mode[mode];
      this.mode.textContent = typeof label === "function" ? label(agentName) : (label ?? "");
    }

    /** Counts a new reply or agent message the customer has not seen (the panel is closed). */
    notifyUnread() {
      if (this.isOpen) return;
      this.unread += 1;
      this.renderLauncher();
    }

    renderLauncher() {
      const { t, unread } = this;
      this.badge.hidden = unread === 0;
      this.badge.textContent = unread > 9 ? "9+" : String(unread);
      const label = this.isOpen ? t.closeChat : unread ? `${t.openChat} (${t.unread(unread)})` : t.openChat;
      this.launcher.setAttribute("aria-label", label);
    }

    prefill(text) {
      this.input.value = text.slice(0, MAX_MESSAGE_CHARS);
      this.onInput();
      this.input.focus();
    }

    // -- composer

    onInput() {
      const { input } = this;
      input.style.height = "auto";
      input.style.height = `${Math.min(input.scrollHeight, 140)}px`;
      this.sendButton.disabled = input.value.trim() === "";
      const left = MAX_MESSAGE_CHARS - input.value.length;
      this.counter.hidden = input.value.length < COUNTER_FROM_CHARS;
      this.counter.textContent = this.t.charsLeft(left);
    }

    onKeyDown(event) {
      // keyCode 229: an IME (pinyin) is composing; that Enter picks a candidate, it does not send.
      if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
      event.preventDefault();
      this.submit();
    }

    onPanelKey(event) {
      if (event.key === "Escape") this.setOpen(false);
    }

    submit() {
      const text = this.input.value.trim();
      if (!text) return;
      this.onSubmit(text);
      this.input.value = "";
      this.onInput();
    }

    // -- the log

    /** A customer message the server has not acknowledged yet; state is "queued" or "sending". */
    addPendingUser(clientMessageId, text, state) {
      const el = this.messageElement("user", text);
      el.dataset.cmid = clientMessageId;
      el.dataset.live = "";
      el.append(h("div", { class: "kefu-meta" }));
      this.userBubbles.set(clientMessageId, el);
      this.setPendingState(el, state);
      this.append(el);
    }

    setPendingState(el, state) {
      el.dataset.state = state;
      const meta = el.querySelector(".kefu-meta");
      const labels = { queued: this.t.queued, failed: this.t.failed };
      if (meta) meta.textContent = labels[state] ?? "";
    }

    /** Marks every unacknowledged customer message as waiting for the network, or as on its way. */
    setAllPending(state) {
      for (const el of this.userBubbles.values()) {
        if (el.dataset.state !== "sent" && el.dataset.state !== "failed") this.setPendingState(el, state);
      }
    }

    /** True if a customer message with this client_message_id is on screen. */
    hasUser(clientMessageId) {
      return this.userBubbles.has(clientMessageId);
    }

    markSent(clientMessageId, messageId) {
      const el = this.userBubbles.get(clientMessageId);
      if (!el || el.dataset.state === "sent") return;
      this.setPendingState(el, "sent");
      el.querySelector(".kefu-meta")?.remove();
      el.dataset.id = messageId ?? "";
      delete el.dataset.live;
    }

    markFailed(clientMessageId) {
      const el = this.userBubbles.get(clientMessageId);
      if (!el) return;
      this.setPendingState(el, "failed");
      delete el.dataset.live;
    }

    addUser(message) {
      const el = this.messageElement("user", message.text, message.id);
      if (message.client_message_id) {
        el.dataset.cmid = message.client_message_id;
        this.userBubbles.set(message.client_message_id, el);
      }
      this.appendSettled(el);
    }

    /** Appends streamed text to the reply for `clientMessageId`, creating the bubble if needed. */
    appendDelta(clientMessageId, text) {
      this.showTyping(false);
      const el = this.liveReply(clientMessageId);
      const bubble = el.querySelector(".kefu-bubble");
      const stick = this.isAtEnd();
      bubble.append(text);
      bubble.normalize();
      if (stick) this.scrollToEnd();
    }

    /** Replaces the streamed text of the reply for `clientMessageId`: a check withdrew it (the final reply follows). */
    replaceLive(clientMessageId, text) {
      const el = this.liveReply(clientMessageId);
      el.querySelector(".kefu-bubble").textContent = text;
      el.dataset.replaced = "";
    }

    /** Shows a finished bot reply: fills the streamed bubble for `clientMessageId` or adds one. */
    addReply(reply, clientMessageId) {
      this.showTyping(false);
      const streamed = clientMessageId ? this.replies.get(clientMessageId) : null;
      const el = streamed ?? this.messageElement("assistant", "");
      el.querySelector(".kefu-bubble").textContent = reply.text;
      el.querySelector(".kefu-bubble").removeAttribute("aria-busy");
      el.dataset.id = reply.id ?? "";
      if (reply.error) el.dataset.error = "";
      this.renderCitations(el, reply.citations);
      if (reply.id && !reply.error) this.renderFeedback(el, reply.id);
      if (clientMessageId) this.replies.delete(clientMessageId);
      delete el.dataset.live;
      if (!streamed) this.appendSettled(el);
      else if (this.isAtEnd(120)) this.scrollToEnd();
    }

    /** Drops a half-streamed reply whose finished version is already on screen (from history). */
    discardLiveReply(clientMessageId) {
      this.replies.get(clientMessageId)?.remove();
      this.replies.delete(clientMessageId);
    }

    addAgentMessage(message) {
      const el = this.messageElement("agent", message.text, message.id);
      const label = message.agent_name ? `${this.t.agent} · ${message.agent_name}` : this.t.agent;
      el.prepend(h("div", { class: "kefu-sender" }, label));
      this.appendSettled(el);
    }

    addNotice(text, { error = false, id } = {}) {
      const el = h("div", { class: error ? "kefu-notice kefu-notice--error" : "kefu-notice", "data-id": id }, text);
      this.appendSettled(el);
    }

    showTyping(visible) {
      if (visible && !this.typing.isConnected) this.append(this.typing);
      else if (!visible) this.typing.remove();
    }

    /** Empties the log (the server no longer knows our session), keeping unsent messages. */
    clearSettled() {
      for (const el of [...this.log.children]) {
        if (!("live" in el.dataset) && !el.classList.contains("kefu-greeting")) el.remove();
      }
      for (const [id, el] of this.userBubbles) if (!el.isConnected) this.userBubbles.delete(id);
    }

    messageElement(role, text, id) {
      return h(
        "div",
        { class: `kefu-msg kefu-msg--${role}`, "data-role": role, "data-id": id },
        h("div", { class: "kefu-bubble" }, text),
      );
    }

    liveReply(clientMessageId) {
      let el = this.replies.get(clientMessageId);
      if (el) return el;
      el = this.messageElement("assistant", "");
      el.dataset.live = "";
      el.querySelector(".kefu-bubble").setAttribute("aria-busy", "true");
      this.replies.set(clientMessageId, el);
      const question = this.userBubbles.get(clientMessageId);
      if (question?.isConnected) question.after(el);
      else this.append(el);
      return el;
    }

    renderCitations(el, citations) {
      el.querySelector(".kefu-sources")?.remove();
      const seen = new Set();
      const items = [];
      for (const citation of citations ?? []) {
        const title = citation.title || citation.source;
        const href = safeLink(citation.url, this.linkBase);
        if (!title || seen.has(`${title}|${href}`)) continue;
        seen.add(`${title}|${href}`);
        const label = href
          ? h("a", { href, target: "_blank", rel: "noopener noreferrer" }, title)
          : h("span", { title: citation.source || null }, title);
        items.push(h("li", {}, label));
      }
      if (items.length === 0) return;
      const label = h("span", { class: "kefu-sources-label" }, this.t.sources);
      el.append(h("div", { class: "kefu-sources" }, label, h("ul", {}, ...items)));
    }

    /** Live elements (unacknowledged messages, streaming replies, typing) stay at the bottom. */
    appendSettled(el) {
      const stick = this.isAtEnd();
      const firstLive = this.log.querySelector(":scope > [data-live]");
      this.log.insertBefore(el, firstLive);
      if (stick) this.scrollToEnd();
    }

    append(el) {
      const stick = this.isAtEnd();
      this.log.append(el);
      if (this.typing.isConnected && el !== this.typing) this.log.append(this.typing);
      if (stick || el.dataset.role === "user") this.scrollToEnd();
    }

    isAtEnd(slack = 48) {
      const { log } = this;
      return log.scrollHeight - log.scrollTop - log.clientHeight <= slack;
    }

    scrollToEnd() {
      this.log.scrollTop = this.log.scrollHeight;
    }
  }

  // ---------------------------------------------------------------- the conversation

  /** Ties the socket to the view: outbox, acknowledgements, streaming, history sync. */
  class Widget {
    constructor(config) {
      this.config = config;
      this.t = STRINGS[config.lang];
      this.store = createStore(config.server);
      this.userId = this.store.get("user_id") || this.remember("user_id", uuid());
      this.sessionId = this.store.get("session_id");
      this.outbox = new Map(this.loadOutbox()); // client_message_id → text, until its reply arrives
      this.shown = new Set(); // server message ids already on screen
      this.clientIds = new Map(); // server id of a customer message → its client_message_id
      this.ready = false; // the socket is open, the session is known and history is synced
      this.syncRound = 0;
      this.handoffStatus = null;
      this.mode = null; // null (never handed off), "queued", "agent" or "bot" (handed back)
      this.agentName = null;

      this.view = new ChatView(config, this.t, {
        onSubmit: (text) => this.send(text),
        onOpen: () => this.connection.start(),
        onFeedback: (messageId, rating) => this.sendFeedback(messageId, rating),
        onRate: (score, comment) => this.sendRating(score, comment),
        voteOf: (messageId) => this.store.get(`vote:${messageId}`),
      });
      this.connection = new Connection(() => this.socketUrl(), {
        onEvent: (event) => this.handle(event),
        onStatus: (status) => this.onStatus(status),
        // e.g. the stored session belongs to another visitor: start a new one rather than retry forever
        onRejected: () => {
          this.sessionId = null;
          this.token = null; // expired, or for another session: ask for a new one
        },
      });
    }

    start() {
      this.view.mount(this.config.stylesheet);
      for (const [clientMessageId, text] of this.outbox) {
        this.view.addPendingUser(clientMessageId, text, "queued");
      }
      // A returning visitor connects at once so replies and agent messages can arrive; a new
      // visitor's session is only created when they open the chat.
      if (this.sessionId || this.outbox.size) this.connection.start();
      if (this.config.startOpen) this.view.setOpen(true, { focus: false });
    }

    async socketUrl() {
      await this.ensureToken();
      const params = new URLSearchParams({ user_id: this.userId, channel: this.config.channel });
      if (this.sessionId) params.set("session_id", this.sessionId);
      // The token travels as a subprotocol, not in the URL, so it stays out of server and proxy logs.
      return { url: `${this.config.socketBase}/v1/ws?${params}`, protocols: ["kefu.v1", `kefu.token.${this.token}`] };
    }

    /** A customer token for this visitor's session (POST /v1/widget/session); renews a stored one. */
    async ensureToken() {
      if (this.token) return;
      const stored = this.store.get("token");
      const headers = { "Content-Type": "application/json" };
      if (stored) headers.Authorization = `Bearer ${stored}`;
      const body = { user_id: this.userId, channel: this.config.channel };
      if (this.sessionId) body.session_id = this.sessionId;
      const response = await fetch(`${this.config.server}/v1/widget/session`, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(HISTORY_TIMEOUT_MS),
      });
      if (!response.ok) throw new Error(`kefu: no session token (${response.status})`);
      const grant = await response.json();
      if (this.sessionId && grant.session_id !== this.sessionId) {
        this.view.clearSettled(); // the server started a new session: the old one's history is not ours
        this.shown.clear();
      }
      this.userId = this.remember("user_id", grant.user_id);
      this.sessionId = this.remember("session_id", grant.session_id);
      this.token = this.remember("token", grant.token);
    }

    /** POST to the session's own endpoints with the customer token; throws on anything but 2xx. */
    async postToSession(path, body) {
      await this.ensureToken();
      const headers = { "Content-Type": "application/json" };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      const url = `${this.config.server}/v1/sessions/${encodeURIComponent(this.sessionId)}${path}`;
      const response = await fetch(url, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(HISTORY_TIMEOUT_MS),
      });
      if (!response.ok) throw new Error(`kefu: feedback not stored (${response.status})`);
      return response.json();
    }

    async sendFeedback(messageId, rating) {
      await this.postToSession(`/messages/${encodeURIComponent(messageId)}/feedback`, { rating });
      this.store.set(`vote:${messageId}`, rating);
    }

    sendRating(score, comment) {
      return this.postToSession("/rating", { score, comment });
    }

    send(text) {
      const clientMessageId = uuid();
      this.outbox.set(clientMessageId, text);
      this.saveOutbox();
      this.view.addPendingUser(clientMessageId, text, this.ready ? "sending" : "queued");
      if (this.ready) this.transmit(clientMessageId, text);
      this.connection.start();
    }

    transmit(clientMessageId, text) {
      return this.connection.send({ type: "message", text, client_message_id: clientMessageId });
    }

    onStatus(status) {
      this.view.setStatus(status);
      if (status !== "open") {
        this.ready = false;
        this.view.showTyping(false);
        this.view.setAllPending("queued");
      }
    }

    handle(event) {
      switch (event.type) {
        case "session":
          this.onHandoffState(event.owner, event.handoff);
          this.onSession(event.session_id);
          break;
        case "ack":
          this.shown.add(event.message_id);
          this.clientIds.set(event.message_id, event.client_message_id);
          this.view.markSent(event.client_message_id, event.message_id);
          break;
        case "typing":
          if (this.mode !== "agent") this.view.showTyping(true); // a person answers in their own time
          break;
        case "delta":
          this.view.appendDelta(event.client_message_id, event.text);
          break;
        case "replace":
          this.view.replaceLive(event.client_message_id, event.text);
          break;
        case "reply":
          this.onReply(event);
          break;
        case "agent_message":
          this.onAgentMessage(event);
          break;
        case "status":
          this.onStatusEvent(event);
          break;
        case "handoff":
          this.showHandoff(event.status, event.message);
          if (event.status === "queued" || event.status === "assigned") {
            this.setMode(event.status === "queued" ? "queued" : "agent");
          } else if (event.status === "closed") {
            this.setMode("bot");
            this.view.showRating({ focus: false });
          }
          break;
        case "error":
          this.onError(event.error ?? {}, event.client_message_id);
          break;
        default:
          break; // event types from newer servers are ignored, not fatal
      }
    }

    /** On (re)connect: where the session's handoff stands (`handoff` is null when no ticket is open). */
    onHandoffState(owner, handoff) {
      if (handoff && handoff.status === "assigned") {
        this.handoffStatus = "assigned";
        this.setMode("agent", handoff.agent);
      } else if (handoff || owner === "human") {
        this.handoffStatus = "queued";
        this.setMode("queued");
      } else if (this.mode === "queued" || this.mode === "agent") {
        this.handoffStatus = "closed";
        this.setMode("bot"); // handed back while we were away
      }
    }

    /** An agent's message, pushed by the server: `{message: {id, text, ...}, agent}`. */
    onAgentMessage(event) {
      const pushed = event.message && typeof event.message === "object";
      const message = pushed
        ? { ...event.message, role: "agent", agent_name: event.agent }
        : { ...event, id: event.message_id, role: "agent" }; // the earlier flat shape
      this.setMode("agent", message.agent_name);
      if (this.showStored(message)) this.view.notifyUnread();
    }

    /** A handoff status change with its stored system notice: an agent joined (owner human), or handed back. */
    onStatusEvent(event) {
      const human = event.owner === "human";
      this.handoffStatus = human ? "assigned" : "closed";
      this.setMode(human ? "agent" : "bot", human ? event.agent : null);
      if (event.message && this.showStored({ ...event.message, role: "system" })) this.view.notifyUnread();
      if (!human) this.view.showRating({ focus: false }); // the agent is done: ask how it went
    }

    setMode(mode, agentName) {
      this.mode = mode;
      this.agentName = mode === "agent" ? agentName || this.agentName : null;
      this.view.setMode(mode, this.agentName);
    }

    async onSession(sessionId) {
      if (this.sessionId && sessionId !== this.sessionId) {
        this.view.clearSettled(); // the old session is gone; its history cannot be fetched
        this.shown.clear();
      }
      this.sessionId = this.remember("session_id", sessionId);
      this.view.setRatable(true);
      const round = ++this.syncRound;
      await this.syncHistory();
      if (round !== this.syncRound || this.connection.status !== "open") return;
      this.ready = true;
      this.view.setAllPending("sending");
      for (const [clientMessageId, text] of this.outbox) this.transmit(clientMessageId, text);
    }

    /** Renders every stored message of the session that is not on screen yet. */
    async syncHistory() {
      const url = `${this.config.server}/v1/sessions/${encodeURIComponent(this.sessionId)}/messages`;
      try {
        const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
        const response = await fetch(url, { headers, signal: AbortSignal.timeout(HISTORY_TIMEOUT_MS) });
        if (!response.ok) return;
        const { messages } = await response.json();
        for (const message of messages) this.showStored(message);
      } catch {
        // offline again or too slow: the next reconnect syncs again
      }
    }

    /** Shows a stored or pushed message unless it is on screen already; true if it was new. */
    showStored(message) {
      if (!message.id || this.shown.has(message.id)) return false;
      this.shown.add(message.id);
      const clientMessageId = message.client_message_id;
      switch (message.role) {
        case "user":
          if (clientMessageId) this.clientIds.set(message.id, clientMessageId);
          if (clientMessageId && this.view.hasUser(clientMessageId)) {
            this.view.markSent(clientMessageId, message.id);
          } else {
            this.view.addUser(message);
          }
          break;
        case "assistant":
          // A reply whose stream was cut short fills that half-streamed bubble instead of adding one.
          this.view.addReply(message, this.clientIds.get(message.reply_to));
          break;
        case "agent":
          this.view.addAgentMessage(message);
          break;
        case "system":
          this.view.addNotice(message.text, { id: message.id });
          break;
        default:
          break;
      }
      return true;
    }

    onReply(reply) {
      const clientMessageId = reply.client_message_id;
      this.forget(clientMessageId);
      this.view.markSent(clientMessageId, null);
      this.view.showTyping(false);
      if (reply.silent) {
        // A person owns the conversation: the bot said nothing, the agent answers with agent_message events.
        this.view.discardLiveReply(clientMessageId);
        return;
      }
      if (this.shown.has(reply.message_id)) {
        this.view.discardLiveReply(clientMessageId); // a resend's stored reply, already on screen
        return;
      }
      this.shown.add(reply.message_id);
      const text = reply.reply || (reply.error ? this.t.error : "");
      this.view.addReply(
        { id: reply.message_id, text, citations: reply.citations, error: reply.error },
        clientMessageId,
      );
      // The reply itself says where the customer stands in the queue; the header keeps showing it.
      if (reply.handoff && this.mode !== "agent") this.setMode("queued");
      this.view.notifyUnread();
    }

    onError(error, clientMessageId) {
      this.view.showTyping(false);
      if (clientMessageId) {
        this.forget(clientMessageId);
        this.view.markFailed(clientMessageId);
      }
      this.view.addNotice(error.message || this.t.error, { error: true });
    }

    /** One notice per change of handoff status (a reply's flag and the event may both report it). */
    showHandoff(status, message) {
      if (status === this.handoffStatus) return;
      this.handoffStatus = status;
      const text = message || this.t.handoff[status];
      if (text) this.view.addNotice(text);
    }

    forget(clientMessageId) {
      if (this.outbox.delete(clientMessageId)) this.saveOutbox();
    }

    loadOutbox() {
      try {
        const entries = JSON.parse(this.store.get("outbox") || "[]");
        return Array.isArray(entries)
          ? entries.filter(([id, text]) => typeof id === "string" && typeof text === "string")
          : [];
      } catch {
        return [];
      }
    }

    saveOutbox() {
      this.store.set("outbox", JSON.stringify([...this.outbox]));
    }

    remember(key, value) {
      this.store.set(key, value);
      return value;
    }
  }

  // ---------------------------------------------------------------- start

  const widget = new Widget(readConfig(script));
  window.kefu = Object.freeze({
    open: () => widget.view.setOpen(true),
    close: () => widget.view.setOpen(false),
    prefill: (text) => {
      widget.view.setOpen(true);
      widget.view.prefill(String(text));
    },
  });
  if (document.body) widget.start();
  else document.addEventListener("DOMContentLoaded", () => widget.start(), { once: true });
})();
