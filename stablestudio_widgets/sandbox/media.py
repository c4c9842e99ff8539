"""Real, deterministic media for the sandbox: PNG images and short H.264 videos made locally.

The sandbox imitates the paid service without a network, but what it returns must still be a real
picture or video at the size the parameters ask for (widgets display it, tests decode it). Every
output is seeded from the request, so the same request gives the same bytes and different prompts
give visibly different scenes. The prompt, the model and a "SANDBOX" mark are drawn on everything
so nobody mistakes it for a paid generation.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from typing import Any

import av
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..catalog import Route, load

__all__ = ["image_size", "render_image", "render_svg", "render_video"]

IMAGE_LONG_SIDE = 1024  # models without a size parameter return about 1 MP
LONG_SIDES = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}
VIDEO_LONG_SIDE = 640  # small on purpose: a 25 s video has to render in a couple of seconds
VIDEO_FPS = 12
PNG_LEVEL = 1  # several times faster than zlib's default; the scenes are smooth and compress anyway
ASPECT_PARAMS = ("aspectRatio", "aspect_ratio")
DURATION_PARAMS = ("duration", "seconds", "durationSeconds")

Size = tuple[int, int]
RGB = tuple[int, int, int]


# ----------------------------------------------------------------------------- public interface


def image_size(route: Route, params: dict, inputs: Sequence[bytes] = ()) -> Size:
    """Pixel width, height for a route's params (aspect ratio + size/resolution).

    ``inputs`` only matters for routes with neither an aspect nor a size parameter (nano-banana
    edit): like the real model they keep the first input image's aspect ratio.
    """
    size = _value(route, params, "size")
    if size and size != "auto":
        return _dims(size)
    ratio = _ratio_of(route, params, _input_ratio(inputs) or 1.0)
    resolution = str(_value(route, params, "resolution") or "")
    if resolution.upper().endswith("MP"):
        pixels = float(resolution[:-2]) * 1024 * 1024
        return _round16(math.sqrt(pixels * ratio)), _round16(math.sqrt(pixels / ratio))
    long_side = LONG_SIDES.get(str(_value(route, params, "imageSize")), IMAGE_LONG_SIDE)
    if ratio >= 1:
        return long_side, max(1, round(long_side / ratio))
    return max(1, round(long_side * ratio)), long_side


def render_image(*, prompt: str, model: str, route_id: str, params: dict, inputs: list[bytes],
                 route: Route | None = None) -> bytes:
    """PNG bytes at the requested aspect ratio and size.

    With input images (edit routes) the first one, tinted and framed, is the picture and the
    others are shown as thumbnails, so anyone can see the inputs were used.
    """
    size = image_size(route or load().route(route_id), params, inputs)
    rng = _rng(prompt, model, route_id, params, inputs)
    images = _decode(inputs)
    img = _edited(images[0], size, rng) if images else _Scene(rng, size).frame(0.0)
    _draw_overlay(img, prompt=prompt, title="Generated image", caption=f"{size[0]}x{size[1]}",
                  accent=_accent(rng))
    _draw_thumbnails(img, images[1:])
    return _png(img)


def render_svg(*, prompt: str, model: str, route_id: str, params: dict, inputs: list[bytes],
               route: Route | None = None) -> bytes:
    """A vectorized image (``*/vectorize``): flat shapes in the input's main colours, as SVG text."""
    side = int(params.get("target_size") or 1024)
    rng = _rng(prompt, model, route_id, params, inputs)
    images = _decode(inputs[:1])
    if images:
        palette = images[0].convert("RGB").resize((64, 64)).quantize(4).convert("RGB").getcolors(4096) or []
        colours = [c for _, c in sorted(palette, reverse=True)][:4]
    else:
        colours = [_accent(rng) for _ in range(4)]
    fill = [f"rgb({r},{g},{b})" for r, g, b in colours]
    shapes = [f'<rect width="{side}" height="{side}" fill="{fill[0]}"/>']
    for i, colour in enumerate(fill[1:], 1):
        r = side * (0.42 - 0.1 * i)
        cx, cy = side * rng.uniform(0.3, 0.7), side * rng.uniform(0.3, 0.7)
        shapes.append(f'<circle cx="{cx:.0f}" cy="{cy:.0f}" r="{r:.0f}" fill="{colour}"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{side}" height="{side}" viewBox="0 0 {side} {side}">'
            + "".join(shapes) + "</svg>").encode()


