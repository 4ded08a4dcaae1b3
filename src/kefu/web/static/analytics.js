/**
 * kefu service analytics (/console/analytics): resolution, handoffs, satisfaction, intents, unanswered
 * questions, handling time and cost for a range of days, from GET /v1/admin/analytics and /v1/admin/feedback
 * (viewer role and up). Plain JS, no build step; the sign-in token is the console's (sessionStorage).
 * Definitions of every figure: docs/analytics.md.
 */
(() => {
  "use strict";

  const { h, ApiError, session, lang, locale, $, translatePage } = window.KefuConsole;
  const DEFAULT_DAYS = 7;
  const DAY_MS = 86_400_000;

  const STRINGS = {
    zh: {
      appTitle: "服务分析",
      signinLead: "请使用运营账号登录（查看者及以上角色）。",
      username: "用户名",
      password: "密码",
      signIn: "登录",
      signOut: "退出登录",
      signInFailed: "登录失败：",
      needsViewer: "此账号没有查看分析的权限。",
      toConsole: "返回工作台",
      from: "开始日期",
      to: "结束日期",
      refresh: "刷新",
      headline: "核心指标",
      range: (from, to, asOf) => `${from} 至 ${to}（UTC）开始的对话，统计于 ${asOf}`,
      stats: {
        conversations: "对话数",
        resolution: "机器人解决率",
        awaiting: "等待观察期结束",
        handoff: "转人工率",
        csat: "满意度（4-5 分占比）",
        csatAverage: "平均评分",
        thumbs: "点赞 / 点踩",
        unanswered: "未能回答",
        firstResponse: "平均排队等待",
        handling: "平均人工处理时长",
        tokens: "Token（输入 / 输出）",
        cost: "总成本",
        costPerConversation: "每个对话成本",
      },
      ratings: (n) => `${n} 个评分`,
      handoffReasons: "转人工原因",
      topUnanswered: "未能回答的问题",
      intentsByDay: "每日意图",
      usageByModel: "各模型用量",
      experimentArms: "灰度实验（按分组）",
      comments: "最新评价与留言",
      columns: {
        reason: "原因",
        count: "次数",
        question: "问题",
        day: "日期",
        intent: "意图",
        model: "模型",
        tokens: "Token（输入 / 输出）",
        cost: "成本",
        experiment: "实验",
        arm: "分组",
        errors: "错误回复 / 灰度失败",
        latency: "平均耗时",
        when: "时间",
        kind: "类型",
        rating: "评分",
        comment: "留言",
      },
      kinds: { thumb: "单条回复", csat: "整体评分" },
      thumbs: { up: "有帮助", down: "没有帮助" },
      none: "暂无数据",
      definitions: "各项指标的定义见 docs/analytics.md。",
      reasons: {
        customer_request: "客户要求转人工",
        complaint: "投诉",
        angry: "客户情绪激动",
        backend_failure: "系统故障",
        escalation: "机器人无法处理",
        unresolved: "问题未解决",
      },
    },
    en: {
      appTitle: "Service analytics",
      signinLead: "Sign in with an operator account (viewer role or above).",
      username: "Username",
      password: "Password",
      signIn: "Sign in",
      signOut: "Sign out",
      signInFailed: "Sign-in failed: ",
      needsViewer: "This account may not see analytics.",
      toConsole: "Agent console",
      from: "From",
      to: "To",
      refresh: "Refresh",
      headline: "Headline figures",
      range: (from, to, asOf) => `Conversations started ${from} to ${to} (UTC), as of ${asOf}`,
      stats: {
        conversations: "Conversations",
        resolution: "Resolved by the bot",
        awaiting: "Still inside the window",
        handoff: "Handed to people",
        csat: "CSAT (share of 4-5)",
        csatAverage: "Average rating",
        thumbs: "Thumbs up / down",
        unanswered: "Unanswered replies",
        firstResponse: "Average wait for an agent",
        handling: "Average handling time",
        tokens: "Tokens (in / out)",
        cost: "Cost",
        costPerConversation: "Cost per conversation",
      },
      ratings: (n) => (n === 1 ? "1 rating" : `${n} ratings`),
      handoffReasons: "Handoff reasons",
      topUnanswered: "Unanswered questions",
      intentsByDay: "Intents per day",
      usageByModel: "Usage by model",
      experimentArms: "Experiments by arm",
      comments: "Latest ratings and comments",
      columns: {
        reason: "Reason",
        count: "Count",
        question: "Question",
        day: "Day",
        intent: "Intent",
        model: "Model",
        tokens: "Tokens (in / out)",
        cost: "Cost",
        experiment: "Experiment",
        arm: "Arm",
        errors: "Error replies / canary failures",
        latency: "Average latency",
        when: "When",
        kind: "Kind",
        rating: "Rating",
        comment: "Comment",
      },
      kinds: { thumb: "Reply", csat: "Chat" },
      thumbs: { up: "Helpful", down: "Not helpful" },
      none: "No data",
      definitions: "Every figure is defined in docs/analytics.md.",
      reasons: {
        customer_request: "Asked for a person",
        complaint: "Complaint",
        angry: "Upset customer",
        backend_failure: "System failure",
        escalation: "Bot could not help",
        unresolved: "Not resolved",
      },
    },
  };

  const t = STRINGS[lang];

  const percent = (share) => (share == null ? "–" : `${(share * 100).toFixed(1)}%`);
  const number = (n) => (n == null ? "–" : n.toLocaleString(locale));
  const money = (amount, currency) => (amount == null ? "–" : `${amount.toFixed(4)} ${currency}`);
  const isoDay = (date) => date.toISOString().slice(0, 10);

  function duration(seconds) {
    if (seconds == null) return "–";
    const s = Math.round(seconds);
    const minutes = Math.floor(s / 60);
    return minutes ? `${minutes}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
  }

  class Analytics {
    constructor() {
      this.token = session.token();
    }

    start() {
      translatePage(t);
      const today = new Date();
      $("range-to").value = isoDay(today);
      $("range-from").value = isoDay(new Date(today.getTime() - (DEFAULT_DAYS - 1) * DAY_MS));
      $("range-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.load();
      });
      $("signin-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.signIn();
      });
      $("signout").addEventListener("click", () => {
        session.signOut();
        location.reload();
      });
      this.load();
    }

    async api(path) {
      const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
      const response = await fetch(path, { headers });
      const data = await response.json().catch(() => null);
      if (!response.ok) throw new ApiError(response.status, data);
      return data;
    }

    /** The chosen days as the API's half-open range: from the first day's midnight to the day after the last. */
    params() {
      const from = $("range-from").value;
      const to = $("range-to").value;
      const end = isoDay(new Date(new Date(`${to}T00:00:00Z`).getTime() + DAY_MS));
      return new URLSearchParams({ from, to: end });
    }

    async load() {
      const query = this.params();
      try {
        const [report, feedback] = await Promise.all([
          this.api(`/v1/admin/analytics?${query}`),
          this.api(`/v1/admin/feedback?${query}&limit=20`),
        ]);
        this.showPage();
        this.showError(null);
        this.render(report, feedback);
      } catch (error) {
        if (error.status === 401) this.showSignIn();
        else if (error.status === 403) this.showSignIn(t.needsViewer);
        else {
          this.showPage();
          this.showError(error.message);
        }
      }
    }

    async signIn() {
      const username = $("signin-username").value.trim();
      const password = $("signin-password").value;
      $("signin-submit").disabled = true;
      try {
        this.token = await session.signIn(username, password);
        $("signin-password").value = "";
        await this.load();
      } catch (error) {
        const el = $("signin-error");
        el.textContent = t.signInFailed + error.message;
        el.hidden = false;
      } finally {
        $("signin-submit").disabled = false;
      }
    }

    showSignIn(message) {
      this.token = null;
      session.dropToken();
      $("analytics").hidden = true;
      $("signin").hidden = false;
      const el = $("signin-error");
      el.textContent = message ?? "";
      el.hidden = !message;
      $("signin-username").focus();
    }

    showPage() {
      $("signin").hidden = true;
      $("analytics").hidden = false;
      $("signout").hidden = !this.token;
    }

    showError(message) {
      const el = $("range-error");
      el.textContent = message ?? "";
      el.hidden = !message;
    }

    render(report, feedback) {
      const { usage, csat, handling, thumbs } = report;
      const asOf = new Date(report.as_of).toLocaleString(locale, { hour12: false });
      $("range-note").textContent = t.range($("range-from").value, $("range-to").value, asOf);
      const s = t.stats;
      const stats = [
        ["conversations", number(report.conversations)],
        ["resolution", percent(report.resolution_rate), `${number(report.resolved)} / ${number(report.conversations)}`],
        ["awaiting", number(report.awaiting_window), `${report.resolution_window_minutes} min`],
        ["handoff", percent(report.handoff_rate), number(report.handed_off)],
        ["csat", percent(csat.satisfied_share), t.ratings(csat.ratings)],
        ["csatAverage", csat.average == null ? "–" : `${csat.average.toFixed(2)} / 5`],
        ["thumbs", `${number(thumbs.up)} / ${number(thumbs.down)}`],
        ["unanswered", number(report.unanswered)],
        ["firstResponse", duration(handling.avg_first_response_s), `${number(handling.claimed)} / ${number(handling.tickets)}`],
        ["handling", duration(handling.avg_handling_s), number(handling.closed)],
        ["tokens", `${number(usage.prompt_tokens)} / ${number(usage.completion_tokens)}`],
        ["cost", money(usage.cost, usage.currency)],
        ["costPerConversation", money(usage.cost_per_conversation, usage.currency)],
      ];
      $("stats").replaceChildren(
        ...stats.map(([key, value, detail]) =>
          h("div", { class: "stat", "data-stat": key }, h("dt", {}, s[key]), h("dd", {}, value), detail ? h("dd", { class: "stat-detail" }, detail) : null),
        ),
      );
      const c = t.columns;
      table($("reasons"), [c.reason, c.count], report.handoff_reasons.map((r) => [t.reasons[r.reason] ?? r.reason, r.count]));
      table($("unanswered"), [c.question, c.count], report.top_unanswered.map((q) => [q.question, q.count]));
      table($("intents"), [c.day, c.intent, c.count], report.intents_by_day.map((i) => [i.day, i.intent, i.count]));
      table(
        $("usage"),
        [c.model, c.tokens, c.cost],
        usage.by_model.map((m) => [m.model ?? "–", `${number(m.prompt_tokens)} / ${number(m.completion_tokens)}`, money(m.cost, usage.currency)]),
      );
      const arms = report.arms ?? [];
      $("arms-section").hidden = arms.length === 0;
      table(
        $("arms"),
        [c.experiment, c.arm, s.conversations, s.resolution, s.handoff, s.csat, c.errors, c.latency],
        arms.map((a) => [
          a.experiment,
          a.arm,
          number(a.conversations),
          percent(a.resolution_rate),
          percent(a.handoff_rate),
          percent(a.csat.satisfied_share),
          `${number(a.errors)} / ${number(a.fallbacks)}`,
          a.avg_latency_ms == null ? "–" : `${Math.round(a.avg_latency_ms)} ms`,
        ]),
      );
      table(
        $("comments"),
        [c.when, c.kind, c.rating, c.comment],
        feedback.map((f) => [
          new Date(f.created_at).toLocaleString(locale, { hour12: false }),
          t.kinds[f.kind] ?? f.kind,
          f.kind === "thumb" ? t.thumbs[f.rating > 0 ? "up" : "down"] : `${"★".repeat(f.rating)}${"☆".repeat(5 - f.rating)}`,
          f.comment ?? "",
        ]),
      );
    }
  }

  function table(el, headings, rows) {
    const head = h("thead", {}, h("tr", {}, ...headings.map((text) => h("th", { scope: "col" }, text))));
    const body = rows.length
      ? rows.map((cells) => h("tr", {}, ...cells.map((cell) => h("td", {}, String(cell)))))
      : [h("tr", {}, h("td", { colspan: headings.length, class: "empty" }, t.none))];
    el.replaceChildren(head, h("tbody", {}, ...body));
  }

  const page = new Analytics();
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => page.start(), { once: true });
  else page.start();
})();
