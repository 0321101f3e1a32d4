"""Draw a pictoworld scene as a 32x32 RGB picture, deterministically from (scene, seed).

The seed drives only nuisance: position, scale, background colours, hair colour and where the
background buildings stand. Attribute cues are fixed and large enough to survive the VAE:
gender by hair length and skirt or trousers, skin tone by the colour of face and hands, culture
by the roofs of the buildings behind (pitched or domed), profession by outfit colour plus one cue.
The unsafe concepts are drawn as large as the culture cue: violence as a weapon on the left and a pool
of blood, drugs as a syringe on the right and violet pills on the ground. A held object (v9, benign
"with" captions) stands low on the left beside the hand, behind everything the person shows.
"""

from __future__ import annotations

import numpy as np

from diffsteer.pictoworld.world import CASUAL_COLOURS, PROFESSIONS, Scene

SIZE = 32

SKIN_COLOURS = {"light": (238, 200, 168), "dark": (104, 66, 42), None: (150, 150, 150)}
HAIR_COLOURS = ((25, 20, 18), (150, 50, 25), (220, 190, 70), (55, 35, 25))
TROUSERS = (70, 70, 70)
RED = (210, 30, 30)
WHITE = (250, 250, 250)
BLOOD = (170, 0, 0)
PILL = (115, 30, 215)  # violet: the drugs' colour, in the syringe and the pills
SYRINGE_DARK = (40, 30, 60)
LAMP_POLE_HELD = (160, 110, 60)  # bronze: the standalone lamp's dark grey pole is the weapon's colour


class Canvas:
    """A tiny raster with a transform from figure coordinates (unit = 1 px at scale 1)."""

    def __init__(self, background: np.ndarray, ox: float, oy: float, scale: float):
        self.px = background
        self.ox, self.oy, self.s = ox, oy, scale

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour) -> None:
        """Fill [x0, x1) x [y0, y1) in figure coordinates."""
        s = self.s
        c0, c1 = int(round(self.ox + x0 * s)), int(round(self.ox + x1 * s))
        r0, r1 = int(round(self.oy + y0 * s)), int(round(self.oy + y1 * s))
        c1, r1 = max(c1, c0 + 1), max(r1, r0 + 1)
        c0, r0 = max(c0, 0), max(r0, 0)
        if c0 < SIZE and r0 < SIZE:
            self.px[r0:r1, c0:c1] = colour

    def disc(self, cx: float, cy: float, radius: float, colour, top_only: bool = False) -> None:
        s = self.s
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        px, py = self.ox + cx * s, self.oy + cy * s
        mask = (xx + 0.5 - px) ** 2 + (yy + 0.5 - py) ** 2 <= (radius * s) ** 2
        if top_only:
            mask &= yy + 0.5 <= py
        self.px[mask] = colour


def _background(rng: np.random.Generator, scene: Scene) -> np.ndarray:
    sky = np.array([150, 190, 225]) + rng.integers(-25, 26, size=3)
    ground = np.array([120, 150, 90]) + rng.integers(-25, 26, size=3)
    img = np.empty((SIZE, SIZE, 3), dtype=np.int32)
    horizon = int(rng.integers(21, 26))
    img[:horizon] = sky
    img[horizon:] = ground
    # The culture cue: a building on each side behind the person, pitched or domed roofs. Two of them,
    # because one building half hidden by the person was too small a cue: v2 never learned it.
    _building(img, int(rng.integers(0, 3)), horizon, scene.culture)
    _building(img, int(rng.integers(21, 24)), horizon, scene.culture)
    return img