def render_video(
    *, prompt: str, model: str, route_id: str, params: dict, inputs: list[bytes], route: Route | None = None
) -> tuple[bytes, str, bytes]:
    """(video bytes, mime type e.g. 'video/mp4', PNG thumbnail bytes = first frame).

    Text-to-video pans across a generated landscape while the sun moves; image-to-video starts
    on the input image, slowly zooms in and, given a second (last-frame) input, cross-fades to it.
    """
    route = route or load().route(route_id)
    size = _video_size(route, params, inputs)
    seconds = _duration(route, params)
    rng = _rng(prompt, model, route_id, params, inputs)
    images = _decode(inputs[:2])
    count = max(1, round(seconds * VIDEO_FPS))

    accent = _accent(rng)
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))  # drawn once, pasted on every frame
    _draw_overlay(overlay, prompt=prompt, title="Generated video",
                  caption=f"{seconds:g}s · {size[0]}x{size[1]}", accent=accent)
    picture = _zoom_fade(images, size) if images else _Scene(rng, size, pan=0.45).frame

    def frames() -> Iterator[Image.Image]:
        for i in range(count):
            img = picture(i / max(count - 1, 1))
            img.paste(overlay, (0, 0), overlay)
            _draw_progress(img, i / VIDEO_FPS, (i + 1) / count, accent)
            yield img

    data, mime, first = _encode(frames(), size, VIDEO_FPS)
    return data, mime, _png(first)


# ----------------------------------------------------------------------------- sizes and params


def _value(route: Route, params: dict, name: str) -> Any:
    """The param's wire value, else the route's default, else None (the route may lack it)."""
    if params.get(name) is not None:
        return params[name]
    param = route.params.get(name)
    return param.default if param else None


def _dims(text: Any) -> Size:
    """'1280x720' or '1280*720' -> (1280, 720)."""
    w, h = str(text).lower().replace("*", "x").split("x")
    return int(w), int(h)


def _ratio_of(route: Route, params: dict, fallback: float) -> float:
    """Width / height from the aspect param ('19.5:9'), or ``fallback`` if the route has none."""
    for name in ASPECT_PARAMS:
        value = _value(route, params, name)
        if value:
            w, h = str(value).split(":")
            return float(w) / float(h)
    return fallback


def _input_ratio(inputs: Sequence[bytes]) -> float | None:
    """The first decodable input's displayed aspect ratio, from its header only (no decoding)."""
    for data in inputs:
        try:
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees
                    w, h = h, w
                return w / h
        except Exception:
            continue
    return None


def _round16(x: float) -> int:
    return max(16, round(x / 16) * 16)


def _video_size(route: Route, params: dict, inputs: Sequence[bytes]) -> Size:
    """The service's frame size scaled down to VIDEO_LONG_SIDE, even (yuv420p needs it)."""
    size = _value(route, params, "size")
    if size:
        w, h = _dims(size)
    else:
        ratio = _ratio_of(route, params, _input_ratio(inputs[:1]) or 16 / 9)
        resolution = _value(route, params, "resolution") or _value(route, params, "outputResolution")
        short = int(str(resolution or "720p").lower().rstrip("p"))
        w, h = (short * ratio, short) if ratio >= 1 else (short, short / ratio)
    scale = min(1.0, VIDEO_LONG_SIDE / max(w, h))
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)


def _duration(route: Route, params: dict) -> float:
    for name in DURATION_PARAMS:
        value = _value(route, params, name)
        if value is not None:
            return float(str(value).rstrip("s"))
    return 5.0


def _rng(prompt: str, model: str, route_id: str, params: dict, inputs: Sequence[bytes]) -> random.Random:
    """A generator seeded from the whole request, so equal requests draw equal pictures."""
    digests = [hashlib.sha256(data).hexdigest() for data in inputs]
    blob = json.dumps([prompt, model, route_id, params, digests], sort_keys=True, default=str)
    return random.Random(int.from_bytes(hashlib.sha256(blob.encode()).digest(), "big"))


