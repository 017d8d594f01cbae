"""A drawn person of the synthetic set: a `synthetic_faces` face model posed, projected,
scaled and drawn (face, hair, ears, features and optionally a body) into a `Canvas`.

Signs of the pose, the landmark order and left / right: `synthetic_faces`' docstring.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from safefakes_jax.data.synthetic_faces import (
    BALD,
    LONG,
    MEDIUM,
    SHIFT,
    SUBPIXEL,
    Expression,
    FaceIdentity,
    FaceModel,
    rotation,
    scaled,
)


@dataclasses.dataclass
class Pose:
    """Head pose in degrees (signs in `synthetic_faces`' docstring)."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0


class Canvas:
    """Draws into a BGR image and, for filled shapes, into an int16 owner map.

    The owner map records which person (or -1 for other objects) drew each pixel last, so the
    visible fraction of every face can be measured after the whole scene is drawn.
    """

    def __init__(self, image: np.ndarray, owner: np.ndarray):
        self.image, self.owner = image, owner

    @staticmethod
    def _fix(points) -> np.ndarray:
        return np.round(np.asarray(points, np.float64).reshape(-1, 2) * SUBPIXEL).astype(np.int32)

    def poly(self, points, colour, owner: int | None = None, convex: bool = False) -> None:
        p = self._fix(points)
        if convex:
            cv2.fillConvexPoly(self.image, p, colour, cv2.LINE_AA, SHIFT)
            if owner is not None:
                cv2.fillConvexPoly(self.owner, p, owner, cv2.LINE_8, SHIFT)
        else:
            cv2.fillPoly(self.image, [p], colour, cv2.LINE_AA, shift=SHIFT)
            if owner is not None:
                cv2.fillPoly(self.owner, [p], owner, cv2.LINE_8, shift=SHIFT)

    def ellipse(
        self, centre, axes, angle: float, colour, owner: int | None = None, thickness: int = -1
    ) -> None:
        c = tuple(int(v) for v in self._fix(centre)[0])
        ax = tuple(max(1, int(round(a * SUBPIXEL))) for a in axes)
        cv2.ellipse(self.image, c, ax, float(angle), 0, 360, colour, thickness, cv2.LINE_AA, SHIFT)
        if owner is not None:
            cv2.ellipse(
                self.owner, c, ax, float(angle), 0, 360, owner, thickness, cv2.LINE_8, SHIFT
            )

    def polyline(self, points, colour, thickness: int, closed: bool = False) -> None:
        cv2.polylines(
            self.image, [self._fix(points)], closed, colour, thickness, cv2.LINE_AA, SHIFT
        )


class Person:
    """One face (and optionally its body) in an image: pose, scale, projection and drawing."""

    def __init__(self, ident: FaceIdentity, expr: Expression, pose: Pose, scale: float):
        self.model = FaceModel(ident, expr)
        self.ident, self.expr, self.pose, self.scale = ident, expr, pose, float(scale)
        self.rot = rotation(pose.yaw, pose.pitch, pose.roll)
        self.body_rot = rotation(0.5 * pose.yaw, 0.0, 0.5 * pose.roll)
        self.offset = np.zeros(2)

    def project(self, points3: np.ndarray) -> np.ndarray:
        return (np.asarray(points3) @ self.rot.T)[:, :2] * self.scale + self.offset

    def project_body(self, points3: np.ndarray) -> np.ndarray:
        pivot = self.project(self.model.pivot[None])[0]
        return ((np.asarray(points3) - self.model.pivot) @ self.body_rot.T)[
            :, :2
        ] * self.scale + pivot

    def face_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(landmarks [68, 2], forehead outline [11, 2]) in image coordinates."""
        return self.project(self.model.landmarks), self.project(self.model.forehead)

    def _ellipse(self, centre_axes) -> tuple[np.ndarray, tuple[float, float], float]:
        """Orthographic outline of an axis-aligned ellipsoid of the face frame."""
        centre, axes = centre_axes
        m = self.rot[:2] * np.asarray(axes)[None]  # 2x3 image of the unit ball.
        w, v = np.linalg.eigh(m @ m.T)
        angle = math.degrees(math.atan2(v[1, 1], v[0, 1]))
        axes2 = (math.sqrt(max(w[1], 1e-12)) * self.scale, math.sqrt(max(w[0], 1e-12)) * self.scale)
        return self.project(np.asarray(centre)[None])[0], axes2, angle

    def ear_facing(self) -> np.ndarray:
        """Per ear (image-left first), the camera-facing component of its outward normal."""
        return np.array([-self.rot[2, 0], self.rot[2, 0]])

    def draw(self, canvas: Canvas, owner: int, clothing=None) -> None:
        """Draws the person (body when `clothing` is a colour) back to front."""
        ident, model, s = self.ident, self.model, self.scale
        skin, hair = ident.skin, ident.hair
        lw = max(1, int(round(s * 0.035)))
        if clothing is not None:
            canvas.poly(self.project_body(model.torso), clothing, owner)
        if ident.hair_style == LONG:
            canvas.ellipse(*self._ellipse(model.back_hair), hair, owner)
        if clothing is not None:
            canvas.poly(self.project_body(model.neck), scaled(skin, 0.85), owner, convex=True)
        canvas.ellipse(
            *self._ellipse(model.cranium),
            scaled(skin, 0.95) if ident.hair_style == BALD else hair,
            owner,
        )
        if ident.hair_style != MEDIUM:
            canvas.ellipse(*self._ellipse(model.lower_head), scaled(skin, 0.97), owner)
        ears = self.project(model.ears)
        for ear, facing in zip(ears, self.ear_facing(), strict=True):
            if facing > -0.25:
                axes = (s * (0.12 + 0.1 * max(facing, 0.0)), s * 0.27)
                canvas.ellipse(ear, axes, self.pose.roll, scaled(skin, 0.9), owner)
        lm, fh = self.face_points()
        hull = cv2.convexHull(np.concatenate([lm, fh]).astype(np.float32))[:, 0]
        canvas.poly(hull, skin, owner, convex=True)
        if ident.bangs > 0:
            # Fringe: the top of the forehead down to a wavy line.
            f3 = model.forehead
            low = f3.copy()
            low[:, 1] = f3[:, 1] + (0.0 - f3[:, 1]) * ident.bangs * np.linspace(0.6, 1.0, len(f3))
            low[:, 1] = np.minimum(low[:, 1], ident.brow_y - 0.12)
            canvas.poly(np.concatenate([self.project(f3), self.project(low[::-1])]), hair, owner)
        self._draw_features(canvas, lm, lw)

    def _draw_features(self, canvas: Canvas, lm: np.ndarray, lw: int) -> None:
        ident, expr, model, s = self.ident, self.expr, self.model, self.scale
        skin = ident.skin
        dark = scaled(ident.hair, 0.6)
        # Brows: the landmark line thickened up and down (thinner at the outer end).
        prof = ident.brow_thick * np.array([0.55, 0.9, 1.0, 1.0, 0.85])
        for sl in (slice(17, 22), slice(22, 27)):
            b = model.landmarks[sl]
            p = prof if sl.start == 17 else prof[::-1]
            up, down = b.copy(), b.copy()
            up[:, 1] -= 0.5 * p
            down[:, 1] += 0.5 * p
            canvas.poly(
                np.concatenate([self.project(up), self.project(down[::-1])]),
                scaled(ident.hair, 0.75),
            )
        # Eyes: white, iris, pupil, upper lid line.
        cos_yaw = max(0.3, abs(self.rot[0, 0]))
        for sl in (slice(36, 42), slice(42, 48)):
            e = lm[sl]
            canvas.poly(e, (228, 232, 238), convex=True)
            centre = e.mean(0)
            ew = np.linalg.norm(e[3] - e[0])
            r = 0.5 * model.eye_h * s
            gaze = np.array(expr.gaze) * np.array([0.25 * ew, 0.1 * r])
            if r > 0.15:
                canvas.ellipse(centre + gaze, (r * cos_yaw, r), self.pose.roll, ident.iris)
                canvas.ellipse(
                    centre + gaze, (0.45 * r * cos_yaw, 0.45 * r), self.pose.roll, (15, 15, 15)
                )
            canvas.polyline(e[[0, 1, 2, 3]], dark, lw)  # Upper lid (corner to corner).
            canvas.polyline(e[[3, 4, 5, 0]], scaled(skin, 0.7), max(1, lw // 2))
        if ident.glasses:
            for sl in (slice(36, 42), slice(42, 48)):
                e = lm[sl]
                ew = np.linalg.norm(e[3] - e[0])
                canvas.ellipse(
                    e.mean(0), (0.7 * ew, 0.5 * ew), self.pose.roll, (30, 30, 30), thickness=lw
                )
            canvas.polyline(lm[[39, 27, 42]], (30, 30, 30), lw)
        # Nose: shaded side line on the side turned away, nostrils, base line.
        side = 31 if self.pose.yaw < 0 else 35
        canvas.polyline(lm[[27, 28, 29, 30, side]], scaled(skin, 0.8), max(1, lw))
        canvas.polyline(lm[31:36], scaled(skin, 0.72), max(1, lw // 2))
        for i in (32, 34):
            canvas.ellipse(
                lm[i] + 0.3 * (lm[33] - lm[i]),
                (0.045 * s * cos_yaw, 0.025 * s),
                self.pose.roll,
                scaled(skin, 0.4),
            )
        # Mouth: lips, open mouth interior with teeth, lip line.
        canvas.poly(lm[48:60], ident.lip)
        if expr.mouth_open * s > 0.6:
            inner = lm[60:68]
            canvas.poly(inner, (35, 25, 45))
            teeth = inner[[0, 1, 2, 3, 4]].copy()
            lower = inner[[4, 3, 2, 1, 0]].copy()
            lower += 0.35 * (inner[[4, 5, 6, 7, 0]] - inner[[4, 3, 2, 1, 0]])
            canvas.poly(np.concatenate([teeth, lower]), (225, 230, 235))
        canvas.polyline(lm[[48, 60, 61, 62, 63, 64, 54]], scaled(ident.lip, 0.6), max(1, lw // 2))

    def body_keypoints(self, width: int, height: int, has_body: bool) -> np.ndarray:
        """[left shoulder, right shoulder, left ear, right ear] as (x, y, visible)."""
        out = np.zeros((4, 3))
        if has_body:
            for i, p in enumerate(self.project_body(self.model.shoulders)):
                if 0 <= p[0] <= width - 1 and 0 <= p[1] <= height - 1:
                    out[i] = (p[0], p[1], 1)
        ears = self.project(self.model.ears)
        facing = self.ear_facing()
        for i, j in ((2, 1), (3, 0)):  # Left ear = +x ear (index 1).
            p = ears[j]
            if facing[j] > -0.25 and 0 <= p[0] <= width - 1 and 0 <= p[1] <= height - 1:
                out[i] = (p[0], p[1], 1)
        return out
