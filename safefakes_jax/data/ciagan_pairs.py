"""CIAGAN's training pairs: the SiameseSampler and the loader of dvl-tum/ciagan, resumable.

Follows `source/util_data.py`: a training example is a pair of faces (a, b). `SiameseSampler`
makes half of a batch pairs of two independently drawn identities (which may coincide) and the
other half pairs of one identity, drawing the identity uniformly over the identities, then a
face uniformly within it; `ImageDataset.__getitem__` loads each face of the pair with its own
random crop (`ciagan_faces.train_window`), shared by that face's crop, landmark and mask
images. The train step uses face a's crop, landmarks and mask as the generator's input, b's
face as the target of the identity loss and b's class as the one-hot, and `a.id == b.id` as the
Siamese label (`train.py` `process_batch_data`).

Batches (`pair_batches`; B = this host's rows, K = sub-batches, R = resolution), numpy dicts:

* `face`, `landmarks`: uint8 [B, K, R, R, 3]; `mask`: uint8 [B, K, R, R, 1] (1 = generate).
* `target_face`: uint8 [B, K, R, R, 3]; `identity`: int32 [B, K] b's class; `same`: float32
  [B, K], 1 where a and b share an identity.
* `position`: int64 [B], `step * batch_size + row` (row = the global row).

The train step takes one sub-batch k (all rows) per Siamese / critic / generator update, as
the original takes a fresh batch from its loader for each. Randomness: which rows of sub-batch
k of step s are same-identity pairs comes from `default_rng([seed, s, k])` (exactly
`G - G // 2` of the G global rows, as the sampler's second half); everything else of a pair
from `default_rng([seed, s, row, k])`. So the stream is a pure function of (seed, step) and a
resumed run yields exactly the batches of an uninterrupted one: `start_position` p starts at
step `ceil(p / batch_size)`, the first step none of whose examples precedes p (resume with the
largest `position` trained on + 1, on any host).

Deviations: the original shuffles its whole epoch of pairs, so a batch holds half
same-identity pairs only on average; here every sub-batch does, exactly. Stored squares whose
side is not int(R * 1.125) (a set prepared for another R) are Lanczos resized to it first.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import numpy as np

from safefakes_jax.data import ciagan_faces, ciagan_sets

CACHE_BYTES = 1 << 30  # The drawn landmark / mask squares are cached up to this size.


def _square(faces: ciagan_sets.CiaganFaces, i: int, side: int) -> np.ndarray:
    sq = faces.faces[i]
    return sq if sq.shape[0] == side else ciagan_faces.to_square(sq, side)


def _drawn(crop_landmarks68: np.ndarray, side: int) -> np.ndarray:
    """uint8 [S, S, 2]: the landmark image's red channel and the mask image, at S."""
    line = ciagan_faces.draw_landmarks(crop_landmarks68, channels=1)
    mask = ciagan_faces.draw_mask_image(crop_landmarks68)
    return np.stack([ciagan_faces.to_square(line, side), ciagan_faces.to_square(mask, side)], -1)


def _views(square, drawn, window, resolution) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face, landmark image and mask at R (uint8), from one shared window."""
    out = ciagan_faces.view(np.concatenate([square, drawn], -1), window, resolution)
    line = out[..., 3]  # One 5-channel resize: Lanczos works channel by channel.
    lndm = np.stack([line, line, np.full_like(line, 255)], -1)
    mask = ciagan_faces.mask_from_image(out[..., 4:5])
    return np.ascontiguousarray(out[..., :3]), lndm, mask.astype(np.uint8)


def face_inputs(
    faces: ciagan_sets.CiaganFaces, index: int, resolution: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test view of one stored face (the centre crop; evaluation, inference).

    Returns:
      `face` uint8 [R, R, 3], `landmarks` uint8 [R, R, 3], `mask` uint8 [R, R, 1] (1 =
      generate), as in `pair_batches`. Unlabelled faces (-1) are fine here.
    """
    side = ciagan_faces.loader_side(resolution)
    window = ciagan_faces.centre_window(side, resolution)
    drawn = _drawn(faces.landmarks[index], side)
    return _views(_square(faces, index, side), drawn, window, resolution)


