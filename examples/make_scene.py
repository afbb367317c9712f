"""Generate `examples/station.png`: a 3840×2160 scene whose answer is in fine print.

A departure board stands small in a wide station hall. At the 2048-px view the model first sees,
its letters are ~5 px tall and unreadable; cut from the full-resolution image they are legible.
Run `python examples/make_scene.py` to rebuild it (deterministic; no downloads).
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 3840, 2160
BOARD = (2640, 1400, 2960, 1540)
"""The departure board, in original pixels: the region worth zooming into."""
ROWS = [
    ("08:15", "LYON", "3"),
    ("08:42", "GENEVA", "7"),
    ("09:05", "MILAN", "12"),
    ("09:30", "TURIN", "5"),
]
QUESTION = "Which platform does the train to Geneva leave from?"
OPTIONS = ["3", "7", "12", "5"]


def draw_scene() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (205, 210, 215))
    draw = ImageDraw.Draw(image)
    for y in range(0, 900, 6):  # glass roof: a soft vertical gradient
        shade = 150 + y // 12
        draw.rectangle((0, y, WIDTH, y + 6), fill=(shade, shade + 10, min(shade + 30, 255)))
    rng = random.Random(7)
    for x in range(0, WIDTH, 320):  # columns and benches
        draw.rectangle((x + 140, 700, x + 180, 1900), fill=(90, 95, 105))
        draw.rectangle((x + 40, 1820, x + 280, 1850), fill=(120, 80, 50))
    for _ in range(40):  # travellers as simple figures
        x, y = rng.randrange(0, WIDTH - 40), rng.randrange(1600, 2000)
        colour = tuple(rng.randrange(30, 220) for _ in range(3))
        draw.ellipse((x, y - 60, x + 30, y - 30), fill=(230, 200, 170))
        draw.rectangle((x - 5, y - 30, x + 35, y + 60), fill=colour)  # type: ignore[arg-type]
    draw.rectangle((0, 1900, WIDTH, HEIGHT), fill=(150, 150, 145))
    draw_board(draw)
    return image


def draw_board(draw: ImageDraw.ImageDraw) -> None:
    x1, y1, x2, y2 = BOARD
    draw.rectangle((x1 - 6, y1 - 6, x2 + 6, y2 + 6), fill=(40, 40, 40))
    draw.rectangle(BOARD, fill=(10, 20, 60))
    font = ImageFont.load_default(size=14)
    draw.text((x1 + 10, y1 + 8), "DEPARTURES     PLATFORM", font=font, fill=(250, 200, 40))
    for row, (time, city, platform) in enumerate(ROWS):
        y = y1 + 36 + row * 24
        draw.text((x1 + 12, y), f"{time}  {city}", font=font, fill=(240, 240, 240))
        draw.text((x1 + 240, y), platform, font=font, fill=(240, 240, 240))


def main() -> None:
    path = Path(__file__).with_name("station.png")
    draw_scene().save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
