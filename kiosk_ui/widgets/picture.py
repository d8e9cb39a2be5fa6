"""``Picture``: an RGB image drawn with half blocks, scaled to the space the layout gives it.

Each terminal cell shows two pixels stacked vertically: the character "▀" with the top pixel as its
foreground colour and the bottom pixel as its background. A terminal cell is about twice as tall as it is
wide, so half-block pixels are square and the image keeps its aspect when it is scaled by one factor on
both axes.

Used for the clerk's video preview on the call screen (a 64x36 frame about 4 times a second) and meant
for document photos too, so it knows nothing about calls or the bus::

    picture.update_rgb(64, 36, rgb_bytes)     # row-major RGB, w * h * 3 bytes
    picture.clear("对方画面暂停")               # no image: a centred placeholder text

Why it is cheap enough for video on a Pi: a new image only stores the bytes and marks the widget dirty;
the scaled lines are built when Textual paints (so frames arriving faster than the screen paints cost
nothing but the copy), once per image and size, with a pure-Python box filter, runs of equal cells merged
into one segment and the Rich styles memoised (the driver caches each style's escape codes on the style
object, so a reused style is never re-encoded). 64x36 into 96x27 cells takes a few milliseconds.
"""

from __future__ import annotations

from rich.color import Color, ColorType
from rich.color_triplet import ColorTriplet
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

HALF_BLOCK = "▀"
QUANT = 0xFCFCFC  # keep the top 6 bits of each channel
# Memo sizes: a frame of video has a few thousand distinct colour pairs; clearing beats an LRU's
# bookkeeping, and 16k entries of small objects is a few MB at most.
_MEMO_MAX = 16384


