"""Procedural faces from an explicit 68-point landmark model (iBUG / dlib 68-point order).

A face is a set of 3-D points in a *face frame* built from per-identity parameters
(`FaceIdentity`) and a per-appearance expression (`Expression`); it is rotated (pitch, yaw,
roll), projected orthographically, scaled and drawn with anti-aliased OpenCV primitives.

Face frame: x towards the image right (for a frontal face), y down, z towards the camera; one
unit is half the face width at the ear line; the eye line is y = 0 and x = 0 is the midline.
Landmark order (dlib): jaw 0-16 (image left to right), brows 17-21 (image-left brow, outer to
inner) and 22-26, nose bridge 27-30, nose base 31-35, image-left eye 36-41 (outer corner first),
image-right eye 42-47 (inner corner first), outer lips 48-59, inner lips 60-67.

Left / right: "left" always means the *person's* left, which is the image right for a frontal
face (COCO / DeepPrivacy convention). The image-right eye (42-47) is the person's left eye.

Pose convention: yaw > 0 turns the face towards the image right (nose moves right, the
person's left side turns away); pitch > 0 tilts the face down; roll > 0 rotates it clockwise
on screen. Image coordinates are OpenCV pixel coordinates (pixel centres at integers).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SHIFT = 4  # Sub-pixel bits for cv2 drawing; small faces need sub-pixel placement.
SUBPIXEL = float(1 << SHIFT)
_IDENTITY_STREAM = 99  # RNG key component of identity parameters (images use 0 and 1).

# Anchor colours (RGB), interpolated / jittered per identity.
_SKIN_RGB = np.array(
    [
        (255, 224, 200),
        (241, 194, 160),
        (224, 172, 135),
        (198, 140, 100),
        (165, 110, 75),
        (125, 82, 55),
        (90, 58, 40),
    ],
    np.float64,
)
_HAIR_RGB = np.array(
    [
        (22, 18, 18),
        (55, 38, 28),
        (100, 68, 42),
        (150, 110, 70),
        (215, 185, 125),
        (150, 65, 35),
        (150, 150, 150),
        (225, 225, 220),
    ],
    np.float64,
)
_HAIR_P = np.array([0.30, 0.22, 0.14, 0.09, 0.09, 0.05, 0.07, 0.04])
_IRIS_RGB = np.array(
    [(90, 55, 30), (45, 30, 25), (70, 110, 160), (80, 115, 75), (110, 90, 50)], np.float64
)
_IRIS_P = np.array([0.4, 0.3, 0.12, 0.08, 0.1])

BALD, SHORT, MEDIUM, LONG = 0, 1, 2, 3


def bgr(rgb) -> tuple[float, float, float]:
    r, g, b = (min(255.0, max(0.0, float(v))) for v in rgb)
    return (b, g, r)


def scaled(bgr, factor: float) -> tuple[float, float, float]:
    return tuple(min(255.0, max(0.0, c * factor)) for c in bgr)


def skin_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A random skin tone (BGR), also used for skin-coloured distractors and occluders."""
    t = rng.uniform(0, len(_SKIN_RGB) - 1)
    i = min(int(t), len(_SKIN_RGB) - 2)
    rgb = _SKIN_RGB[i] + (t - i) * (_SKIN_RGB[i + 1] - _SKIN_RGB[i])
    return bgr(rgb * rng.normal(1.0, 0.035, 3))


