"""report.html: report.md as one self-contained page, rendered from the same markdown so that the two never
say different things.

The markdown goes through markdown-it-py (CommonMark plus tables, raw HTML off, so nothing in a results file
can inject markup), then into a Jinja2 template with autoescaping. Every image becomes a data: URI of the PNG
beside report.md, and the stylesheet and the table-sorting script are inline, allowed by hash in the page's
Content-Security-Policy, which forbids every other source: the page works offline, from a mail attachment,
and makes no request at all. An image without alt text, or one that is not a file of the report folder, is
refused rather than written.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from stockscale.files import write_text_atomic

if TYPE_CHECKING:
    from markdown_it.token import Token

TEMPLATES = "templates"
TEMPLATE = "report.html.j2"


class ReportImageError(ValueError):
    """An image in the report cannot be embedded as it stands (no alt text, not a file of the report folder)."""


def _asset(name: str) -> str:
    return (resources.files(__package__) / TEMPLATES / name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _data_uri(folder: Path, src: str) -> str:
    path = folder / src
    if "/" in src or "\\" in src or ":" in src or src.startswith(".") or not path.is_file():
        raise ReportImageError(f"image {src!r} is not a file of the report folder {folder}")
    kind = mimetypes.guess_type(src)[0] or "application/octet-stream"
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _embed_images(tokens: list[Token], folder: Path) -> int:
    """Replace every image's src by a data: URI of its file; return how many there were."""
    count = 0
    for block in tokens:
        for token in block.children or []:
            if token.type != "image":
                continue
            alt = "".join(child.content for child in token.children or []).strip()
            src = str(token.attrGet("src") or "")
            if not alt:
                raise ReportImageError(f"image {src!r} has no alt text")
            token.attrSet("src", _data_uri(folder, src))
            count += 1
    return count


def render_html(markdown: str, folder: Path) -> str:
    """The page for `markdown` (report.md's text), its images read from `folder`."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(markdown)
    _embed_images(tokens, folder)
    body = parser.renderer.render(tokens, parser.options, {})
    title = next((tokens[i + 1].content for i, token in enumerate(tokens)
                  if token.type == "heading_open" and token.tag == "h1"), "stockscale report")
    style, script = _asset("report.css"), _asset("report.js")
    environment = Environment(loader=PackageLoader(__package__, TEMPLATES),
                              autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
                              keep_trailing_newline=True)
    policy = (f"default-src 'none'; img-src data:; style-src {_csp_hash(style)}; script-src {_csp_hash(script)}; "
              "base-uri 'none'; form-action 'none'")
    # markdown-it escaped the body (raw HTML is off); the style and script are the package's own files.
    return environment.get_template(TEMPLATE).render(title=title, body=Markup(body), style=Markup(style),
                                                     script=Markup(script), policy=policy)


def write_html_report(report_md: Path) -> Path:
    """Write report.html beside `report_md`, in one step (written to a temporary file, then renamed)."""
    page = render_html(report_md.read_text(encoding="utf-8"), report_md.parent)
    out = report_md.with_name("report.html")
    write_text_atomic(out, page)
    return out
