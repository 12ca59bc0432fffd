"""Scatter plots as inline SVG, drawn on the server: the page needs no script and no CDN."""
from __future__ import annotations

import math
from html import escape


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float, log: bool) -> str:
    if log:
        v = 10 ** v
        for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
            if v >= div:
                return f"{v / div:g}{unit}"
        return f"{v:g}"
    return f"{v:.3g}"


def scatter_svg(points: list[tuple[float, float, str]], xlabel: str, ylabel: str, *, title: str,
                log_x: bool = False, width: int = 460, height: int = 320, css_class: str = "plot") -> str:
    """An SVG scatter of (x, y, label); labels become hover titles (escaped)."""
    pts = [(math.log10(x) if log_x else x, y, lab) for x, y, lab in points
           if x is not None and y is not None and (not log_x or x > 0)]
    ml, mr, mt, mb = 56, 14, 28, 44
    pw, ph = width - ml - mr, height - mt - mb
    if pts:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
    else:
        x0 = x1 = y0 = y1 = 0.0
    if log_x and x1 - x0 >= 1:  # decades
        x0, x1 = math.floor(x0), math.ceil(x1)
        xt = [float(v) for v in range(int(x0), int(x1) + 1)]
    elif log_x:  # less than a decade: nice ticks on the real values, placed on the log axis
        pad = max((x1 - x0) * 0.05, 0.01)
        x0, x1 = x0 - pad, x1 + pad
        xt = [math.log10(t) for t in _ticks(10 ** x0, 10 ** x1) if t > 0]
    else:
        padx = (x1 - x0) * 0.05 or 0.05
        x0, x1 = x0 - padx, x1 + padx
        xt = _ticks(x0, x1)
    pady = (y1 - y0) * 0.05 or 0.05
    y0, y1 = y0 - pady, y1 + pady
    yt = _ticks(y0, y1)
    sx = lambda v: ml + (v - x0) / (x1 - x0) * pw
    sy = lambda v: mt + ph - (v - y0) / (y1 - y0) * ph
    out = [f'<svg class="{escape(css_class)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" class="ptitle">{escape(title)}</text>',
           f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for v in xt:
        if x0 <= v <= x1:
            out.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{mt}" y2="{mt + ph}" stroke="#eee"/>'
                       f'<text x="{sx(v):.1f}" y="{mt + ph + 14}" text-anchor="middle" class="tick">{_fmt(v, log_x)}</text>')
    for v in yt:
        if y0 <= v <= y1:
            out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eee"/>'
                       f'<text x="{ml - 4}" y="{sy(v) + 4:.1f}" text-anchor="end" class="tick">{v:.3g}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle" class="axis">{escape(xlabel)}</text>')
    out.append(f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" class="axis" '
               f'transform="rotate(-90 14 {mt + ph / 2})">{escape(ylabel)}</text>')
    for x, y, lab in pts:
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" class="pt"><title>{escape(lab)}</title></circle>')
    out.append("</svg>")
    return "\n".join(out)
