"""Automatic crop and deskew of a document still: find the page, turn it straight, cut the desk away.

Works on a bright page on a darker background (the document camera's desk mat), in pure Python on a
4x-reduced grey copy: an Otsu threshold separates page from desk, the page's four corners are the
extreme points of the (slightly eroded) bright mask along the two diagonals, and the skew is the mean
slope of the top and bottom edges. The full-resolution frame is then rotated about its centre by FFmpeg's
``rotate`` filter and cropped to the page's box.

It only acts when it is confident: the page must cover 15-97 % of the picture, be tilted by at most
``MAX_ANGLE_DEG``, and its corners must form a near-rectangle. Otherwise the still keeps the full frame
(``find_page`` returns None). Nothing here is perspective correction: a page photographed at a slant
stays a trapezoid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av

SCALE = 4
MAX_ANGLE_DEG = 15.0
MIN_AREA, MAX_AREA = 0.15, 0.97


@dataclass(frozen=True)
class Page:
    corners: tuple[tuple[float, float], ...]  # top-left, top-right, bottom-right, bottom-left (full-res px)
    angle_deg: float  # clockwise tilt of the page
    area: float  # fraction of the picture

    def as_dict(self) -> dict[str, object]:
        return {
            "angle_deg": round(self.angle_deg, 2),
            "area": round(self.area, 3),
            "corners": [[round(x), round(y)] for x, y in self.corners],
        }


def otsu(hist: list[int]) -> int:
    total = sum(hist)
    sum_all = sum(i * h for i, h in enumerate(hist))
    best, best_t, w0, sum0 = -1.0, 128, 0, 0.0
    for t in range(256):
        w0 += hist[t]
        if w0 == 0 or w0 == total:
            continue
        sum0 += t * hist[t]
        m0, m1 = sum0 / w0, (sum_all - sum0) / (total - w0)
        between = w0 * (total - w0) * (m0 - m1) ** 2
        if between > best:
            best, best_t = between, t
    return best_t


def find_page(frame: av.VideoFrame) -> Page | None:
    """The page in ``frame``, or None when there is no clear page to crop to."""
    small = frame.reformat(
        width=max(16, frame.width // SCALE // 2 * 2),
        height=max(16, frame.height // SCALE // 2 * 2),
        format="gray",
    )
    plane = small.planes[0]
    sw, sh, stride = small.width, small.height, plane.line_size
    data = bytes(plane)
    rows = [data[y * stride : y * stride + sw] for y in range(sh)]
    hist = [0] * 256
    for row in rows:
        for value in row:
            hist[value] += 1
    t = otsu(hist)
    if sum(hist[t + 1 :]) == 0 or t >= 250:
        return None
    table = bytes(1 if v > t else 0 for v in range(256))
    mask = [row.translate(table) for row in rows]
    tl = br = tr = bl = None
    count = 0
    for y in range(sh - 1):
        here, below = mask[y], mask[y + 1]
        for x in range(sw - 1):
            # eroded mask: a speck or a thin reflection never becomes a corner
            if here[x] and here[x + 1] and below[x]:
                count += 1
                s, d = x + y, x - y
                if tl is None or s < tl[0]:
                    tl = (s, x, y)
                if br is None or s > br[0]:
                    br = (s, x, y)
                if tr is None or d > tr[0]:
                    tr = (d, x, y)
                if bl is None or d < bl[0]:
                    bl = (d, x, y)
    if tl is None or br is None or tr is None or bl is None:
        return None
    area = count / (sw * sh)
    if not MIN_AREA <= area <= MAX_AREA:
        return None
    pts = [(p[1] + 0.5, p[2] + 0.5) for p in (tl, tr, br, bl)]
    top = math.atan2(pts[1][1] - pts[0][1], pts[1][0] - pts[0][0])
    bottom = math.atan2(pts[2][1] - pts[3][1], pts[2][0] - pts[3][0])
    if abs(top - bottom) > math.radians(3):  # not a rectangle seen from above
        return None
    angle = (top + bottom) / 2
    if abs(math.degrees(angle)) > MAX_ANGLE_DEG:
        return None
    sx, sy = frame.width / sw, frame.height / sh
    corners = tuple((x * sx, y * sy) for x, y in pts)
    return Page(corners, math.degrees(angle), area)


def crop_to_page(frame: av.VideoFrame, page: Page, margin: float = 0.01) -> av.VideoFrame:
    """``frame`` turned so the page is straight and cut to it (a ``margin`` inside its edges)."""
    import av.filter

    a = -math.radians(page.angle_deg)  # undo the tilt: turn counter-clockwise by it
    cx, cy = frame.width / 2, frame.height / 2
    turned = [
        (
            cx + (x - cx) * math.cos(a) - (y - cy) * math.sin(a),
            cy + (x - cx) * math.sin(a) + (y - cy) * math.cos(a),
        )
        for x, y in page.corners
    ]
    xs, ys = sorted(p[0] for p in turned), sorted(p[1] for p in turned)
    # the inner box of the straightened page: second-smallest / second-largest of each coordinate
    x0, x1, y0, y1 = xs[1], xs[2], ys[1], ys[2]
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    x0, x1 = max(0, int(x0 + mx)), min(frame.width, int(x1 - mx))
    y0, y1 = max(0, int(y0 + my)), min(frame.height, int(y1 - my))
    w, h = (x1 - x0) // 2 * 2, (y1 - y0) // 2 * 2
    graph = av.filter.Graph()
    src = graph.add_buffer(
        width=frame.width,
        height=frame.height,
        format=frame.format.name,
        time_base=frame.time_base or __import__("fractions").Fraction(1, 25),
    )
    rotate = graph.add("rotate", f"a={a:.6f}:c=black:ow=iw:oh=ih")
    crop = graph.add("crop", f"w={w}:h={h}:x={x0 // 2 * 2}:y={y0 // 2 * 2}")
    sink = graph.add("buffersink")
    graph.link_nodes(src, rotate, crop, sink).configure()
    frame.pts = frame.pts or 0
    graph.push(frame)
    return graph.pull()