def _decode(inputs: Sequence[bytes]) -> list[Image.Image]:
    """Input images as upright RGB; undecodable bytes are skipped (the sandbox never fails on them)."""
    out = []
    for data in inputs:
        try:
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (2048, 2048))  # JPEG only: decode at a reduced scale, much faster
            out.append(ImageOps.exif_transpose(img).convert("RGB"))
        except Exception:
            continue
    return out


# ----------------------------------------------------------------------------- pictures


def _hls(hue: float, lum: float, sat: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(hue % 1.0, min(max(lum, 0.0), 1.0), min(max(sat, 0.0), 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t),
            round(a[2] + (b[2] - a[2]) * t))


def _accent(rng: random.Random) -> RGB:
    return _hls(rng.random(), 0.6, 0.85)


def _gradient(size: Size, top: RGB, bottom: RGB) -> Image.Image:
    """A vertical gradient, made from one column and lookup tables rather than per pixel."""
    ramp = Image.linear_gradient("L").resize((1, size[1]), Image.Resampling.BILINEAR)
    bands = [ramp.point([round(top[c] + (bottom[c] - top[c]) * i / 255) for i in range(256)])
             for c in range(3)]
    return Image.merge("RGB", bands).resize(size, Image.Resampling.NEAREST)


@dataclass
class _Ridge:
    base: float  # mean height of the ridge, as a fraction of the frame from the top
    waves: list[tuple[float, float, float]]  # (amplitude, cycles per long side, phase)
    colour: RGB
    speed: float  # parallax: how far this layer moves during the pan, in frame widths


class _Scene:
    """A seeded landscape: gradient sky, sun or moon with a glow, stars or clouds, ridged hills.

    ``frame(p)`` draws it at progress ``p`` in [0, 1]: stills use p=0, videos pan the hills with
    parallax (``pan`` frame widths) while the sun moves. The sky and the sun sprite are made
    once, so a frame costs a copy, a paste and a few polygons.
    """

    def __init__(self, rng: random.Random, size: Size, pan: float = 0.0):
        self.size, self.pan = size, pan
        w, h = size
        self.unit = math.sqrt(w * h)
        hue = 0.5 + 0.35 * rng.random()  # cyan to violet; dusk and dawn add warm horizons
        mood = rng.choice(("day", "dusk", "night", "dawn"))
        top_lum, bottom_lum = {"day": (0.42, 0.78), "dusk": (0.3, 0.62), "night": (0.07, 0.24),
                               "dawn": (0.5, 0.82)}[mood]
        top = _hls(hue, top_lum, 0.55)
        bottom = _hls(hue + (0.45 if mood in ("dusk", "dawn") else 0.08), bottom_lum, 0.75)
        self.sky = _gradient(size, top, bottom)
        sun = {"day": (255, 246, 220), "dusk": (255, 160, 80), "night": (232, 236, 250),
               "dawn": (255, 205, 160)}[mood]
        self.sun_path = (rng.uniform(0.15, 0.5), rng.uniform(0.5, 0.85), rng.uniform(0.12, 0.35))
        self.sun = _glow(round(self.unit * rng.uniform(0.04, 0.08)), sun)
        self.clouds = []
        if mood == "night":
            stars = ImageDraw.Draw(self.sky)
            for _ in range(rng.randint(60, 140)):
                x, y, r = rng.random() * w, rng.random() * h * 0.6, self.unit * rng.uniform(0.001, 0.003)
                stars.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255))
        else:  # (x, y, width, height) as fractions
            self.clouds = [(rng.random(), rng.uniform(0.08, 0.4), rng.uniform(0.08, 0.2),
                            rng.uniform(0.02, 0.05)) for _ in range(rng.randint(2, 6))]
        land = rng.random()
        haze = _mix(bottom, (0, 0, 0), 0.1)
        layers = rng.randint(3, 4)
        self.ridges = []
        for k in range(layers):
            near = (k + 1) / layers
            dark = _hls(land + rng.uniform(-0.05, 0.05), 0.42 - 0.3 * near, 0.45 + 0.2 * rng.random())
            waves = [(rng.uniform(0.01, 0.06) * (1.5 - near), rng.uniform(0.5, 3.5) * (i + 1),
                      rng.random() * 2 * math.pi) for i in range(3)]
            self.ridges.append(_Ridge(0.5 + 0.35 * near - 0.1 * rng.random(), waves,
                                      _mix(haze, dark, 0.35 + 0.65 * near), 0.15 + 0.85 * near))

    def frame(self, p: float) -> Image.Image:
        w, h = self.size
        img = self.sky.copy()
        x0, x1, height = self.sun_path
        sx, sy = (x0 + (x1 - x0) * p) * w, (height + 0.1 * (1 - math.sin(math.pi * p))) * h
        img.paste(self.sun, (round(sx - self.sun.width / 2), round(sy - self.sun.height / 2)), self.sun)
        draw = ImageDraw.Draw(img, "RGBA")
        for cx, cy, cw, ch in self.clouds:
            x = ((cx + 0.15 * p * self.pan) % 1.2 - 0.1) * w
            for dx, dy, s in ((-0.5, 0.1, 0.7), (0.0, 0.0, 1.0), (0.5, 0.15, 0.6)):
                rx, ry = cw * w * s / 2, ch * self.unit * s / 2
                px, py = x + dx * cw * w * 0.6, cy * h + dy * ch * self.unit
                draw.ellipse((px - rx, py - ry, px + rx, py + ry), fill=(255, 255, 255, 70))
        xs = [w * i / 160 for i in range(161)]
        long = max(w, h)  # wave lengths follow the long side, so portrait hills are not spikes
        for ridge in self.ridges:
            shift = p * self.pan * ridge.speed
            ridge_line = [(x, h * (ridge.base + sum(a * math.sin(2 * math.pi * f * (x / long + shift) + phase)
                                                    for a, f, phase in ridge.waves)))
                          for x in xs]
            draw.polygon([*ridge_line, (w, h), (0, h)], fill=ridge.colour)
        return img