@dataclasses.dataclass(frozen=True)
class FaceIdentity:
    """Per-identity appearance: colours (BGR 0-255) and shape parameters in face units."""

    identity: int
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lip: tuple[float, float, float]
    hair_style: int  # BALD, SHORT, MEDIUM or LONG.
    hair_volume: float  # Hair thickness above the skull.
    bangs: float  # 0 = none, else how far the fringe comes down the forehead (0..1).
    glasses: bool
    chin_y: float  # Chin (landmark 8) height below the eye line: face height / width.
    jaw_top: float  # Height of landmarks 0 and 16.
    jaw_power: float  # Superellipse exponent of the jaw: 2 = round, larger = square.
    chin_taper: float
    forehead_h: float  # Hairline height above the eye line.
    face_depth: float
    eye_sep: float  # Eye centre distance from the midline.
    eye_w: float
    eye_open: float  # Eye opening height / eye width.
    brow_y: float
    brow_arch: float
    brow_thick: float
    brow_tilt: float
    nose_len: float  # Nose tip (landmark 30) height.
    nose_w: float  # Half-width of the nose base.
    nose_z: float  # Nose protrusion.
    mouth_pos: float  # Mouth line between nose base (0) and chin (1).
    mouth_w: float  # Half-width of the mouth.
    upper_lip: float
    lower_lip: float


def sample_identity(identity: int, seed: int = 0) -> FaceIdentity:
    """The parameters of `identity`; a pure function of (seed, identity)."""
    rng = np.random.default_rng([seed, _IDENTITY_STREAM, identity])
    skin = skin_colour(rng)
    hair = bgr(_HAIR_RGB[rng.choice(len(_HAIR_RGB), p=_HAIR_P)] * rng.normal(1.0, 0.08, 3))
    iris = bgr(_IRIS_RGB[rng.choice(len(_IRIS_RGB), p=_IRIS_P)] * rng.normal(1.0, 0.08, 3))
    # Lips: redder and darker than the skin.
    lip = (
        skin[0] * rng.uniform(0.55, 0.7),
        skin[1] * rng.uniform(0.5, 0.62),
        min(255.0, skin[2] * rng.uniform(0.78, 0.9)),
    )
    style = int(rng.choice(4, p=[0.1, 0.45, 0.2, 0.25]))
    chin_y = rng.uniform(1.4, 1.85)
    forehead_h = rng.uniform(0.85, 1.15)
    nose_len = rng.uniform(0.42, 0.62)
    return FaceIdentity(
        identity=int(identity),
        skin=skin,
        hair=hair,
        iris=iris,
        lip=lip,
        hair_style=style,
        hair_volume=0.0 if style == BALD else rng.uniform(0.08, 0.4),
        bangs=0.0 if style == BALD or rng.random() < 0.7 else rng.uniform(0.3, 0.7),
        glasses=bool(rng.random() < 0.12),
        chin_y=chin_y,
        jaw_top=rng.uniform(-0.08, 0.08),
        jaw_power=rng.uniform(1.9, 2.8),
        chin_taper=rng.uniform(0.0, 0.22),
        forehead_h=forehead_h,
        face_depth=rng.uniform(0.65, 0.85),
        eye_sep=rng.uniform(0.38, 0.5),
        eye_w=rng.uniform(0.27, 0.37),
        eye_open=rng.uniform(0.3, 0.45),
        brow_y=rng.uniform(-0.38, -0.26),
        brow_arch=rng.uniform(0.01, 0.1),
        brow_thick=rng.uniform(0.05, 0.11),
        brow_tilt=rng.uniform(-0.06, 0.06),
        nose_len=nose_len,
        nose_w=rng.uniform(0.14, 0.24),
        nose_z=rng.uniform(0.3, 0.55),
        mouth_pos=rng.uniform(0.33, 0.45),
        mouth_w=rng.uniform(0.3, 0.44),
        upper_lip=rng.uniform(0.05, 0.1),
        lower_lip=rng.uniform(0.07, 0.13),
    )


@dataclasses.dataclass(frozen=True)
class Expression:
    """Per-appearance expression (face units)."""

    mouth_open: float = 0.0
    smile: float = 0.0  # Mouth-corner lift.
    brow_raise: float = 0.0
    eye_open_scale: float = 1.0
    gaze: tuple[float, float] = (0.0, 0.0)  # Iris offset, fraction of the eye half-size.
    exaggerated: bool = False  # The WIDER `expression` attribute.


