"""Charts as inline SVG drawn on the server: no JavaScript library, no outside host."""

import math

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

W, H = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 40
COLORS = ["#417690", "#e07b39", "#79aec8", "#a33", "#5a8f29", "#8a5ca8"]


def _nice_max(value: float) -> float:
    """A round axis maximum at or above value."""
    if value <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * mag:
            return step * mag
    return 10 * mag


def _n(value: float) -> str:
    """A coordinate with one decimal."""
    return f"{value:.1f}"


def _fmt(value: float) -> str:
    """Short label: 58.8k, 1.2M, 0.25 (three significant digits at most, never 58.779k)."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if value >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:.3g}"


def _linked(part: SafeString, href: str | None) -> SafeString:
    """A chart element as a link to the list of the exchanges it counts."""
    return format_html('<a href="{}">{}</a>', href, part) if href else part


def _frame(labels: list[str], top: float, unit: str) -> SafeString:
    """Axes, horizontal grid lines with values, and a few x labels."""
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    parts = []
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(format_html('<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
                                 '<text x="{}" y="{}" class="ylab">{}{}</text>',
                                 LEFT, W - RIGHT, _n(y), _n(y), LEFT - 6, _n(y + 4), _fmt(top * i / 4), unit))
    n = len(labels)
    step = max(1, n // 6)
    for i in range(0, n, step):
        x = LEFT + plot_w * (i + 0.5) / max(n, 1)
        parts.append(format_html('<text x="{}" y="{}" class="xlab">{}</text>', _n(x), H - BOTTOM + 16, labels[i]))
    return mark_safe("".join(parts))


def _svg(title: str, body: SafeString, legend: SafeString = mark_safe("")) -> SafeString:
    """Wrap a chart body in an accessible SVG element."""
    return format_html('<figure class="chart"><figcaption>{}</figcaption>{}'
                       '<svg viewBox="0 0 {} {}" role="img" aria-label="{}">{}</svg></figure>',
                       title, legend, W, H, title, body)


def _legend(names: list[str]) -> SafeString:
    """Colour keys for series names."""
    return format_html('<div class="legend">{}</div>', format_html_join(
        "", '<span><i style="background:{}"></i>{}</span>', ((COLORS[i % len(COLORS)], n) for i, n in enumerate(names))))


def bar_chart(title: str, labels: list[str], values: list[float], unit: str = "",
              links: list[str] | None = None) -> SafeString:
    """Vertical bars, one per label, each with a tooltip (and a link when `links` gives one per label)."""
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    n = max(len(values), 1)
    bw = plot_w / n
    bars = mark_safe("".join(_linked(format_html(
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {}{}</title></rect>',
        _n(LEFT + i * bw + bw * 0.1), _n(TOP + plot_h - plot_h * v / top), _n(bw * 0.8), _n(plot_h * v / top),
        COLORS[0], labels[i], _fmt(v) if v else v, unit), links[i] if links else None) for i, v in enumerate(values)))
    return _svg(title, mark_safe(_frame(labels, top, unit) + bars))


def line_chart(title: str, labels: list[str], series: dict[str, list[float | None]], unit: str = "",
               links: list[str] | None = None) -> SafeString:
    """Lines (one per series) with dots; gaps where a bucket has no data; a dot links to `links[i]` when given."""
    values = [v for vs in series.values() for v in vs if v is not None]
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    n = max(len(labels), 1)
    body = [_frame(labels, top, unit)]
    for s, (name, vs) in enumerate(series.items()):
        color = COLORS[s % len(COLORS)]
        points = [(LEFT + plot_w * (i + 0.5) / n, TOP + plot_h - plot_h * v / top, v, labels[i], i)
                  for i, v in enumerate(vs) if v is not None]
        segments, current = [], []
        for i, v in enumerate(vs):  # break the line where data is missing
            if v is None:
                if current:
                    segments.append(current)
                current = []
                continue
            current.append(f"{LEFT + plot_w * (i + 0.5) / n:.1f},{TOP + plot_h - plot_h * v / top:.1f}")
        if current:
            segments.append(current)
        for seg in segments:
            body.append(format_html('<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>',
                                    " ".join(seg), color))
        body.append(mark_safe("".join(_linked(format_html(
            '<circle cx="{}" cy="{}" r="{}" fill="{}"><title>{} {}: {}{}</title></circle>', _n(x), _n(y),
            4 if links else 2.5, color, name, lab, v, unit), links[i] if links else None)
            for x, y, v, lab, i in points)))
    return _svg(title, mark_safe("".join(body)), _legend(list(series)))


def hbar_chart(title: str, rows: list[tuple[str, list[float]]], names: list[str],
               links: list[str | None] | None = None) -> SafeString:
    """Horizontal stacked bars, one row per label (e.g. tokens by model: input + output); a label links to
    `links[r]` when given. Long labels are shortened, whole on hover."""
    row_h = 24
    height = TOP + row_h * max(len(rows), 1) + 10
    top = _nice_max(max((sum(v) for _, v in rows), default=0))
    label_w, plot_w = 250, W - 250 - 60
    parts = []
    for r, (label, vals) in enumerate(rows):
        y, x = TOP + r * row_h, label_w
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(_linked(format_html('<text x="{}" y="{}" class="ylab"><title>{}</title>{}</text>', label_w - 6,
                                         y + 15, label, short), links[r] if links else None))
        for s, v in enumerate(vals):
            w = plot_w * v / top
            parts.append(format_html('<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} {}: {}'
                                     '</title></rect>', _n(x), y + 3, _n(w), row_h - 6, COLORS[s % len(COLORS)],
                                     label, names[s], int(v)))
            x += w
        parts.append(format_html('<text x="{}" y="{}" class="vlab">{}</text>', _n(x + 4), y + 15, _fmt(sum(vals))))
    return format_html('<figure class="chart"><figcaption>{}</figcaption>{}<svg viewBox="0 0 {} {}" role="img" '
                       'aria-label="{}">{}</svg></figure>', title, _legend(names), W, height, title,
                       mark_safe("".join(parts)))
