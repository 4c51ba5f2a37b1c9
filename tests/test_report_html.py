"""report.html: the markdown report as one self-contained page (images embedded, style and script inline).

The page is rendered from report.md itself, so these tests check that everything report.md says is on the
page, that nothing on it points outside the file, and that an image without alt text is refused.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

import pytest

from stockscale.experiments.report import write_report
from stockscale.experiments.report.html import ReportImageError, render_html, write_html_report
from stockscale.experiments.results import load_results
from tests.test_report import full_results, write_predictions  # noqa: F401  (a fixture)

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5E"
                       "rkJggg==")  # one pixel


def _visible_text(page: str) -> str:
    """The page's text without tags, entities decoded, whitespace collapsed (to compare with report.md)."""
    body = page.split("<main>", 1)[1].split("</main>", 1)[0]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def _plain(text: str) -> str:
    """Words only: markdown's and the tables' markup, image targets and extra spaces left out."""
    text = re.sub(r"\]\([^)]*\)", " ", text.replace("\\|", "\x00"))
    return " ".join(re.sub(r"[#*_`|!\[\]]", " ", text).replace("\x00", "|").split())


def test_the_page_has_every_word_and_image_of_report_md(full_results: Path, tmp_path: Path) -> None:  # noqa: F811
    write_predictions(full_results, "hp_search_local")
    report = write_report(load_results(full_results), tmp_path / "report")
    page_path = report.with_name("report.html")
    page = page_path.read_text()

    markdown = report.read_text()
    # Every fixed-width block (the comparison, the projection) is on the page exactly, in a <pre>.
    blocks = re.findall(r"```text\n(.*?)\n```", markdown, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        assert html.escape(block, quote=False) in page
    # Every other line's words, its markup left out, are in the page's text in the same order.
    text = _plain(_visible_text(page))
    prose = re.sub(r"```text\n.*?\n```", "", markdown, flags=re.S)
    for line in prose.splitlines():
        if line.strip() and not re.fullmatch(r"[|\s-]+|!\[[^\]]*\]\([^)]*\)", line):  # images: below
            assert _plain(line) in text, line
    images = re.findall(r'<img src="([^"]+)" alt="([^"]*)"', page)
    names = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(images) == len(names) == 5
    for (src, alt), name in zip(images, names, strict=True):
        assert alt
        assert src == "data:image/png;base64," + base64.b64encode((report.parent / name).read_bytes()).decode()
    assert page.count("<table>") == 2  # the scale-test probes and the search trials
    assert not [p for p in report.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_nothing_on_the_page_points_outside_it(full_results: Path, tmp_path: Path) -> None:  # noqa: F811
    page = write_report(load_results(full_results), tmp_path / "report").with_name("report.html").read_text()

    for attribute in re.findall(r'\b(?:src|href|action|data)="([^"]*)"', page):
        assert attribute.startswith("data:") or attribute.startswith("#"), attribute
    assert "http://" not in page and "https://" not in page and "url(" not in page
    policy = html.unescape(re.search(r'Content-Security-Policy" content="([^"]+)"', page).group(1))
    assert "default-src 'none'" in policy and "img-src data:" in policy
    # The inline style and script are allowed by their hashes, nothing else is.
    for tag in ("style", "script"):
        inline = re.search(rf"<{tag}>(.*?)</{tag}>", page, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy, tag


def test_an_image_without_alt_text_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plot.png").write_bytes(PNG)
    assert 'alt="a plot"' in render_html("# r\n\n![a plot](plot.png)\n", tmp_path)
    with pytest.raises(ReportImageError, match="no alt text"):
        render_html("# r\n\n![](plot.png)\n", tmp_path)
    with pytest.raises(ReportImageError, match="no alt text"):
        render_html("# r\n\n![  ](plot.png)\n", tmp_path)


@pytest.mark.parametrize("src", ["https://example.com/x.png", "../plot.png", "/etc/passwd", "missing.png",
                                 "data:image/png;base64,AAAA"])
def test_an_image_that_is_not_a_file_of_the_report_folder_is_refused(tmp_path: Path, src: str) -> None:
    (tmp_path / "plot.png").write_bytes(PNG)
    with pytest.raises(ReportImageError, match="not a file of the report folder"):
        render_html(f"# r\n\n![a plot]({src})\n", tmp_path)


def test_markup_in_the_results_is_shown_as_text_never_run(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    report.write_text("# r <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
                      "| a | b |\n| --- | --- |\n| <b>1</b> | 2 |\n")
    page = write_html_report(report).read_text()

    body = page.split("<main>", 1)[1]
    assert "<script>alert" not in page and "<img src=x" not in body and "<b>1</b>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the title and the heading, escaped
    assert "<title>r &lt;script&gt;" in page