def sample_expression(rng: np.random.Generator, p_exaggerated: float = 0.1) -> Expression:
    """A random expression; exaggerated ones open the mouth wide and raise the brows."""
    gaze = (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.2, 0.2)))
    if rng.random() < p_exaggerated:
        return Expression(
            mouth_open=rng.uniform(0.14, 0.32),
            smile=rng.uniform(-0.02, 0.07),
            brow_raise=rng.uniform(0.05, 0.12),
            eye_open_scale=rng.uniform(1.1, 1.35),
            gaze=gaze,
            exaggerated=True,
        )
    mouth_open = 0.0 if rng.random() < 0.7 else rng.uniform(0.0, 0.06)
    eye_scale = 0.15 if rng.random() < 0.04 else rng.uniform(0.8, 1.1)  # Some blink.
    return Expression(
        mouth_open=mouth_open,
        smile=rng.uniform(-0.01, 0.05),
        brow_raise=rng.uniform(-0.02, 0.03),
        eye_open_scale=eye_scale,
        gaze=gaze,
    )


def rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch), angles in degrees (conventions in the module doc)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _mirror(points: np.ndarray) -> np.ndarray:
    out = points.copy()
    out[:, 0] = -out[:, 0]
    return out


class FaceModel:
    """The 3-D points of one face appearance (landmarks, forehead outline, ears, head, body)."""

    def __init__(self, ident: FaceIdentity, expr: Expression):
        self.ident, self.expr = ident, expr
        d = ident.face_depth

        def depth(x):
            return d * np.sqrt(np.clip(1.0 - np.square(x), 0.0, 1.0))

        lm = np.zeros((68, 3))
        chin = ident.chin_y + 0.45 * expr.mouth_open  # The jaw drops as the mouth opens.
        self.chin = chin
        phi = np.linspace(0.0, math.pi, 17)
        e = 2.0 / ident.jaw_power
        cs, t = np.cos(phi), np.abs(np.sin(phi)) ** e
        x = -np.sign(cs) * np.abs(cs) ** e * (1.0 - ident.chin_taper * t**2)
        x[8] = 0.0
        lm[0:17, 0] = x
        lm[0:17, 1] = ident.jaw_top + (chin - ident.jaw_top) * t
        lm[0:17, 2] = depth(x) * 0.9

        # Brows: image-left brow outer -> inner, mirrored for the other one.
        tb = np.linspace(0.0, 1.0, 5)
        bx = (ident.eye_sep + 0.75 * ident.eye_w) + tb * (-1.35 * ident.eye_w)
        bx = np.maximum(bx, 0.08)
        by = (
            ident.brow_y
            - expr.brow_raise
            - ident.brow_arch * np.sin(math.pi * (0.1 + 0.8 * tb))
            + ident.brow_tilt * (tb - 0.5)
        )
        brow = np.stack([-bx, by, depth(bx) + 0.04], 1)
        lm[17:22] = brow
        lm[22:27] = _mirror(brow[::-1])

        # Nose bridge and base.
        nl, nz = ident.nose_len, ident.nose_z
        lm[27:31, 1] = np.linspace(-0.03, nl, 4)
        lm[27:31, 2] = d + np.array([0.1, 0.4, 0.7, 1.0]) * nz
        nw = ident.nose_w
        lm[31:36, 0] = np.array([-1, -0.5, 0, 0.5, 1]) * nw
        lm[31:36, 1] = nl + np.array([0.09, 0.13, 0.15, 0.13, 0.09])
        lm[31:36, 2] = d + nz * np.array([0.3, 0.5, 0.6, 0.5, 0.3])

        # Eyes: image-left eye 36 outer, 37-38 upper, 39 inner, 40-41 lower.
        ex, ew = ident.eye_sep, ident.eye_w
        eh = ew * ident.eye_open * expr.eye_open_scale
        self.eye_h = eh
        eye = np.array(
            [
                (-ex - ew / 2, 0.0),
                (-ex - ew / 6, -0.55 * eh),
                (-ex + ew / 6, -0.55 * eh),
                (-ex + ew / 2, 0.02),
                (-ex + ew / 6, 0.45 * eh),
                (-ex - ew / 6, 0.45 * eh),
            ]
        )
        eye3 = np.concatenate([eye, depth(eye[:, :1]) - 0.08], 1)
        lm[36:42] = eye3
        lm[42:48] = _mirror(eye3[[3, 2, 1, 0, 5, 4]])

        # Mouth.
        base = nl + 0.15
        my = base + (ident.chin_y - base) * ident.mouth_pos
        mw = ident.mouth_w * (1.0 + 2.0 * max(expr.smile, 0.0))
        iu, il = my - 0.35 * expr.mouth_open, my + 0.65 * expr.mouth_open
        cy = my - expr.smile
        ul, ll = ident.upper_lip, ident.lower_lip
        k = 0.4 * (cy - my)
        mouth = np.array(
            [
                (-mw, cy),
                (-0.6 * mw, iu - 0.85 * ul + k),
                (-0.22 * mw, iu - 1.1 * ul),
                (0.0, iu - 0.9 * ul),
                (0.22 * mw, iu - 1.1 * ul),
                (0.6 * mw, iu - 0.85 * ul + k),
                (mw, cy),
                (0.6 * mw, il + 0.85 * ll + k),
                (0.25 * mw, il + 1.05 * ll),
                (0.0, il + 1.1 * ll),
                (-0.25 * mw, il + 1.05 * ll),
                (-0.6 * mw, il + 0.85 * ll + k),
                (-0.88 * mw, cy),
                (-0.35 * mw, iu + 0.6 * k),
                (0.0, iu),
                (0.35 * mw, iu + 0.6 * k),
                (0.88 * mw, cy),
                (0.35 * mw, il + 0.6 * k),
                (0.0, il),
                (-0.35 * mw, il + 0.6 * k),
            ]
        )
        lm[48:68, :2] = mouth
        lm[48:68, 2] = depth(mouth[:, 0]) + 0.1
        self.landmarks = lm

        # Forehead outline from just above landmark 0 over the top to just above landmark 16.
        th = np.linspace(0.0, math.pi, 13)[1:-1]
        fx = -np.cos(th) * 0.98
        fy = ident.jaw_top - (ident.forehead_h + ident.jaw_top) * np.sin(th) ** 0.7
        self.forehead = np.stack([fx, fy, depth(fx) * 0.85], 1)

        # Ears (image-left = person's right first) and head volumes (centre, semi-axes).
        self.ears = np.array([(-1.0, 0.22, -0.25), (1.0, 0.22, -0.25)])
        top = -(ident.forehead_h + 0.12 + ident.hair_volume)
        bottom = 0.7 if ident.hair_style != MEDIUM else 1.0
        self.cranium = (
            (0.0, (top + bottom) / 2, -0.35),
            (1.06 + 0.6 * ident.hair_volume, (bottom - top) / 2, 1.2),
        )
        self.lower_head = ((0.0, 0.6, -0.1), (0.97, 0.85, 0.85))
        self.back_hair = ((0.0, 0.9, -0.55), (1.25 + ident.hair_volume, 2.0, 0.8))

        # Body, relative to the neck pivot; rotated by half the head pose.
        c = ident.chin_y
        self.pivot = np.array([0.0, c, -0.3])
        self.neck = np.array(
            [
                (-0.5, c - 0.9, -0.3),
                (0.5, c - 0.9, -0.3),
                (0.55, c + 0.6, -0.3),
                (-0.55, c + 0.6, -0.3),
            ]
        )
        torso = [
            (0.45, c + 0.45),
            (1.3, c + 0.75),
            (1.95, c + 1.0),
            (2.25, c + 1.5),
            (2.45, c + 4.0),
            (2.55, c + 9.0),
        ]
        torso = np.array([(-x, y) for x, y in torso] + [(x, y) for x, y in torso[::-1]])
        self.torso = np.concatenate([torso, np.full((len(torso), 1), -0.6)], 1)
        # Person's left shoulder (+x) first, as in the keypoint order.
        self.shoulders = np.array([(2.05, c + 1.2, -0.6), (-2.05, c + 1.2, -0.6)])