def _glow(radius: int, colour: RGB) -> Image.Image:
    """An RGBA sun/moon: a solid disc in a soft halo three times its radius."""
    side = max(radius, 1) * 6
    # radial_gradient is 0 in the centre and ~180 in the middle of each edge (255 in the corners)
    falloff = [round(255 * 0.75 * (1 - min(d / 176, 1)) ** 2.2) for d in range(256)]
    alpha = Image.radial_gradient("L").point(falloff).resize((side, side), Image.Resampling.BILINEAR)
    ss = min(4, max(1, 2048 // side))  # supersample the disc's edge, but not a 4K sun
    disc = Image.new("L", (side * ss, side * ss), 0)
    c, r = side * ss / 2, radius * ss
    ImageDraw.Draw(disc).ellipse((c - r, c - r, c + r, c + r), fill=255)
    alpha.paste(255, (0, 0), disc.reduce(ss))
    sprite = Image.new("RGBA", (side, side), colour)
    sprite.putalpha(alpha)
    return sprite


def _fit(img: Image.Image, size: Size) -> Image.Image:
    """Scale and centre-crop to exactly ``size``, so the input fills the frame."""
    return ImageOps.fit(img, size, Image.Resampling.BILINEAR)


def _edited(source: Image.Image, size: Size, rng: random.Random) -> Image.Image:
    """The input tinted and framed in a seeded colour: recognisably the input, visibly edited."""
    tint = _hls(rng.random(), 0.5, 0.8)
    img = Image.blend(_fit(source, size), Image.new("RGB", size, tint), 0.18)
    border = max(2, round(math.sqrt(size[0] * size[1]) * 0.012))
    ImageDraw.Draw(img).rectangle((0, 0, size[0] - 1, size[1] - 1), outline=tint, width=border)
    return img


def _zoom_fade(images: list[Image.Image], size: Size) -> Callable[[float], Image.Image]:
    """Image-to-video motion: the first image zooms in slowly; a second one fades in over it.

    At p=0 the frame is exactly the (fitted) first image, at p=1 exactly the second one.
    """
    zoom = 1.15
    big = [_fit(img, (round(size[0] * zoom), round(size[1] * zoom))) for img in images]

    def view(img: Image.Image, z: float) -> Image.Image:
        cw, ch = img.width / z, img.height / z
        left, top = (img.width - cw) / 2, (img.height - ch) / 2
        return img.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))

    def picture(p: float) -> Image.Image:
        ease = p * p * (3 - 2 * p)
        first = view(big[0], 1 + (zoom - 1) * ease)
        if len(big) < 2:
            return first
        return Image.blend(first, view(big[1], zoom - (zoom - 1) * ease), ease)

    return picture


