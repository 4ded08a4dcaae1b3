/**
 * Shared by the agent console (console.js) and the analytics page (analytics.js): the operator's sign-in kept in
 * sessionStorage (this tab only), element building without HTML, the API's error type, and the page's language. Loaded first, with
 * `defer`, by both pages.
 */
window.KefuConsole = (() => {
  "use strict";

  const TOKEN_KEY = "kefu.console.token";
  const USER_KEY = "kefu.console.user";

  /** Creates an element with text children only (never HTML from the server); `on<event>` props add listeners. */
  function h(tag, props = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value == null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    el.append(...children.filter((child) => child != null && child !== ""));
    return el;
  }

  /** An API answer that was not 2xx, with the server's message and code from `{"error": {code, message}}`. */
  class ApiError extends Error {
    constructor(status, body) {
      super(body?.error?.message || `HTTP ${status}`);
      this.status = status;
      this.code = body?.error?.code;
    }
  }

  const session = {
    token: () => sessionStorage.getItem(TOKEN_KEY),
    user: () => sessionStorage.getItem(USER_KEY),

    /** Signs in with POST /v1/auth/login and keeps the access token; throws ApiError when refused. */
    async signIn(username, password) {
      const response = await fetch("/v1/auth/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username, password }),
      });
      const data = await response.json().catch(() => null);
      if (!response.ok) throw new ApiError(response.status, data);
      sessionStorage.setItem(TOKEN_KEY, data.access_token);
      sessionStorage.setItem(USER_KEY, username);
      return data.access_token;
    },

    /** The server refused the token: forget it and sign in again. */
    dropToken: () => sessionStorage.removeItem(TOKEN_KEY),

    signOut() {
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.removeItem(USER_KEY);
    },
  };

  /** The operator's language: Chinese when the browser prefers it, else English. */
  const lang = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  const locale = lang === "zh" ? "zh-CN" : "en";
  const $ = (id) => document.getElementById(id);

  /** Puts the page in `lang`: its lang attribute, title and every `data-i18n` element's text from `strings`. */
  function translatePage(strings) {
    document.documentElement.lang = locale;
    document.title = `kefu · ${strings.appTitle}`;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = strings[el.dataset.i18n];
  }

  return { h, ApiError, session, lang, locale, $, translatePage };
})();
