"""The shared page layout of ``/web`` pages: one Jinja2 layout with autoescaping, and small fragments.

Every value that reaches a page goes through Jinja2 with autoescaping on, so a dataset named
``<script>`` shows as text. A module builds its body from a template string and a context;
``PageLayout.page`` wraps it in the common header, navigation and footer.

::

    layout = PageLayout(nav=[("Datasets", "/web/inventory/datasets")])
    layout.page("Datasets", "<p>{{ count }} datasets named {{ name }}</p>", count=3, name="<b>")
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import jinja2
from markupsafe import Markup

LAYOUT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }} - {{ site_title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
header { background: #24435f; color: #fff; padding: 0.6em 1em; }
header a { color: #fff; margin-right: 1em; text-decoration: none; }
header .site { font-weight: bold; margin-right: 1.5em; }
header .user { float: right; opacity: 0.8; }
main { padding: 1em; }
table.inventory { border-collapse: collapse; margin: 0.5em 0 1.5em; }
table.inventory th, table.inventory td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
table.inventory td.number { text-align: right; }
.bar { background: #4a7fb0; height: 0.9em; display: inline-block; }
footer { color: #777; font-size: 0.8em; padding: 1em; }
</style>
</head>
<body>
<header><span class="site">{{ site_title }}</span>
{% for label, href in nav %}<a href="{{ href }}">{{ label }}</a>{% endfor %}
<span class="user">{{ user }}</span></header>
<main>
<h1>{{ title }}</h1>
{{ body }}
</main>
<footer>{{ footer }}</footer>
</body>
</html>
"""

TABLE = """<table class="inventory{% if css %} {{ css }}{% endif %}">
<tr>{% for column in columns %}<th>{{ column }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for cell in row %}
<td{% if cell is number %} class="number"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% else %}<tr><td colspan="{{ columns|length }}">{{ empty }}</td></tr>
{% endfor %}</table>"""


class PageLayout:
    """The common frame of every ``/web`` page, and escaped rendering of template strings.

    Templates are compiled once per source string and cached; rendering is thread-safe.
    """

    def __init__(self, site_title: str = "workbench inventory", nav: Iterable[tuple[str, str]] = (),
                 footer: str = "workbench.inventory") -> None:
        self.site_title = site_title
        self.nav: list[tuple[str, str]] = list(nav)
        self.footer = footer
        self.environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                              trim_blocks=True, lstrip_blocks=True)
        self._compiled: dict[str, jinja2.Template] = {}
        self._lock = threading.Lock()
        self._layout = self.template(LAYOUT)
        self._table = self.template(TABLE)

    def template(self, source: str) -> jinja2.Template:
        """The compiled template of ``source`` (cached)."""
        with self._lock:
            compiled = self._compiled.get(source)
            if compiled is None:
                compiled = self._compiled[source] = self.environment.from_string(source)
            return compiled

    def fragment(self, source: str, **context: Any) -> Markup:
        """Render a template string (values escaped) into markup that pages can embed as is."""
        return Markup(self.template(source).render(**context))

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "nothing to show",
              css: str = "") -> Markup:
        """An HTML table; cells are escaped unless they are ``Markup`` (e.g. a link fragment)."""
        return Markup(self._table.render(columns=columns, rows=rows, empty=empty, css=css))

    def link(self, href: str, text: Any) -> Markup:
        """``<a href=...>text</a>`` with both escaped."""
        return self.fragment("<a href=\"{{ href }}\">{{ text }}</a>", href=href, text=text)

    def page(self, title: str, body: str | Markup, user: str = "", **context: Any) -> str:
        """A whole page: the layout around ``body``.

        A plain ``str`` body is a template rendered with ``context`` (escaped); ``Markup`` is
        embedded as it is.
        """
        if not isinstance(body, Markup):
            body = self.fragment(body, **context)
        return self._layout.render(title=title, body=body, user=user, nav=self.nav,
                                   site_title=self.site_title, footer=self.footer)


__all__ = ["PageLayout", "Markup"]
