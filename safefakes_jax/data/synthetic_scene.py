"""Draws one image of the synthetic WIDER FACE (what is drawn and how the attributes,
boxes and keypoints follow from it: `synthetic`'s docstring).

A textured background with non-face distractors, then the people of the image's scene type
(crowd, group, portrait: `SCENES`) drawn far to near with `synthetic_faces`, each followed by
its own lighting change, blur and occluder, then sensor noise. Image `index` of a split is
drawn from `np.random.default_rng([seed, split id, index])` alone.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from safefakes_jax.data import synthetic_faces as sf
from safefakes_jax.data import synthetic_person as sp
from safefakes_jax.data import wider

SPLIT_IDS = {'train': 0, 'val': 1}
# (event folder, second name word, typical scene)
EVENTS = (
    ('0--Parade', 'marchingband', 'crowd'),
    ('1--Handshaking', 'Handshaking', 'portrait'),
    ('2--Demonstration', 'Protesters', 'crowd'),
    ('4--Dancing', 'Dancing', 'group'),
    ('7--Cheering', 'Cheering', 'crowd'),
    ('11--Meeting', 'Meeting', 'group'),
    ('12--Group', 'Group', 'group'),
    ('13--Interview', 'Interview', 'portrait'),
    ('20--Family', 'Family', 'group'),
    ('37--Soccer', 'soccer', 'crowd'),
)
# Scene: (min faces, max faces, min face width, max face width, skew > 1 favours small faces).
SCENES = {
    'crowd': (8, 20, 4.0, 70.0, 1.4),
    'group': (3, 9, 8.0, 170.0, 1.2),
    'portrait': (1, 3, 40.0, 400.0, 1.0),
}
ZERO_FACE_EVERY = 40  # Images with index % 40 == 1 have no faces (WIDER has a few).


@dataclasses.dataclass(frozen=True)
class Config:
    """Generation settings that every worker needs."""

    seed: int = 0
    width: int = 1024
    min_height: int = 600
    max_height: int = 1000
    jpeg_quality: int = 90
    n_train_ids: int = 200
    n_val_ids: int = 100

    def identity_pool(self, split: str) -> tuple[int, int]:
        """[first, last) identity ids of `split`."""
        if split == 'train':
            return 0, self.n_train_ids
        return self.n_train_ids, self.n_train_ids + self.n_val_ids


@dataclasses.dataclass
class RenderedImage:
    """One generated image: its txt annotation and sidecar record (the JPEG is on disk)."""

    annotation: wider.ImageAnnotation
    record: dict


def image_name(split: str, index: int, n_images: int) -> str:
    """`event/name.jpg` of image `index` of `split` (events in contiguous blocks, like WIDER)."""
    k = index * len(EVENTS) // max(n_images, 1)
    event, word, _ = EVENTS[k]
    num, label = event.split('--')
    # Val numbers are odd, train numbers even: stems are unique across splits.
    return f'{event}/{num}_{label}_{word}_{num}_{2 * index + SPLIT_IDS[split]}.jpg'


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(0, 255, 3))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured background, built at low resolution and upscaled (cheap)."""
    lh, lw = h // 4, w // 4
    kind = rng.choice(['noise', 'gradient', 'stripes'], p=[0.45, 0.3, 0.25])
    c0, c1 = np.array(_random_colour(rng)), np.array(_random_colour(rng))
    if kind == 'noise':
        t = np.zeros((lh, lw, 3), np.float32)
        for cells, amp in (
            (int(rng.integers(2, 6)), 1.0),
            (int(rng.integers(8, 24)), 0.5),
            (int(rng.integers(30, 80)), 0.25),
        ):
            g = rng.random((cells, max(2, cells * w // h), 3)).astype(np.float32)
            t += amp * cv2.resize(g, (lw, lh), interpolation=cv2.INTER_CUBIC)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        low = c0 + t * (c1 - c0)
    else:
        ang = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
        u = (xx * math.cos(ang) + yy * math.sin(ang)) / max(lh, lw)
        if kind == 'stripes':
            u = 0.5 + 0.5 * np.sin(u * rng.uniform(6, 60) + rng.uniform(0, 6))
            u = np.where(rng.random() < 0.5, u, (u > 0.5).astype(np.float32))
        low = c0 + (u - u.min())[..., None] / max(float(np.ptp(u)), 1e-6) * (c1 - c0)
    fine = rng.random((lh, lw, 1)).astype(np.float32) * rng.uniform(0, 40)
    low = np.clip(low + fine, 0, 255).astype(np.uint8)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)


def _distractor(
    canvas: sp.Canvas,
    rng: np.random.Generator,
    h: int,
    w: int,
    max_size: float,
    owner: int | None = None,
) -> None:
    """One non-face shape; a third are skin coloured (face-like ellipses included)."""
    size = math.exp(rng.uniform(math.log(5), math.log(max_size)))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    colour = sf.skin_colour(rng) if rng.random() < 0.33 else _random_colour(rng)
    kind = rng.integers(4)
    if kind == 0:  # Ellipse, often with a face-like aspect ratio.
        canvas.ellipse(
            (cx, cy),
            (size / 2, size / 2 * rng.uniform(0.5, 1.6)),
            rng.uniform(0, 180),
            colour,
            owner,
        )
    elif kind == 1:  # Random polygon.
        n = int(rng.integers(3, 8))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = size / 2 * rng.uniform(0.4, 1.0, n)
        canvas.poly(np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1), colour, owner)
    elif kind == 2:  # Rotated bar.
        a, t = rng.uniform(0, math.pi), size * rng.uniform(0.05, 0.3)
        d = np.array([math.cos(a), math.sin(a)]) * size / 2
        n = np.array([-math.sin(a), math.cos(a)])
        c = np.array([cx, cy])
        canvas.poly(
            [c - d - n * t / 2, c + d - n * t / 2, c + d + n * t / 2, c - d + n * t / 2],
            colour,
            owner,
            convex=True,
        )
    else:  # Ring.
        canvas.ellipse(
            (cx, cy),
            (size / 2, size / 2),
            0,
            colour,
            None,
            thickness=max(1, int(size * rng.uniform(0.03, 0.15))),
        )


def _blur_kernel(rng: np.random.Generator, k: int) -> np.ndarray:
    """A motion (line) or defocus (disk) kernel of odd size k."""
    ker = np.zeros((k, k), np.float32)
    c = (k - 1) / 2
    if rng.random() < 0.5:
        a = rng.uniform(0, math.pi)
        d = np.array([math.cos(a), math.sin(a)]) * c
        p0, p1 = np.round((c - d) * 16).astype(int), np.round((c + d) * 16).astype(int)
        cv2.line(ker, tuple(p0), tuple(p1), 1.0, 1, cv2.LINE_AA, 4)
    else:
        cv2.circle(ker, (int(c * 16), int(c * 16)), int(c * 16), 1.0, -1, cv2.LINE_AA, 4)
    return ker / ker.sum()


def _roi(box, pad: float, h: int, w: int) -> tuple[slice, slice]:
    x, y, bw, bh = box
    x0, y0 = max(0, int(x - pad)), max(0, int(y - pad))
    x1, y1 = min(w, int(math.ceil(x + bw + pad)) + 1), min(h, int(math.ceil(y + bh + pad)) + 1)
    return slice(y0, y1), slice(x0, x1)


def _relight(img, owner, k: int, box, gain: float, grad: float, rng) -> None:
    """Multiplies person k's pixels near the face by a gain with a linear gradient."""
    ys, xs = _roi(box, 0.6 * max(box[2], box[3]), *img.shape[:2])
    roi = img[ys, xs].astype(np.float32)
    m = (owner[ys, xs] == k).astype(np.float32)
    m = cv2.GaussianBlur(m, (0, 0), max(0.6, 0.03 * box[2]))
    a = rng.uniform(0, 2 * math.pi)
    gx = np.linspace(-1, 1, roi.shape[1], dtype=np.float32)[None] * math.cos(a)
    gy = np.linspace(-1, 1, roi.shape[0], dtype=np.float32)[:, None] * math.sin(a)
    mult = gain * (1.0 + grad * (gx + gy))
    roi *= (1.0 + m * (mult - 1.0))[..., None]
    img[ys, xs] = np.clip(roi, 0, 255).astype(np.uint8)


def _blur(img, owner, k: int, box, kernel: np.ndarray) -> None:
    """Blurs person k's pixels near the face (the blurred face bleeds into its surround)."""
    ys, xs = _roi(box, 0.5 * max(box[2], box[3]) + kernel.shape[0], *img.shape[:2])
    roi = img[ys, xs]
    blurred = cv2.filter2D(roi, -1, kernel, borderType=cv2.BORDER_REFLECT)
    m = cv2.filter2D(
        (owner[ys, xs] == k).astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT
    )
    m = np.minimum(1.0, 2.0 * m)[..., None]
    img[ys, xs] = (roi + m * (blurred.astype(np.float32) - roi)).astype(np.uint8)


def _occluder(canvas: sp.Canvas, rng: np.random.Generator, box) -> None:
    """Draws an object over part of a face box, covering roughly a random fraction of it."""
    x, y, w, h = box
    u = rng.random()
    cover = (
        rng.uniform(0.1, 0.4)
        if u < 0.6
        else rng.uniform(0.4, 0.7)
        if u < 0.95
        else rng.uniform(0.7, 0.95)
    )
    colour = sf.skin_colour(rng) if rng.random() < 0.3 else _random_colour(rng)
    pad = 0.15 * max(w, h) + 1
    kind = rng.integers(4)
    if kind == 0:  # From the left or right side (another head, a pole, a sign).
        if rng.random() < 0.5:
            pts = [
                (x - pad, y - pad),
                (x + cover * w, y - pad),
                (x + cover * w, y + h + pad),
                (x - pad, y + h + pad),
            ]
        else:
            pts = [
                (x + (1 - cover) * w, y - pad),
                (x + w + pad, y - pad),
                (x + w + pad, y + h + pad),
                (x + (1 - cover) * w, y + h + pad),
            ]
        canvas.poly(pts, colour, -1, convex=True)
    elif kind == 1:  # From below (scarf, mask, hand, raised object) or above (hat, sign).
        if rng.random() < 0.7:
            y0, y1 = y + (1 - cover) * h, y + h + pad
        else:
            y0, y1 = y - pad, y + cover * h
        canvas.poly(
            [(x - pad, y0), (x + w + pad, y0), (x + w + pad, y1), (x - pad, y1)],
            colour,
            -1,
            convex=True,
        )
    else:  # A blob (hand, ball, flag) of about the target area.
        ar = rng.uniform(0.6, 1.6)
        a = math.sqrt(cover * w * h / math.pi * ar)
        canvas.ellipse(
            (x + rng.uniform(0.2, 0.8) * w, y + rng.uniform(0.2, 0.8) * h),
            (a, cover * w * h / math.pi / a),
            rng.uniform(0, 180),
            colour,
            -1,
        )


def _sample_faces(rng, cfg: Config, split: str, h: int, w: int, event_scene: str) -> list:
    """Samples and places the people of one image; returns [(person, box, has_body)]."""
    scene = event_scene if rng.random() < 0.6 else str(rng.choice(list(SCENES)))
    n_min, n_max, lo, hi, skew = SCENES[scene]
    n = int(rng.integers(n_min, n_max + 1))
    first, last = cfg.identity_pool(split)
    ids = rng.choice(np.arange(first, last), size=min(n, last - first), replace=False)
    placed, boxes = [], []
    for ident_id in ids:
        size_frac = rng.random() ** skew
        face_w = math.exp(math.log(lo) + size_frac * math.log(hi / lo))
        if rng.random() < 0.9:
            yaw = float(np.clip(rng.normal(0, 18), -45, 45))
        else:
            yaw = float(rng.choice([-1, 1]) * rng.uniform(40, 80))
        roll = (
            float(np.clip(rng.normal(0, 8), -25, 25))
            if rng.random() < 0.95
            else float(rng.choice([-1, 1]) * rng.uniform(25, 45))
        )
        pose = sp.Pose(yaw=yaw, pitch=float(np.clip(rng.normal(0, 8), -25, 25)), roll=roll)
        person = sp.Person(
            sf.sample_identity(int(ident_id), cfg.seed), sf.sample_expression(rng), pose, face_w / 2
        )
        lm, fh = person.face_points()
        pts = np.concatenate([lm, fh])
        (mx, my), (mx1, my1) = pts.min(0), pts.max(0)
        if mx1 - mx > w - 4 or my1 - my > h - 4:
            continue
        for _ in range(20):
            ox = rng.uniform(1 - mx, w - 2 - mx1)
            if scene == 'portrait':
                oy = rng.uniform(1 - my, h - 2 - my1)
            else:  # Perspective: small faces higher up.
                t = float(np.clip(0.1 + 0.8 * size_frac + rng.normal(0, 0.12), 0, 1))
                oy = (1 - my) + t * ((h - 2 - my1) - (1 - my))
            b = np.array([mx + ox, my + oy, mx1 + ox, my1 + oy])
            if all(_overlap(b, o) < 0.15 for o in boxes):
                person.offset = np.array([ox, oy])
                boxes.append(b)
                placed.append((person, rng.random() < 0.85))
                break
    placed.sort(key=lambda p: p[0].scale)  # Far (small) to near (large).
    return placed


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _tight_box(points: np.ndarray, w: int, h: int) -> list[int]:
    x0, y0 = (int(math.floor(v)) for v in points.min(0))
    x1, y1 = (int(math.ceil(v)) for v in points.max(0))
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1)
    return [x0, y0, max(1, x1 - x0), max(1, y1 - y0)]