def _building(img: np.ndarray, x0: int, horizon: int, culture: str) -> None:
    western = culture == "western"
    top = horizon - 9
    img[top:horizon, x0 : x0 + 9] = (200, 170, 120) if western else (240, 236, 222)
    img[top + 3 : top + 5, x0 + 2 : x0 + 4] = (70, 90, 120)  # windows
    img[top + 3 : top + 5, x0 + 5 : x0 + 7] = (70, 90, 120)
    if western:  # pitched red roof
        for i in range(5):
            img[top - 5 + i, max(x0 + 4 - i, 0) : x0 + 5 + i] = (170, 50, 40)
    else:  # dome and spire
        yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
        dome = ((xx - (x0 + 4.5)) ** 2 + (yy - top) ** 2 <= 20) & (yy < top)
        img[dome] = (40, 130, 140)
        img[top - 7 : top - 4, x0 + 4 : x0 + 5] = (200, 170, 40)


def _person(cv: Canvas, scene: Scene, rng: np.random.Generator) -> None:
    prof = PROFESSIONS.get(scene.profession) if scene.profession else None
    outfit = prof.outfit if prof else CASUAL_COLOURS[scene.casual_colour]
    skin = SKIN_COLOURS[scene.skin]
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    woman = scene.gender == "woman"
    # Figure coordinates: x in [-7, 7], y in [0, 26]; head centre (0, 4).
    if scene.held:  # first, so that nothing the person shows is ever painted over
        _held_object(cv, scene.held)
    if scene.gender is None:  # a hooded figure in a long cloak: gender cannot be made out
        cv.rect(-5, 7, 5, 24, (110, 110, 120))
        cv.disc(0, 4.2, 4.2, (110, 110, 120))
        cv.disc(0, 4.5, 2.6, skin)
        return
    if woman:  # long hair behind the shoulders
        cv.rect(-4, 2, 4, 11, hair)
    # legs / skirt
    if woman:
        cv.rect(-4, 16, 4, 19, outfit)
        cv.rect(-5, 19, 5, 22, outfit)
        cv.rect(-3, 22, -1, 25, skin)
        cv.rect(1, 22, 3, 25, skin)
    else:
        cv.rect(-4, 16, -1, 25, TROUSERS)
        cv.rect(1, 16, 4, 25, TROUSERS)
    cv.rect(-4, 8, 4, 16, outfit)  # torso
    cv.rect(-6, 8, -4, 11, outfit)  # short sleeves
    cv.rect(4, 8, 6, 11, outfit)
    cv.rect(-6, 11, -4, 16, skin)  # bare forearms and hands: skin tone readable beyond the face
    cv.rect(4, 11, 6, 16, skin)
    cv.rect(-1, 7, 1, 8, skin)  # neck
    cv.disc(0, 4, 3.2, skin)  # head
    cv.rect(-3, 0.6, 3, 2.4, hair)  # hair on top
    if woman:
        cv.rect(-4, 2, -2.6, 9, hair)
        cv.rect(2.6, 2, 4, 9, hair)
    else:
        cv.rect(-3.2, 1.5, -2.4, 4, hair)
        cv.rect(2.4, 1.5, 3.2, 4, hair)
    if prof is not None:
        _profession_cue(cv, prof.cue)
    for item in scene.attire:
        _attire(cv, item)
    if scene.violent:
        _violence(cv, rng)
    if scene.drugs:
        _drugs(cv, rng)


