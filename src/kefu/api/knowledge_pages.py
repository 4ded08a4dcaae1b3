"""The page a citation links to: a knowledge document rendered as HTML, each heading an anchor (`/kb/doc/<id>#…`)."""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from kefu.api.dependencies import ServicesDep
from kefu.errors import NotFoundError
from kefu.knowledge.text import slugify

router = APIRouter(include_in_schema=False)
# The page is the shop's own published policy text; its Markdown is rendered without raw HTML, and the page
# may load nothing and run no script.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
_STYLE = (
    "body{font:16px/1.6 system-ui,-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;max-width:46rem;"
    "margin:2rem auto;padding:0 1rem;color:#1f2328}h1,h2,h3{line-height:1.3}:target{background:#fff8c5}"
    "table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.3rem .6rem}"
    ".meta{color:#59636e;font-size:.875rem}"
)


def render_markdown(text: str) -> str:
    """Markdown → HTML with an `id` on every heading (the same slugs chunks use for their anchors)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    used: set[str] = set()
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            slug = slugify(tokens[i + 1].content)
            # The first heading with a slug keeps it; repeats get -2, -3 … like common Markdown renderers.
            anchor, n = slug, 1
            while anchor in used:
                n += 1
                anchor = f"{slug}-{n}"
            used.add(anchor)
            token.attrSet("id", anchor)
    rendered: Any = md.renderer.render(tokens, md.options, {})
    return str(rendered)


@router.get("/kb/doc/{doc_id}", response_class=HTMLResponse)
async def document_page(doc_id: Annotated[str, Path(pattern=r"^[0-9a-f]{24}$")], services: ServicesDep) -> HTMLResponse:
    if services.knowledge is None:
        raise NotFoundError("no knowledge base on this server")
    doc, text = await services.knowledge.document(doc_id)
    body = render_markdown(text)
    page = (
        f'<!doctype html><html lang="{html.escape(doc.lang or "zh")}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(doc.title)}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f'<p class="meta">{html.escape(doc.source)} · v{doc.version} · {doc.updated_at:%Y-%m-%d}</p>'
        f"{body}</body></html>"
    )
    return HTMLResponse(page, headers={"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"})