# ----------------------------------------------------------------------------- text


@cache
def _font(size: int) -> Any:
    """Pillow's bundled font (Aileron, Latin only): nothing to download, any size."""
    return ImageFont.load_default(size=size)


def _unit(size: Size) -> int:
    """The prompt's font size; everything else on the overlay is scaled from it."""
    return max(12, round(math.sqrt(size[0] * size[1]) / 30))


def _wrap(text: str, font: Any, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; over-long words are split, overflow ends in '…'."""
    lines: list[str] = []
    line = ""
    words = text.split()[::-1]  # a stack: pop() gives the next word
    while words and len(lines) < max_lines:
        word = words.pop()
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
        elif line:  # start a new line with this word
            lines.append(line)
            line = ""
            words.append(word)
        else:  # a single word wider than the line
            cut = _fitting_prefix(word, font, width)
            lines.append(word[:cut])
            if word[cut:]:
                words.append(word[cut:])
    if line:
        lines.append(line)
    if words:
        last = lines[-1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "…"
    return lines or [""]


def _fitting_prefix(word: str, font: Any, width: float) -> int:
    """Length of the longest prefix of ``word`` that fits (at least 1, so wrapping progresses)."""
    lo, hi = 1, len(word) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if font.getlength(word[:mid]) <= width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _draw_overlay(img: Image.Image, *, prompt: str, title: str, caption: str, accent: RGB) -> None:
    """Title and caption top left, a SANDBOX mark top right, the wrapped prompt at the bottom.

    No model or route name is drawn: blind comparisons on the sandbox must stay blind.

    Works on an RGB picture (blended in place) and on a transparent RGBA layer (videos draw it
    once and paste it on every frame).
    """
    w, h = img.size
    unit = _unit(img.size)
    margin, pad = round(unit * 0.8), round(unit * 0.45)
    draw = ImageDraw.Draw(img, "RGBA")
    panel = (0, 0, 0, 150)

    big, small = _font(round(unit * 1.15)), _font(max(10, round(unit * 0.7)))
    text_w = w - 2 * margin - 2 * pad
    model_text, caption_text = _wrap(title, big, text_w, 1)[0], _wrap(caption, small, text_w, 1)[0]
    line_big, line_small = round(unit * 1.15 * 1.2), round(unit * 0.7 * 1.25)
    box_w = max(big.getlength(model_text), small.getlength(caption_text)) + 2 * pad
    box_h = line_big + line_small + 2 * pad
    draw.rounded_rectangle((margin, margin, margin + box_w, margin + box_h), radius=pad, fill=panel)
    draw.rectangle((margin, margin + pad, margin + max(2, pad // 3), margin + box_h - pad), fill=accent)
    draw.text((margin + pad, margin + pad), model_text, font=big, fill=(255, 255, 255))
    draw.text((margin + pad, margin + pad + line_big), caption_text, font=small, fill=(220, 220, 220))

    mark = _font(max(10, round(unit * 0.6)))
    mark_w, mark_h = mark.getlength("SANDBOX") + 2 * pad, round(unit * 0.6 * 1.2) + pad
    right = w - margin
    draw.rounded_rectangle((right - mark_w, margin, right, margin + mark_h), radius=pad // 2,
                           fill=(255, 214, 0, 230))
    draw.text((right - mark_w + pad, margin + pad // 2), "SANDBOX", font=mark, fill=(20, 20, 20))

    font, line_h = _font(unit), round(unit * 1.3)
    lines = _wrap(prompt, font, text_w, max(1, min(6, int(h * 0.4 / line_h))))
    top = h - margin - len(lines) * line_h - 2 * pad
    draw.rounded_rectangle((margin, top, w - margin, h - margin), radius=pad, fill=panel)
    for i, text in enumerate(lines):
        draw.text((margin + pad, top + pad + i * line_h), text, font=font, fill=(255, 255, 255))


def _draw_thumbnails(img: Image.Image, images: list[Image.Image]) -> None:
    """Extra input images as framed thumbnails down the right edge (at most four, then '+n')."""
    w, h = img.size
    unit = _unit(img.size)
    side = round(min(w, h) * 0.18)
    x, y = w - round(unit * 0.8) - side, round(unit * 2.4)
    draw = ImageDraw.Draw(img)
    for src in images[:4]:
        draw.rectangle((x - 3, y - 3, x + side + 2, y + side + 2), fill=(255, 255, 255))
        img.paste(_fit(src, (side, side)), (x, y))
        y += side + round(unit * 0.5)
    if len(images) > 4:
        draw.text((x, y), f"+{len(images) - 4}", font=_font(unit), fill=(255, 255, 255),
                  stroke_width=2, stroke_fill=(0, 0, 0))


def _draw_progress(img: Image.Image, t: float, done: float, accent: RGB) -> None:
    """The clock ('t=1.2s') under the SANDBOX mark and a progress bar along the bottom edge."""
    w, h = img.size
    unit = _unit(img.size)
    font = _font(max(10, round(unit * 0.75)))
    draw = ImageDraw.Draw(img)
    draw.text((w - round(unit * 0.8) - font.getlength("t=00.0s"), round(unit * 2.2)), f"t={t:.1f}s",
              font=font, fill=(255, 255, 255), stroke_width=max(1, unit // 10), stroke_fill=(0, 0, 0))
    draw.rectangle((0, h - max(2, unit // 5), round(w * done), h), fill=accent)


# ----------------------------------------------------------------------------- encoding


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


@cache
def _video_codec() -> tuple[str, str, str]:
    """(encoder, container, mime): H.264 in MP4 when PyAV's FFmpeg has an encoder, else WebM."""
    for name, fmt, mime in (("libx264", "mp4", "video/mp4"), ("libopenh264", "mp4", "video/mp4"),
                            ("libvpx-vp9", "webm", "video/webm"), ("libvpx", "webm", "video/webm")):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # not built into this FFmpeg
            continue
        return name, fmt, mime
    raise RuntimeError("PyAV's FFmpeg has no H.264, VP9 or VP8 encoder")


_ENCODER_OPTIONS = {
    "libx264": {"preset": "veryfast", "crf": "26", "tune": "animation"},
    "libopenh264": {"b": "1M"},
    "libvpx-vp9": {"crf": "34", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"crf": "10", "b": "1M", "deadline": "realtime", "cpu-used": "8"},
}


def _encode(frames: Iterator[Image.Image], size: Size, fps: int) -> tuple[bytes, str, Image.Image]:
    """Encode to an in-memory, browser-streamable file; returns (bytes, mime, first frame).

    One encoder thread and bitexact muxing (no creation time or library version in the file)
    keep the bytes identical for identical frames.
    """
    codec, fmt, mime = _video_codec()
    buf = io.BytesIO()
    first = None
    muxer = {"fflags": "+bitexact", **({"movflags": "+faststart"} if fmt == "mp4" else {})}

    def reopen(url: str, flags: int, options: dict) -> io.BytesIO:
        # +faststart moves the index to the front by re-reading what was written; FFmpeg asks
        # for that by file name, which an in-memory buffer does not have, so hand it a copy.
        return io.BytesIO(buf.getvalue())

    with av.open(buf, "w", format=fmt, container_options=muxer, io_open=reopen) as out:
        stream = out.add_stream(codec, rate=fps, options=_ENCODER_OPTIONS[codec])
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = tick = Fraction(1, fps)  # the muxer changes stream.time_base later
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = fps * 2
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for i, img in enumerate(frames):
            if first is None:
                first = img.copy()
            frame = av.VideoFrame.from_image(img)
            frame.pts, frame.time_base, frame.duration = i, tick, 1
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert first is not None
    return buf.getvalue(), mime, first