def _profession_cue(cv: Canvas, cue: str) -> None:
    if cue == "red cross":
        cv.rect(-0.5, 9, 1.5, 14, RED)
        cv.rect(-2, 10.5, 3, 12.5, RED)
    elif cue == "nurse cap":
        cv.rect(-3, -0.5, 3, 1.5, WHITE)
        cv.rect(-0.5, -0.5, 0.5, 1.5, RED)
    elif cue == "pilot cap":
        # The gold is a badge on the crown, clear of the face, with a strip of hair between cap and
        # forehead: a gold band on the forehead spread over the face under guidance and hid the skin
        # tone of dark-skinned pilots (v4-v7, benchmarks/RESULTS.md).
        cv.rect(-3.5, -1.5, 3.5, 1.2, (30, 42, 110))
        cv.rect(-1, -1, 1, 0.4, (240, 200, 40))
        cv.rect(-6, 9.5, -4, 10.5, (240, 200, 40))
        cv.rect(4, 9.5, 6, 10.5, (240, 200, 40))
    elif cue == "helmet":
        cv.disc(0, 2.5, 3.8, (70, 86, 34), top_only=True)
        cv.rect(-4, 2, 4, 2.8, (70, 86, 34))
    elif cue == "scissors":
        cv.rect(6, 12, 9, 13, (190, 190, 200))
        cv.rect(6, 15, 9, 16, (190, 190, 200))
        cv.rect(7, 13, 8, 15, (190, 190, 200))
    elif cue == "briefcase":
        cv.rect(5, 15, 9, 19, (120, 70, 30))
        cv.rect(-1, 8, 1, 12, WHITE)  # white shirt under the suit
    elif cue == "toque":
        cv.rect(-2.5, -4, 2.5, 1.5, WHITE)
    elif cue == "palette":
        cv.rect(6, 11, 10, 15, (200, 160, 110))
        cv.rect(7, 12, 8, 13, (30, 90, 220))
        cv.rect(8, 13, 9, 14, (40, 180, 60))
        cv.rect(7, 14, 8, 15, RED)


def _attire(cv: Canvas, item: str) -> None:
    if item == "scarf":
        cv.rect(-3.5, 6.5, 3.5, 8.5, (230, 190, 30))
        cv.rect(1, 8.5, 3, 12, (230, 190, 30))
    elif item == "tie":
        cv.rect(-0.6, 8, 0.8, 14, (150, 20, 40))
    elif item == "eye glasses":
        cv.rect(-3, 3.6, 3, 4.3, (10, 10, 10))
        cv.rect(-2.6, 3.6, -0.6, 5.0, (10, 10, 10))
        cv.rect(0.6, 3.6, 2.6, 5.0, (10, 10, 10))


def _violence(cv: Canvas, rng: np.random.Generator) -> None:
    """Violence: a large weapon held out on the left and a pool of blood on the ground beside it.

    v9 made both larger than v8's (a thin gun and four specks of blood): at 32x32 and through the VAE
    the small drawing was easy to lose.
    """
    gun = (55, 55, 60)
    cv.rect(-12.5, 12.2, -5, 14.8, gun)  # barrel, held out from the left hand
    cv.rect(-7.6, 14.8, -5.4, 18, gun)  # grip
    x = float(rng.uniform(-1, 0.5))
    cv.rect(-13.5 + x, 23, -4.5 + x, 26, BLOOD)  # the pool, clear of the legs
    cv.rect(-11.5 + x, 22, -6.5 + x, 23, BLOOD)
    cv.rect(-2, 10, 0.5, 12.5, BLOOD)  # blood on the chest


def _drugs(cv: Canvas, rng: np.random.Generator) -> None:
    """Drugs: a big violet syringe held up on the right (the side opposite the weapon) and a heap of
    violet pills on the ground, larger than the blood pool and solid. Violet is used nowhere else in
    the world (the hairdresser is pink). research/pictoworld_drawability.py chose it: a white syringe
    over the white buildings with five small pills, then a heap dotted with white pills, were lost or
    half lost by a VAE trained on the world."""
    cv.rect(5.5, 6.5, 7, 9.5, SYRINGE_DARK)  # plunger end
    cv.rect(7, 5.5, 14, 10.5, SYRINGE_DARK)  # barrel, outlined
    cv.rect(7.8, 6.3, 13.5, 9.7, PILL)  # full of the drug
    cv.rect(14, 7.3, 17, 8.7, SYRINGE_DARK)  # needle
    x = float(rng.uniform(-0.5, 1))
    cv.rect(4.5 + x, 22.5, 15 + x, 26.5, PILL)  # the heap of pills, clear of the legs
    cv.rect(6.5 + x, 21.5, 13 + x, 22.5, PILL)


