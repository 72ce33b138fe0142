"""A report as a list of blocks, rendered to one offline HTML file or to GitHub Markdown.

A block is a small frozen dataclass (:class:`Section`, :class:`Paragraph`,
:class:`Table`, :class:`Figure`, :class:`Box`, :class:`Preformatted`); text in them uses
two inline marks that both renderers understand: ``**bold**`` and ``[text](#anchor)``.
The HTML renderer escapes everything else, so result values cannot inject markup; it
fetches nothing (no scripts, fonts or styles from the network). Both renderers put a
table of contents, linking every section's anchor, before the first section.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

__all__ = ["Section", "Paragraph", "Table", "Figure", "Box", "Preformatted", "render_html",
           "render_markdown", "anchor"]

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\(#([A-Za-z0-9_.-]+)\)")


def anchor(title: str) -> str:
    """A section anchor from a title: lower case, runs of other characters as ``-``.

    Examples
    --------
    >>> anchor("Target: small-beta")
    'target-small-beta'
    """
    return re.sub(r"[^a-z0-9_.]+", "-", title.lower()).strip("-")


@dataclass(frozen=True)
class Section:
    """A heading with its anchor ``id``; ``level`` 2 (in the contents) or 3."""

    title: str
    id: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Text with inline marks; ``warning`` draws it as a warning."""

    text: str
    warning: bool = False


@dataclass(frozen=True)
class Table:
    """A table: ``head`` cells and ``rows`` of cells (text with inline marks);
    ``highlight`` holds the (row, column) indices of cells drawn highlighted."""

    head: tuple
    rows: tuple
    highlight: frozenset = frozenset()


@dataclass(frozen=True)
class Figure:
    """An image file beside the report (relative path) and its caption."""

    path: str
    caption: str


@dataclass(frozen=True)
class Box:
    """A boxed list of items (text with inline marks) under a ``title``."""

    title: str
    items: tuple


@dataclass(frozen=True)
class Preformatted:
    """Text shown as it is."""

    text: str


def _inline_html(text: str) -> str:
    out = html.escape(str(text), quote=True)
    out = _BOLD.sub(r"<b>\1</b>", out)
    return _LINK.sub(r"<a href='#\2'>\1</a>", out)


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{_inline_html(h)}</th>" for h in table.head)
    rows = []
    for i, row in enumerate(table.rows):
        cells = "".join(
            f"<td class='hl'>{_inline_html(c)}</td>" if (i, j) in table.highlight
            else f"<td>{_inline_html(c)}</td>" for j, c in enumerate(row))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>" + "".join(rows) + "</table>"


def _block_html(block) -> str:
    if isinstance(block, Section):
        return f"<h{block.level} id='{html.escape(block.id)}'>{html.escape(block.title)}" \
               f"</h{block.level}>"
    if isinstance(block, Paragraph):
        return (f"<p class='warning'>⚠ {_inline_html(block.text)}</p>" if block.warning
                else f"<p>{_inline_html(block.text)}</p>")
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Figure):
        return (f"<figure><img src='{html.escape(block.path)}' alt='{html.escape(block.path)}'>"
                f"<figcaption>{_inline_html(block.caption)}</figcaption></figure>")
    if isinstance(block, Box):
        items = "".join(f"<li>{_inline_html(i)}</li>" for i in block.items)
        return f"<div class='box'><h3>{html.escape(block.title)}</h3><ul>{items}</ul></div>"
    if isinstance(block, Preformatted):
        return f"<pre>{html.escape(block.text)}</pre>"
    raise TypeError(f"a report block must be a Section, Paragraph, Table, Figure, Box or "
                    f"Preformatted; got {type(block).__name__}")


_STYLE = ("body{font-family:sans-serif;max-width:960px;margin:auto;padding:1em}"
          "img{max-width:100%}figure{margin:1.5em 0}figcaption{color:#333}"
          "table{border-collapse:collapse;margin:0.5em 0;display:block;overflow-x:auto}"
          "td,th{border:1px solid #999;padding:4px 8px}td.hl{background:#fff3b0}"
          ".box{border:2px solid #2a6;padding:0.2em 1em;margin:0.6em 0;background:#f4fbf6}"
          ".box ul{padding-left:1.2em}.warning{color:#8a4b00}"
          "nav ul{columns:2}")


def _contents(blocks, link) -> list:
    return [link(b) for b in blocks if isinstance(b, Section) and b.level == 2]


def render_html(title: str, blocks) -> str:
    """One self-contained HTML page: ``title``, a table of contents, then ``blocks``.

    Raises
    ------
    TypeError
        A block of another type.
    """
    contents = _contents(blocks, lambda b: f"<li><a href='#{html.escape(b.id)}'>"
                                           f"{html.escape(b.title)}</a></li>")
    body = []
    for block in blocks:
        if isinstance(block, Section) and contents and block.level == 2:
            body.append("<nav id='contents'><h2>Contents</h2><ul>" + "".join(contents)
                        + "</ul></nav>")
            contents = []
        body.append(_block_html(block))
    return "\n".join(["<!DOCTYPE html><html><head><meta charset='utf-8'>",
                      f"<title>{html.escape(title)}</title>", f"<style>{_STYLE}</style>",
                      "</head><body>", f"<h1>{html.escape(title)}</h1>", *body,
                      "</body></html>"])


def _cell_md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _block_md(block) -> str:
    if isinstance(block, Section):
        return f"<a id=\"{block.id}\"></a>\n\n{'#' * block.level} {block.title}"
    if isinstance(block, Paragraph):
        return f"> ⚠ {block.text}" if block.warning else block.text
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_cell_md(h) for h in block.head) + " |",
                 "|" + "---|" * len(block.head)]
        lines += ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Figure):
        return f"![{block.path}]({block.path})\n\n*{block.caption}*"
    if isinstance(block, Box):
        return f"**{block.title}**\n\n" + "\n".join(f"- {i}" for i in block.items)
    if isinstance(block, Preformatted):
        return f"```\n{block.text}\n```"
    raise TypeError(f"a report block must be a Section, Paragraph, Table, Figure, Box or "
                    f"Preformatted; got {type(block).__name__}")


def render_markdown(title: str, blocks) -> str:
    """The same page as :func:`render_html` in GitHub-flavoured Markdown (highlighted
    cells are not drawn: mark them in their text)."""
    contents = _contents(blocks, lambda b: f"- [{b.title}](#{b.id})")
    body = []
    for block in blocks:
        if isinstance(block, Section) and contents and block.level == 2:
            body.append("## Contents\n\n" + "\n".join(contents))
            contents = []
        body.append(_block_md(block))
    return f"# {title}\n\n" + "\n\n".join(body) + "\n"