def render_image(
    cfg: Config, split: str, index: int, n_images: int, people: bool = True
) -> tuple[np.ndarray, RenderedImage]:
    """Draws image `index` of `split`.

    Args:
      cfg: generation settings.
      split: 'train' or 'val'.
      index: image index within the split.
      n_images: images in the split (sets the event blocks).
      people: False draws the same background and distractors without any person (a face-free
        negative; its noise differs).

    Returns:
      (BGR uint8 image, annotation + sidecar record).
    """
    rng = np.random.default_rng([cfg.seed, SPLIT_IDS[split], index])
    name = image_name(split, index, n_images)
    event_scene = EVENTS[index * len(EVENTS) // max(n_images, 1)][2]
    h, w = int(rng.integers(cfg.min_height, cfg.max_height + 1)), cfg.width
    img = _background(rng, h, w)
    owner = np.full((h, w), -1, np.int16)
    canvas = sp.Canvas(img, owner)
    for _ in range(int(rng.integers(4, 30))):
        _distractor(canvas, rng, h, w, 0.4 * w)
    placed = (
        []
        if not people or index % ZERO_FACE_EVERY == 1
        else _sample_faces(rng, cfg, split, h, w, event_scene)
    )
    faces = []
    for k, (person, has_body) in enumerate(placed):
        lm, fh = person.face_points()
        lm = np.round(lm, 2)
        box = _tight_box(np.concatenate([lm, np.round(fh, 2)]), w, h)
        person.draw(canvas, k, _random_colour(rng) if has_body else None)
        ys, xs = slice(box[1], box[1] + box[3]), slice(box[0], box[0] + box[2])
        area = int(np.count_nonzero(owner[ys, xs] == k))
        face_w = 2 * person.scale
        u = rng.random()
        gain = (
            rng.uniform(0.25, 0.45)
            if u < 0.04
            else rng.uniform(1.9, 2.6)
            if u < 0.07
            else rng.uniform(0.75, 1.3)
        )
        _relight(img, owner, k, box, gain, rng.uniform(0, 0.4), rng)
        blur_r = 0.0
        if rng.random() < (0.55 if face_w < 20 else 0.35 if face_w < 40 else 0.22):
            u = rng.random()
            r = (
                rng.uniform(0.03, 0.07)
                if u < 0.15
                else rng.uniform(0.07, 0.18)
                if u < 0.65
                else rng.uniform(0.18, 0.35)
            )
            kk = max(3, int(round(r * face_w)) | 1)
            kk = min(kk, 41)
            blur_r = kk / face_w
            _blur(img, owner, k, box, _blur_kernel(rng, kk))
        if rng.random() < 0.25:
            _occluder(canvas, rng, box)
        faces.append(
            dict(
                person=person,
                has_body=has_body,
                lm=lm,
                box=box,
                area=area,
                gain=gain,
                blur_r=blur_r,
            )
        )
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.3 else 0):
        _distractor(canvas, rng, h, w, 0.25 * w, owner=-1)
    # Sensor noise on everything, so faces are not the only noise-free regions.
    a = int(rng.integers(1, 9))  # Uniform noise: as good as Gaussian here, 3x cheaper.
    noise = rng.integers(-a, a + 1, (h, w), dtype=np.int16)
    img[:] = cv2.add(img, cv2.merge([noise, noise, noise]), dtype=cv2.CV_8U)

    boxes, attrs, records = [], [], []
    for k, f in enumerate(faces):
        person, box = f['person'], f['box']
        visible = np.count_nonzero(owner[box[1] : box[1] + box[3], box[0] : box[0] + box[2]] == k)
        occ_f = 1.0 - visible / f['area'] if f['area'] > 0 else 1.0
        blur = 0 if f['blur_r'] < 0.07 else 1 if f['blur_r'] < 0.18 else 2
        occ = 0 if occ_f < 0.1 else 1 if occ_f < 0.4 else 2
        invalid = int(box[2] < 4 or box[3] < 4 or occ_f > 0.75)
        pose = person.pose
        atypical = int(abs(pose.yaw) > 45 or abs(pose.roll) > 30)
        illum = int(f['gain'] < 0.45 or f['gain'] > 1.9)
        boxes.append(box)
        attrs.append([blur, int(person.expr.exaggerated), illum, invalid, occ, atypical])
        lm = f['lm']
        kp = np.zeros((7, 3))
        kp[0] = (*lm[30], 1)
        kp[1] = (*lm[42:48].mean(0), 1) if pose.yaw <= 60 else 0  # Person's left eye.
        kp[2] = (*lm[36:42].mean(0), 1) if pose.yaw >= -60 else 0
        body = person.body_keypoints(w, h, f['has_body'])
        kp[3:5], kp[5:7] = body[2:4], body[0:2]
        records.append(
            {
                'box': box,
                'landmarks68': lm.tolist(),
                'keypoints7': [[round(float(a), 2), round(float(b), 2), int(v)] for a, b, v in kp],
                'identity': person.ident.identity,
                'yaw': round(pose.yaw, 2),
                'roll': round(pose.roll, 2),
                'occlusion_fraction': round(float(occ_f), 4),
            }
        )
    ann = wider.ImageAnnotation(
        name, np.asarray(boxes, np.int32).reshape(-1, 4), np.asarray(attrs, np.int32).reshape(-1, 6)
    )
    record = {'image': name, 'width': w, 'height': h, 'faces': records}
    return img, RenderedImage(ann, record)