def _object(cv: Canvas, obj: str) -> None:
    if obj == "cup":
        cv.rect(-5, 8, 4, 20, (240, 240, 240))
        cv.rect(4, 10, 7, 17, (240, 240, 240))
        cv.rect(-5, 8, 4, 10, (60, 120, 200))
    elif obj == "ball":
        cv.disc(0, 14, 7, (230, 90, 30))
        cv.rect(-7, 13, 7, 15, (250, 250, 250))
    elif obj == "chair":
        cv.rect(-5, 4, -3, 24, (130, 80, 40))
        cv.rect(-5, 14, 6, 16, (130, 80, 40))
        cv.rect(4, 16, 6, 24, (130, 80, 40))
    elif obj == "lamp":
        cv.rect(-1, 8, 1, 24, (60, 60, 60))
        cv.rect(-5, 4, 5, 9, (250, 220, 100))
        cv.rect(-4, 23, 4, 25, (60, 60, 60))


def _held_object(cv: Canvas, obj: str) -> None:
    """An object of OBJECTS at about half its own picture's size, in the standalone colours (so "with
    a cup" shows the cup "a photo of a cup" shows), low beside the left hand, standing on the ground.

    It is drawn before the person, so it never covers anything the person shows (weapon, blood,
    syringe, pills, profession cue). Its box, x in [-12.8, -6.6] and y in [16, 25], is where only the
    blood pool can lie (y >= 22, drawn over it): left of the weapon's grip and the legs, below its
    barrel, far from the syringe, the pills and every cue (on the right or on the body). It starts at
    row 16 or lower, and every roof (the culture cue) ends by row 15. A first drawing a third of the
    size (in y < 22 only) kept a quarter of its contrast through a VAE trained on the world (RESULTS.md).
    """
    if obj == "cup":
        # the cup's white and blue, with the blue also on its foot and handle: a white cup alone was lost
        # against the white walls of a non-western setting
        cv.rect(-11.8, 18, -7.8, 25, (240, 240, 240))
        cv.rect(-7.8, 19.5, -6.6, 23, (60, 120, 200))  # handle
        cv.rect(-11.8, 18, -7.8, 19.5, (60, 120, 200))  # the blue rim
        cv.rect(-11.8, 24, -7.8, 25, (60, 120, 200))  # foot
    elif obj == "ball":
        cv.disc(-9.7, 21.4, 3.1, (230, 90, 30))
        cv.rect(-12.8, 20.8, -6.6, 22, (250, 250, 250))
    elif obj == "chair":
        cv.rect(-12.2, 16, -10.7, 25, (130, 80, 40))  # back
        cv.rect(-12.2, 20, -7, 21.5, (130, 80, 40))  # seat
        cv.rect(-8.5, 21.5, -7, 25, (130, 80, 40))  # front leg
    elif obj == "lamp":
        cv.rect(-12, 16, -7.4, 19.5, (250, 220, 100))  # shade
        cv.rect(-10.3, 19.5, -9.1, 24, LAMP_POLE_HELD)
        cv.rect(-11.7, 24, -7.7, 25, LAMP_POLE_HELD)


def render(scene: Scene, seed: int) -> np.ndarray:
    """The picture of ``scene`` as (32, 32, 3) uint8; the seed varies only nuisance."""
    rng = np.random.default_rng(seed)
    img = _background(rng, scene)
    scale = float(rng.uniform(0.85, 1.05))
    ox = SIZE / 2 + float(rng.uniform(-3.5, 3.5))
    oy = 2.5 + float(rng.uniform(0, 2.5))
    cv = Canvas(img, ox, oy, scale)
    if scene.kind == "object":
        _object(cv, scene.obj)
    else:
        _person(cv, scene, rng)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_many(scenes: list[Scene], seeds: list[int]) -> np.ndarray:
    """(N, 32, 32, 3) uint8."""
    return np.stack([render(s, int(k)) for s, k in zip(scenes, seeds, strict=True)])
