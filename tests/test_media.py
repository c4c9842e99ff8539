"""The sandbox's synthesised media: real files at the requested sizes, deterministic, inputs used."""

from __future__ import annotations

import io

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from stablestudio_widgets.catalog import load
from stablestudio_widgets.sandbox import media


def image(route_id: str, params: dict | None = None, prompt: str = "a lighthouse at dusk",
          inputs: list[bytes] | None = None) -> Image.Image:
    data = media.render_image(prompt=prompt, model=route_id.split("/")[0], route_id=route_id,
                              params=params or {}, inputs=inputs or [])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def video(route_id: str, params: dict | None = None, prompt: str = "a drone shot over hills",
          inputs: list[bytes] | None = None) -> tuple[bytes, str, bytes]:
    return media.render_video(prompt=prompt, model=route_id.split("/")[0], route_id=route_id,
                              params=params or {}, inputs=inputs or [])


def decode(data: bytes) -> tuple[av.container.InputContainer, list[Image.Image]]:
    container = av.open(io.BytesIO(data))
    frames = [f.to_image() for f in container.decode(video=0)]
    return container, frames


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480), fmt: str = "PNG") -> bytes:
    return encoded(Image.new("RGB", size, colour), fmt)


def pattern(size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A picture with structure (gradient, disc, bars) so resemblance means more than a mean colour."""
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(img)
    draw.ellipse((size[0] * 0.25, size[1] * 0.15, size[0] * 0.75, size[1] * 0.85), fill=(210, 30, 30))
    for x in range(0, size[0], size[0] // 8):
        draw.rectangle((x, 0, x + size[0] // 32, size[1]), fill=(20, 200, 40))
    return img


def mean(img: Image.Image, box: tuple[float, float, float, float] = (0, 0, 1, 1)) -> list[float]:
    """Mean RGB over a box given in fractions of the image."""
    w, h = img.size
    crop = img.convert("RGB").crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
    return ImageStat.Stat(crop).mean


def count(img: Image.Image, ranges) -> int:
    """How many pixels have every channel inside its (low, high) range."""
    masks = [band.point(lambda v, lo=lo, hi=hi: 255 if lo <= v <= hi else 0)
             for band, (lo, hi) in zip(img.convert("RGB").split(), ranges, strict=True)]
    return ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2]).histogram()[255]


def difference(a: Image.Image, b: Image.Image, box=(0.1, 0.3, 0.9, 0.65)) -> float:
    """Mean absolute pixel difference (0-255) over a box clear of the text overlay."""
    b = b.convert("RGB").resize(a.size)
    w, h = a.size
    crop = (round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h))
    diff = ImageChops.difference(a.convert("RGB").crop(crop), b.crop(crop))
    return sum(ImageStat.Stat(diff).mean) / 3


# ----------------------------------------------------------------------------- image sizes


SIZES = [
    ("nano-banana/generate", {}, (1024, 1024)),
    ("nano-banana/generate", {"aspectRatio": "16:9"}, (1024, 576)),
    ("nano-banana/generate", {"aspectRatio": "9:16"}, (576, 1024)),
    ("nano-banana-pro/generate", {}, (1024, 1024)),
    ("nano-banana-pro/generate", {"imageSize": "2K", "aspectRatio": "9:16"}, (1152, 2048)),
    ("nano-banana-pro/generate", {"imageSize": "4K", "aspectRatio": "16:9"}, (4096, 2304)),
    ("gpt-image-2/generate", {}, (1024, 1024)),  # size "auto"
    ("gpt-image-2/generate", {"size": "1536x1024"}, (1536, 1024)),
    ("nano-banana/generate", {"imageSize": "512", "aspectRatio": "8:1"}, (512, 64)),
    ("gpt-image-1.5/generate", {"size": "1024x1536", "quality": "high"}, (1024, 1536)),
    ("flux-2-pro/generate", {}, (1024, 1024)),
    ("flux-2-pro/generate", {"aspect_ratio": "16:9", "resolution": "0.5 MP"}, (960, 544)),
    ("flux-2-pro/generate", {"aspect_ratio": "2:3", "resolution": "2 MP"}, (1184, 1776)),
    ("grok/generate", {"aspect_ratio": "19.5:9"}, (1024, 473)),
    ("grok/generate", {"aspect_ratio": "9:20"}, (461, 1024)),
    ("grok/generate", {"aspect_ratio": "4:3"}, (1024, 768)),
]


@pytest.mark.parametrize(("route_id", "params", "expected"), SIZES)
def test_image_size_and_png_match(route_id, params, expected):
    assert media.image_size(load().route(route_id), params) == expected
    img = image(route_id, params)
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.size == expected


@pytest.mark.parametrize("resolution", ["0.5 MP", "1 MP", "2 MP"])
@pytest.mark.parametrize("ratio", ["1:1", "16:9", "9:16", "4:5", "3:2"])
def test_flux_megapixels_at_aspect(resolution, ratio):
    w, h = media.image_size(load().route("flux-2-pro/generate"), {"aspect_ratio": ratio, "resolution": resolution})
    assert w % 16 == 0 and h % 16 == 0
    assert w * h == pytest.approx(float(resolution.split()[0]) * 1024 * 1024, rel=0.04)
    rw, rh = map(float, ratio.split(":"))
    assert w / h == pytest.approx(rw / rh, rel=0.03)


def test_4k_square_renders():
    img = image("nano-banana-pro/generate", {"imageSize": "4K"})
    assert img.size == (4096, 4096)


# ----------------------------------------------------------------------------- image content


def test_images_are_deterministic():
    args = dict(prompt="same prompt", model="grok", route_id="grok/generate", params={"aspect_ratio": "3:2"},
                inputs=[])
    assert media.render_image(**args) == media.render_image(**args)


def test_different_prompts_look_different():
    prompts = ["a cat on a sofa", "a dog in the snow", "a castle in the sky", "an underwater city"]
    imgs = [image("nano-banana/generate", prompt=p) for p in prompts]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert difference(imgs[i], imgs[j], box=(0, 0, 1, 1)) > 15, (prompts[i], prompts[j])


def test_model_and_params_change_the_picture():
    a = image("nano-banana/generate", {"aspectRatio": "1:1"})
    b = image("nano-banana/generate", {"aspectRatio": "1:1"}, prompt="a lighthouse at dusk!")
    c = image("gpt-image-2/generate", {"size": "1024x1024"})
    assert difference(a, b, box=(0, 0, 1, 1)) > 5
    assert difference(a, c, box=(0, 0, 1, 1)) > 5


def test_overlay_is_drawn_on_the_picture():
    """The prompt panel at the bottom is dark and holds white text; the SANDBOX mark is yellow."""
    img = image("nano-banana/generate", prompt="A very legible prompt")
    panel = img.crop((30, 880, 990, 990))
    assert max(ImageStat.Stat(panel.convert("L")).extrema[0]) > 240  # white text
    assert ImageStat.Stat(panel.convert("L")).median[0] < 90  # on a dark panel
    r, g, b = ImageStat.Stat(img.crop((900, 30, 975, 52))).median  # around the dark letters
    assert r > 220 and g > 180 and b < 60


def test_long_prompts_are_wrapped_and_truncated():
    img = image("grok/generate", {"aspect_ratio": "16:9"}, prompt="word " * 2000 + "x" * 5000)
    assert img.size == (1024, 576)
    font = media._font(20)
    lines = media._wrap("word " * 2000, font, 300, 3)
    assert len(lines) == 3 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 300 for line in lines)
    pieces = media._wrap("y" * 500, font, 100, 50)  # one word wider than the line is split
    assert "".join(pieces) == "y" * 500 and all(font.getlength(p) <= 100 for p in pieces)
    assert media._wrap("", font, 100, 3) == [""]


def test_edit_uses_the_input_image():
    red = image("nano-banana/edit", {"images": ["u"]}, inputs=[solid((220, 20, 20))])
    blue = image("nano-banana/edit", {"images": ["u"]}, inputs=[solid((20, 20, 220))])
    r_red, _, b_red = mean(red, (0.1, 0.25, 0.8, 0.7))
    r_blue, _, b_blue = mean(blue, (0.1, 0.25, 0.8, 0.7))
    assert r_red - r_blue > 100 and b_blue - b_red > 100


def test_edit_keeps_structure_of_the_input():
    src = pattern((800, 600))
    out = image("gpt-image-1.5/edit", {"images": ["u"], "size": "1024x1024"}, inputs=[encoded(src, "JPEG")])
    assert out.size == (1024, 1024)
    assert difference(out, media._fit(src, out.size)) < 40
    other = image("gpt-image-1.5/edit", {"images": ["u"], "size": "1024x1024"}, inputs=[solid((128, 128, 128))])
    assert difference(other, media._fit(src, out.size)) > 60


def test_edit_without_aspect_param_keeps_the_input_aspect():
    assert image("nano-banana/edit", {"images": ["u"]}, inputs=[solid((0, 90, 0), (800, 400))]).size == (1024, 512)
    assert image("nano-banana/edit", {"images": ["u"]}, inputs=[solid((0, 90, 0), (300, 600), "WEBP")]).size == (
        512, 1024)
    # routes with an aspect or size param follow the param, not the input
    assert image("flux-2-pro/edit", {"images": ["u"], "aspect_ratio": "16:9"},
                 inputs=[solid((0, 90, 0), (300, 600))]).size == (1360, 768)


def test_edit_honours_exif_rotation():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    buf = io.BytesIO()
    Image.new("RGB", (800, 400), (200, 0, 0)).save(buf, "JPEG", exif=exif)
    assert image("nano-banana/edit", {"images": ["u"]}, inputs=[buf.getvalue()]).size == (512, 1024)


def test_extra_inputs_appear_as_thumbnails():
    base = solid((30, 30, 30), (1000, 1000))
    one = image("nano-banana/edit", {"images": ["a"]}, inputs=[base])
    three = image("nano-banana/edit", {"images": ["a", "b", "c"]},
                  inputs=[base, solid((0, 255, 0), (300, 300), "JPEG"), solid((255, 0, 255), (200, 400))])
    green, magenta = ((0, 60), (200, 255), (0, 60)), ((200, 255), (0, 60), (200, 255))
    assert count(three, green) > 20_000 and count(three, magenta) > 20_000
    assert count(one, green) < 100


def test_broken_inputs_are_ignored():
    img = image("nano-banana/edit", {"images": ["u"]}, inputs=[b"not an image"])
    assert img.size == (1024, 1024)


# ----------------------------------------------------------------------------- video


VIDEOS = [
    # route, params, frame size, seconds
    ("veo-3.1/generate", {}, (640, 360), 8),
    ("veo-3.1-fast/generate", {"aspectRatio": "9:16", "durationSeconds": "4"}, (360, 640), 4),
    ("sora-2/generate", {"size": "720x1280"}, (360, 640), 4),
    ("sora-2-pro/generate", {"size": "1024x1792", "seconds": "10"}, (366, 640), 10),
    ("wan-2.6/t2v", {"size": "1920*1080", "duration": "5"}, (640, 360), 5),
    ("seedance/t2v", {"aspect_ratio": "21:9"}, (640, 274), 5),
    ("seedance-fast/t2v", {"aspect_ratio": "3:4", "resolution": "480p", "duration": "4"}, (480, 640), 4),
    ("grok-video/generate", {"aspect_ratio": "1:1", "resolution": "480p", "duration": "3"}, (480, 480), 3),
]


@pytest.mark.parametrize(("route_id", "params", "size", "seconds"), VIDEOS)
def test_video_decodes_at_size_and_duration(route_id, params, size, seconds):
    data, mime, thumb = video(route_id, params)
    container, frames = decode(data)
    stream = container.streams.video[0]
    if mime == "video/mp4":
        assert stream.codec_context.name == "h264"
        assert data.find(b"moov") < data.find(b"mdat")  # +faststart: index first, so it streams
    else:
        assert mime == "video/webm" and stream.codec_context.name in ("vp9", "vp8")
    assert stream.codec_context.format.name == "yuv420p"
    assert (stream.width, stream.height) == size and size[0] % 2 == 0 and size[1] % 2 == 0
    assert len(frames) == round(media.VIDEO_FPS * seconds)
    assert container.duration / av.time_base == pytest.approx(seconds, abs=0.1)
    assert all(f.size == size for f in frames)
    thumbnail = Image.open(io.BytesIO(thumb))
    assert thumbnail.format == "PNG" and thumbnail.size == size
    assert difference(thumbnail, frames[0], box=(0, 0, 1, 1)) < 6  # thumbnail = first frame


def test_video_is_deterministic_and_animated():
    args = dict(prompt="same", model="sora-2", route_id="sora-2/generate", params={}, inputs=[])
    first, second = media.render_video(**args), media.render_video(**args)
    assert first == second
    _, frames = decode(first[0])
    assert difference(frames[0], frames[-1], box=(0, 0.3, 1, 0.75)) > 3  # the scene moves


def test_video_prompts_differ():
    a, _, thumb_a = video("veo-3.1/generate", {"durationSeconds": "4"}, prompt="a red fox")
    b, _, thumb_b = video("veo-3.1/generate", {"durationSeconds": "4"}, prompt="a blue whale")
    assert a != b
    assert difference(Image.open(io.BytesIO(thumb_a)), Image.open(io.BytesIO(thumb_b)), box=(0, 0, 1, 1)) > 10


def test_video_default_duration_comes_from_the_route():
    container, frames = decode(video("seedance/t2v")[0])  # route default: "5"
    assert len(frames) == 5 * media.VIDEO_FPS
    assert container.duration / av.time_base == pytest.approx(5, abs=0.1)



def test_image_to_video_starts_from_the_input():
    src = pattern((1280, 720))
    data, _, thumb = video("seedance/i2v", {"image": "u"}, inputs=[encoded(src, "JPEG")])
    _, frames = decode(data)
    fitted = media._fit(src, frames[0].size)
    assert difference(frames[0], fitted) < 20
    assert difference(Image.open(io.BytesIO(thumb)), fitted) < 15
    assert difference(frames[-1], frames[0], box=(0, 0.3, 1, 0.65)) > 3  # it zooms


def test_image_to_video_without_aspect_param_uses_the_input_aspect():
    container, frames = decode(video("wan-2.6/i2v", {"image": "u"}, inputs=[solid((200, 0, 0), (600, 900))])[0])
    assert frames[0].size == (426, 640)


def test_last_frame_cross_fades_to_the_second_input():
    red, blue = solid((220, 20, 20), (1280, 720)), solid((20, 20, 220), (1280, 720), "JPEG")
    _, frames = decode(video("veo-3.1/generate", {"image": "a", "lastFrame": "b", "durationSeconds": "4"},
                             inputs=[red, blue])[0])
    start, middle, end = (mean(f, (0.1, 0.3, 0.9, 0.7)) for f in (frames[0], frames[len(frames) // 2], frames[-1]))
    assert start[0] > 180 and start[2] < 60
    assert end[2] > 180 and end[0] < 60
    assert 60 < middle[0] < 180 and 60 < middle[2] < 180