class _Pairs:
    """The per-face work of one pair (`example`) for one set and resolution."""

    def __init__(
        self,
        faces: ciagan_sets.CiaganFaces,
        resolution: int,
        seed: int,
        train: bool,
        cache_bytes: int = CACHE_BYTES,
    ):
        if len(faces) == 0:
            raise ValueError('no faces to train on')
        if (faces.identity < 0).any():
            raise ValueError(
                f'{int((faces.identity < 0).sum())} faces have no identity class (-1); '
                'training pairs need labelled faces'
            )
        self.faces, self.r, self.seed, self.train = faces, resolution, seed, train
        self.side = ciagan_faces.loader_side(resolution)
        order = np.argsort(faces.identity, kind='stable')
        _, starts = np.unique(faces.identity[order], return_index=True)
        self.members = np.split(order, starts[1:])  # Non-empty classes only, as the sampler.
        self.centre = ciagan_faces.centre_window(self.side, resolution)
        # The drawn landmark and mask images at S depend on the face only: cache them when
        # they fit (np.zeros maps pages lazily, so memory grows with the faces seen).
        fits = len(faces) * self.side**2 * 2 <= cache_bytes
        self.drawn = np.zeros((len(faces), self.side, self.side, 2), np.uint8) if fits else None
        self.done = np.zeros(len(faces), bool)

    def window(self, rnd: np.ndarray) -> ciagan_faces.Window:
        return ciagan_faces.train_window(self.side, rnd) if self.train else self.centre

    def square(self, i: int) -> np.ndarray:
        return _square(self.faces, i, self.side)

    def drawn_squares(self, i: int) -> np.ndarray:
        """`_drawn` of face i, from the cache when it is there."""
        if self.drawn is not None and self.done[i]:
            return self.drawn[i]
        out = _drawn(self.faces.landmarks[i], self.side)
        if self.drawn is not None:  # Threads may both fill a face: same bytes.
            self.drawn[i] = out
            self.done[i] = True
        return out

    def inputs(self, i: int, window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _views(self.square(i), self.drawn_squares(i), window, self.r)

    def example(self, step: int, row: int, k: int, same: bool) -> tuple:
        """(face, landmarks, mask, target_face, identity, same) of one pair."""
        rng = np.random.default_rng([self.seed, step, row, k])
        c1, c2 = rng.integers(len(self.members), size=2)
        c2 = c1 if same else c2
        a = int(rng.choice(self.members[c1]))
        b = int(rng.choice(self.members[c2]))
        rnd = rng.random((2, 4))
        face, lndm, mask = self.inputs(a, self.window(rnd[0]))
        target = ciagan_faces.view(self.square(b), self.window(rnd[1]), self.r)
        ident_b = int(self.faces.identity[b])
        return face, lndm, mask, target, ident_b, float(self.faces.identity[a] == ident_b)


def same_rows(seed: int, step: int, k: int, batch_size: int) -> np.ndarray:
    """bool [G]: the global rows of sub-batch k of `step` that are same-identity pairs."""
    perm = np.random.default_rng([seed, step, k, 1 << 30]).permutation(batch_size)
    return perm >= batch_size // 2


def pair_batches(
    faces: ciagan_sets.CiaganFaces,
    *,
    batch_size: int,
    sub_batches: int,
    resolution: int,
    seed: int,
    start_position: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    train: bool = True,
    threads: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """The endless stream of this host's pair batches (module docstring).

    Args:
      faces: the training faces (every face labelled 0..K-1).
      batch_size: the global batch G (rows over all hosts; divisible by `process_count`).
      sub_batches: K, the sub-batches per step.
      resolution: R.
      seed: non-negative.
      start_position: resume: 1 + the largest `position` trained on.
      process_index, process_count: this host and the number of hosts.
      train: True: the original's random crops; False: the centre crop (pairs still drawn).
      threads: threads preparing the faces (the output does not depend on it).

    Raises:
      ValueError: bad arguments or unlabelled faces.
    """
    g, k_sub, pc, pi = int(batch_size), int(sub_batches), int(process_count), int(process_index)
    if g < 1 or k_sub < 1 or pc < 1 or g % pc or not 0 <= pi < pc:
        raise ValueError(
            f'bad batch_size {g} / sub_batches {k_sub} / process {pi} of {pc} '
            '(batch_size must be a multiple of process_count)'
        )
    if seed < 0 or start_position < 0:
        raise ValueError(f'seed and start_position must be >= 0, got {seed}, {start_position}')
    pairs = _Pairs(faces, int(resolution), int(seed), bool(train))  # Checks the faces now.
    step = -(-int(start_position) // g)  # ceil, in integers.
    return _stream(pairs, g, k_sub, np.arange(pi * (g // pc), (pi + 1) * (g // pc)), step, threads)


def _stream(pairs: _Pairs, g: int, k_sub: int, rows: np.ndarray, step: int, threads: int):
    b, threads = len(rows), int(threads)
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        while True:
            same = [same_rows(pairs.seed, step, k, g) for k in range(k_sub)]
            jobs = [(step, int(r), k, bool(same[k][r])) for r in rows for k in range(k_sub)]
            run = pool.map if threads > 1 else map  # One thread: no pool overhead.
            done = list(run(lambda job: pairs.example(*job), jobs))
            cols = list(zip(*done, strict=True))

            def stack(i: int, dtype, done=cols) -> np.ndarray:
                arr = np.asarray(np.stack(done[i]), dtype)
                return arr.reshape(b, k_sub, *arr.shape[1:])

            yield {
                'face': stack(0, np.uint8),
                'landmarks': stack(1, np.uint8),
                'mask': stack(2, np.uint8),
                'target_face': stack(3, np.uint8),
                'identity': stack(4, np.int32),
                'same': stack(5, np.float32),
                'position': (step * g + rows).astype(np.int64),
            }
            step += 1