def fit(w: int, h: int, cols: int, rows: int) -> tuple[int, int]:
    """The largest (width, height) in pixels a ``w`` x ``h`` image can be scaled to, keeping its aspect,
    inside ``cols`` x ``rows`` cells (each cell is one pixel wide and two pixels tall). (0, 0) if nothing
    fits."""
    if w <= 0 or h <= 0 or cols <= 0 or rows <= 0:
        return 0, 0
    # Compare w:h with cols:(2*rows) in integers: the binding axis decides the scale.
    if cols * h <= 2 * rows * w:  # width binds
        return cols, max(1, (h * cols) // w)
    return max(1, (w * 2 * rows) // h), 2 * rows


def _spans(src: int, dst: int) -> list[tuple[int, int]]:
    """For each of ``dst`` output pixels, the half-open range of the ``src`` input pixels it covers.

    Downscaling averages a block (a face stays a face at 40 pixels wide instead of aliasing into noise);
    upscaling repeats the nearest pixel."""
    return [(i * src // dst, max(i * src // dst + 1, (i + 1) * src // dst)) for i in range(dst)]


def resample(w: int, h: int, data: bytes, ow: int, oh: int) -> list[bytes]:
    """Scale a row-major RGB image to ``ow`` x ``oh``; returns one ``bytes`` row of ``ow * 3`` per line.

    A separable box filter: rows are averaged horizontally first, then columns vertically, so each input
    byte is touched about once when shrinking."""
    xs = _spans(w, ow)
    stride = w * 3
    narrow: list[list[int]] = []  # h rows of ow*3 channel values
    for y in range(h):
        row = data[y * stride : (y + 1) * stride]
        out: list[int] = []
        for a, b in xs:
            if b - a == 1:
                out.extend(row[a * 3 : a * 3 + 3])
            else:
                block = row[a * 3 : b * 3]
                n = b - a
                out.append(sum(block[0::3]) // n)
                out.append(sum(block[1::3]) // n)
                out.append(sum(block[2::3]) // n)
        narrow.append(out)
    rows: list[bytes] = []
    for a, b in _spans(h, oh):
        if b - a == 1:
            rows.append(bytes(narrow[a]))
        else:
            n = b - a
            rows.append(bytes(sum(column) // n for column in zip(*narrow[a:b], strict=True)))
    return rows


class _Palette:
    """Rich styles for (top, bottom) colour pairs, memoised: building a ``Style`` is the costly part of
    a frame, and the terminal driver caches escape codes per style object."""

    def __init__(self) -> None:
        self._colors: dict[int, Color] = {}
        self._styles: dict[int, Style] = {}

    def color(self, rgb: int) -> Color:
        color = self._colors.get(rgb)
        if color is None:
            if len(self._colors) >= _MEMO_MAX:
                self._colors.clear()
            # Color.from_rgb would format the same name through two more calls; this is the hot path.
            triplet = ColorTriplet(rgb >> 16, (rgb >> 8) & 0xFF, rgb & 0xFF)
            color = self._colors[rgb] = Color(f"#{rgb:06x}", ColorType.TRUECOLOR, triplet=triplet)
        return color

    def style(self, top: int, bottom: int | None) -> Style:
        key = (top << 25) | (bottom if bottom is not None else 1 << 24)
        style = self._styles.get(key)
        if style is None:
            if len(self._styles) >= _MEMO_MAX:
                self._styles.clear()
            background = None if bottom is None else self.color(bottom)
            style = self._styles[key] = Style.from_color(self.color(top), background)
        return style


def half_block_lines(width: int, height: int, rows: list[bytes], palette: _Palette) -> list[list[Segment]]:
    """Segments for an image of ``len(rows)`` pixel rows of ``width`` pixels, two rows per line.

    An odd last row is drawn with the widget's background under it. ``height`` is ``ceil(rows / 2)``."""
    lines: list[list[Segment]] = []
    for line in range(height):
        top = rows[2 * line]
        bottom = rows[2 * line + 1] if 2 * line + 1 < len(rows) else None
        segments: list[Segment] = []
        run_key: tuple[int, int | None] | None = None
        run = 0
        for x in range(0, width * 3, 3):
            # 6 bits per channel: invisible at this size, and it lets camera noise fall into the same
            # memoised styles and longer runs from one frame to the next.
            t = ((top[x] << 16) | (top[x + 1] << 8) | top[x + 2]) & QUANT
            b = None if bottom is None else ((bottom[x] << 16) | (bottom[x + 1] << 8) | bottom[x + 2]) & QUANT
            key = (t, b)
            if key == run_key:
                run += 1
                continue
            if run_key is not None:
                segments.append(Segment(HALF_BLOCK * run, palette.style(*run_key)))
            run_key, run = key, 1
        if run_key is not None:
            segments.append(Segment(HALF_BLOCK * run, palette.style(*run_key)))
        lines.append(segments)
    return lines


class Picture(Widget):
    """An RGB image (or a placeholder text when there is none), centred and scaled to fit.

    ``update_rgb(w, h, data)`` shows an image; ``clear(text)`` removes it and shows ``text`` centred.
    Its content size, when the layout asks (``width``/``height: auto``), is the image at one pixel per
    cell column; give it ``1fr`` (or a fixed size) to have it fill the space instead.
    """

    DEFAULT_CSS = """
    Picture { width: 1fr; height: 1fr; }
    """

    def __init__(
        self,
        placeholder: str = "",
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._placeholder = placeholder
        self._image: tuple[int, int, bytes] | None = None
        self._generation = 0  # bumped by every update/clear: the cache key of the built lines
        self._built: tuple[int, Size] | None = None
        self._lines: list[Strip] = []
        self._palette = _Palette()

    # --- what callers use ----------------------------------------------------------------------------

    def update_rgb(self, w: int, h: int, data: bytes) -> None:
        """Show a ``w`` x ``h`` row-major RGB image (``data`` is exactly ``w * h * 3`` bytes).

        Raises ``ValueError`` for a size that does not match the data (the old image stays)."""
        if w <= 0 or h <= 0 or len(data) != w * h * 3:
            raise ValueError(f"an RGB image of {w}x{h} needs {max(w * h * 3, 0)} bytes, got {len(data)}")
        self._image = (w, h, bytes(data))
        self._changed()

    def clear(self, placeholder: str = "") -> None:
        """Drop the image and show ``placeholder`` (centred; "" for an empty area)."""
        if self._image is None and placeholder == self._placeholder:
            return  # nothing to repaint: a stale-picture timer may call this often
        self._image = None
        self._placeholder = placeholder
        self._changed()

    @property
    def has_image(self) -> bool:
        return self._image is not None

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(w, h) of the image shown, or None while the placeholder shows."""
        return None if self._image is None else self._image[:2]

    @property
    def placeholder(self) -> str:
        return self._placeholder

    # --- Textual ---------------------------------------------------------------------------------------

    def _changed(self) -> None:
        self._generation += 1
        self.refresh()

    def get_content_width(self, container: Size, viewport: Size) -> int:
        if self._image is not None:
            return self._image[0]
        return Text(self._placeholder).cell_len

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if self._image is not None:
            w, h, _ = self._image
            _, oh = fit(w, h, width, (h + 1) // 2)
            return (oh + 1) // 2
        return 1

    def render_line(self, y: int) -> Strip:
        size = self.size
        if self._built != (self._generation, size):
            self._lines = self._build(size)
            self._built = (self._generation, size)
        if 0 <= y < len(self._lines):
            return self._lines[y]
        return Strip.blank(size.width)

    def _build(self, size: Size) -> list[Strip]:
        """All lines of the widget at ``size``: the image centred, or the placeholder in the middle."""
        cols, rows = size
        if cols <= 0 or rows <= 0:
            return []
        # Lines from render_line are drawn as given: the widget's own colours (CSS) must be in them.
        base = self.rich_style
        if self._image is None:
            return self._placeholder_lines(cols, rows, base)
        w, h, data = self._image
        ow, oh = fit(w, h, cols, rows)
        if ow == 0:
            return []
        height = (oh + 1) // 2
        image = half_block_lines(ow, height, resample(w, h, data, ow, oh), self._palette)
        left = (cols - ow) // 2
        right = cols - ow - left
        top = (rows - height) // 2
        pad_left = [Segment(" " * left, base)] if left else []
        pad_right = [Segment(" " * right, base)] if right else []
        blank = Strip.blank(cols, base)
        lines = [blank] * top
        lines.extend(Strip([*pad_left, *segments, *pad_right], cols) for segments in image)
        lines.extend([blank] * (rows - len(lines)))
        return lines

    def _placeholder_lines(self, cols: int, rows: int, base: Style) -> list[Strip]:
        blank = Strip.blank(cols, base)
        if not self._placeholder:
            return [blank] * rows
        console = self.app.console
        text = Text(self._placeholder, style=base, justify="center")
        wrapped = console.render_lines(text, console.options.update(width=cols, height=None), pad=True)
        wrapped = wrapped[:rows]
        top = (rows - len(wrapped)) // 2
        lines = [blank] * top + [Strip(line, cols) for line in wrapped]
        lines.extend([blank] * (rows - len(lines)))
        return lines
