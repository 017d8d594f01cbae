r"""Pictures of anonymization (PNG), from anonymized copies or anonymizing on the fly.

From copies: one row per image, the original first, then each anonymized copy, with the
annotated boxes drawn in; with `--faces K`, the K largest faces instead, one row per face, cut
with the GANs' context rule and enlarged.

  python tools/anonymization_grid.py --orig cache/synthetic_wider \
      --anon cache/synthetic_wider_blur --anon cache/synthetic_wider_deepprivacy \
      --images 4 --out cache/demo/anonymization_grid.png
  python tools/anonymization_grid.py --orig cache/synthetic_wider \
      --anon cache/synthetic_wider_deepprivacy --faces 6 --out cache/demo/faces.png

Copies are paired with the original by `safefakes_jax.data.face_pairs` (names confined to their
folders; a copy's missing image is drawn black). Images are those of the original's txt with
the most faces of at least `--min_face_px`, resized to `--width` pixels. `--no_boxes` leaves the
boxes out. Columns are titled with each copy's method label. Exit status 2 on bad input.

On the fly (the paper's Fig. 1): ONE scene under every `--method`, side by side, and below each
the largest annotated face, cut with `face_crops.crop_box` context and enlarged (marked with a
red box in the scene), columns titled with the method names:

  python tools/anonymization_grid.py --scene cache/synthetic_wider --method original \
      --method blur --method pixelate --method blackout --method fullblur \
      --method deepprivacy --method ciagan --method sun2018 --out docs/images/methods.png
  python tools/anonymization_grid.py --image photo.jpg --boxes photo_boxes.txt \
      --method original --method blur --method deepprivacy --out photo_methods.png

Each method is built as `launch/anonymize.py` builds it, from `configs/anonymize/<method>.py`
(with its `:smoke` argument unless `--no-smoke_gans`; `--weights METHOD=DIR` points a GAN at
other weights). Keypoints: the set's landmarks sidecar for a scene, dlib's 68 landmarks for a
user image (`--boxes`: one WIDER `x y w h [blur ... pose]` row per face). The image's rng is the
engine's (`engine_worker.image_seed`). A method whose weights are missing is drawn as a grey
cell, named in one warning; any other failure exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from safefakes_jax.anonymizers import base, engine_worker, wider_copy  # noqa: E402
from safefakes_jax.data import atomic_io, face_crops, face_pairs, images, root_paths, wider  # noqa: E402
from safefakes_jax.evaluation import image_grids  # noqa: E402


def grid(
    orig: str,
    anons: list[str],
    split: str = 'train',
    n_images: int = 4,
    width: int = 480,
    min_face_px: int = 10,
    boxes: bool = True,
) -> np.ndarray:
    """The grid image (module docstring)."""
    pairings = [face_pairs.pair_images(orig, anon, split) for anon in anons]
    pairs = pairings[0].pairs
    faces = [sum(int(b[2]) >= min_face_px for b in p.boxes) for p in pairs]
    chosen = sorted(np.argsort(faces, kind='stable')[::-1][:n_images])
    cells = []
    for i in chosen:
        original = images.read(pairs[i].orig_path)
        row = [original]
        for pairing in pairings:
            path = pairing.pairs[i].anon_path
            row.append(images.read(path) if path else np.zeros_like(original))
        h, w = original.shape[:2]
        size = (width, max(1, round(h * width / w)))
        for image in row:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if boxes:
                xyxy = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in pairs[i].boxes])
                image = image_grids.draw_boxes(image, xyxy.reshape(-1, 4) * width / w)
            cells.append(image)
    heights = {c.shape[0] for c in cells}
    if len(heights) > 1:  # Images of different aspect: pad to the tallest.
        top = max(heights)
        cells = [np.pad(c, ((0, top - c.shape[0]), (0, 0), (0, 0))) for c in cells]
    picture = image_grids.tile(cells, cols=1 + len(anons))
    return image_grids.add_column_labels(picture, _labels(pairings), width)


def _labels(pairings) -> list[str]:
    return ['original'] + [p.pairs[0].method if p.pairs else '?' for p in pairings]


def face_grid(
    orig: str, anons: list[str], split: str = 'train', n_faces: int = 6, size: int = 128
) -> np.ndarray:
    """The `n_faces` largest faces (by box width), original and copies, `size` px each."""
    pairings = [face_pairs.pair_images(orig, anon, split) for anon in anons]
    pairs = pairings[0].pairs
    faces = sorted(
        ((-int(b[2]), i, k) for i, p in enumerate(pairs) for k, b in enumerate(p.boxes)),
    )[:n_faces]
    cells, decoded = [], {}

    def read(path):
        if path not in decoded:
            decoded[path] = images.read(path)
        return decoded[path]

    for _, i, k in faces:
        crop = face_crops.crop_box(pairs[i].boxes[k])
        original = read(pairs[i].orig_path)
        cells.append(face_crops.cut(original, crop, size))
        for pairing in pairings:
            path = pairing.pairs[i].anon_path
            copy = read(path) if path else np.zeros_like(original)
            cells.append(face_crops.cut(copy, crop, size))
    picture = image_grids.tile(cells, cols=1 + len(anons))
    return image_grids.add_column_labels(picture, _labels(pairings), size)


# --------------------------------------------------------------------------- one scene, on the fly

ORIGINAL = 'original'
GREY = 128
MARK = (255, 0, 0)


@dataclasses.dataclass
class Scene:
    """One image to draw: RGB uint8 HWC, WIDER `x y w h` boxes, per-face keypoints (or None),
    its name (for the rng) and the keypoint source GANs use (None: their config's)."""

    image: np.ndarray
    boxes: np.ndarray
    keypoints: list | None
    name: str
    keypoint_source: str | None = None


@dataclasses.dataclass
class Cell:
    """A method's anonymized image, or None with the reason it could not be made."""

    method: str
    image: np.ndarray | None
    missing: str = ''


def synthetic_scene(root: str, name: str = '', split: str = 'train', large_px: int = 32) -> Scene:
    """Image `name` of `root`'s split (empty: the one with the most faces >= `large_px` wide),
    with its landmarks sidecar keypoints."""
    txt, images_dir = wider.require_split(root, split)
    annotations = wider.read_bbx_gt(txt, allow_negative=True)
    if not annotations:
        raise ValueError(f'{txt}: lists no image')
    if name:
        found = [a for a in annotations if a.name == name]
        if not found:
            raise ValueError(f'{txt}: no image {name!r}')
        index = annotations.index(found[0])
    else:
        large = [int((a.boxes[:, 2] >= large_px).sum()) for a in annotations]
        index = int(np.argmax(large))  # First of the most: stable.
    ann = annotations[index]
    keypoints = wider_copy.load_keypoints(root, split, [ann])[0]
    path = root_paths.resolve_inside(images_dir, ann.name, f'{txt}:{ann.line}')
    return Scene(images.read(path), ann.boxes, keypoints, ann.name)


def read_boxes(path: str) -> np.ndarray:
    """int32 [N, 4] `x y w h` of a box file: one WIDER row per face (`x y w h`, or all 10 fields
    of the txt's rows), blank lines ignored.

    Raises:
      wider.FormatError: a row that is not 4 or 10 integers, or with a negative size (naming
        the file and line).
    """
    boxes = []
    for lineno, line in enumerate(wider.read_text_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (4, 10):
            raise wider.FormatError(
                path, lineno, f'expected x y w h (4 or 10 fields), got {len(fields)}: {line!r}'
            )
        try:
            values = [int(f) for f in fields[:4]]
        except ValueError:
            raise wider.FormatError(path, lineno, f'non-integer field: {line.strip()!r}') from None
        if values[2] < 0 or values[3] < 0:
            raise wider.FormatError(path, lineno, f'negative width or height: {line.strip()!r}')
        boxes.append(values)
    return np.asarray(boxes, np.int32).reshape(-1, 4)


def user_scene(image_path: str, boxes_path: str) -> Scene:
    """A user's image and box file; GANs find keypoints with dlib (68 landmarks)."""
    return Scene(
        images.read(image_path),
        read_boxes(boxes_path),
        None,
        os.path.basename(image_path),
        keypoint_source='dlib68',
    )


def method_config(method: str, smoke_gans: bool = True, weights: str | None = None):
    """`configs/anonymize/<method>.py`'s config (`:smoke` when `smoke_gans`), `weights` as
    `anonymizer.params` when given."""
    known = sorted(
        f[:-3]
        for f in os.listdir(os.path.join(_ROOT, 'configs', 'anonymize'))
        if f.endswith('.py') and f not in ('__init__.py', 'anonymize_base.py')
    )
    if method not in known:
        raise ValueError(f'unknown method {method!r}; known: {ORIGINAL}, {", ".join(known)}')
    module = importlib.import_module(f'configs.anonymize.{method}')
    # `:smoke` changes only the GANs' weights and keypoints (and the src, unused here).
    config = module.get_config('smoke' if smoke_gans else None)
    if weights is not None:
        if 'params' not in config.anonymizer:
            raise ValueError(f'--weights {method}=...: {method} has no weights')
        config.anonymizer.params = weights
    return config


def anonymize_scene(
    scene: Scene,
    methods: list[str],
    smoke_gans: bool = True,
    weights: dict[str, str] | None = None,
) -> list[Cell]:
    """One cell per method: the scene anonymized as the engine would (its rng, keypoints).

    Raises:
      ValueError, KeyError, OSError: a bad method, config or input (but not missing weights:
        such a cell has `image=None`).
    """
    weights = weights or {}
    cells = []
    for method in methods:
        if method == ORIGINAL:
            cells.append(Cell(method, scene.image.copy()))
            continue
        config = method_config(method, smoke_gans, weights.get(method))
        options = config.anonymizer
        with options.unlocked():
            if scene.keypoint_source and 'keypoints' in options:
                options.keypoints = scene.keypoint_source
            if 'face_batch' in options:  # Output does not depend on it; one compile for all.
                options.face_batch = max(1, min(options.face_batch, len(scene.boxes)))
        try:  # Registers a method that base.BUILTIN_MODULES does not (yet) list.
            importlib.import_module(f'safefakes_jax.anonymizers.{options.name}')
        except ModuleNotFoundError:
            pass
        anonymizer = base.create_from_config(options)
        rng = np.random.default_rng(engine_worker.image_seed(config.seed, scene.name))
        keypoints = scene.keypoints if anonymizer.needs_keypoints else None
        item = base.Item(scene.image, scene.boxes, keypoints, rng, scene.name)
        try:
            result = anonymizer.anonymize_batch([item])[0]
        except FileNotFoundError:  # The weights: the image is read already.
            if 'params' not in options:
                raise
            cells.append(Cell(method, None, options.params or '(no params)'))
            continue
        cells.append(Cell(method, result.image))
    return cells


def largest_box(boxes: np.ndarray) -> np.ndarray:
    """The annotated `x y w h` box of largest area (the face the picture enlarges)."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    if not len(boxes) or (boxes[:, 2:] <= 0).any(axis=1).all():
        raise ValueError('the scene has no face box to enlarge')
    area = np.where((boxes[:, 2:] > 0).all(axis=1), boxes[:, 2] * boxes[:, 3], -1)
    return boxes[int(np.argmax(area))]


def scene_picture(
    cells: list[Cell], boxes: np.ndarray, width: int = 320, face_size: int = 0
) -> np.ndarray:
    """The Fig. 1 picture: a column per cell, the scene `width` px wide with the enlarged face
    marked, and below it that face, `face_size` px square (0: width // 2), centred."""
    face_size = min(face_size or width // 2, width)
    crop = face_crops.crop_box(largest_box(boxes))
    shapes = [c.image.shape[:2] for c in cells if c.image is not None]
    if not shapes:
        raise ValueError('no method gave an image (add --method original)')
    h, w = shapes[0]
    height = max(1, round(h * width / w))
    columns = []
    for cell in cells:
        if cell.image is None:
            scene = np.full((height, width, 3), GREY, np.uint8)
            face = np.full((face_size, face_size, 3), GREY, np.uint8)
            cv2.putText(
                scene, f'{cell.method}: no weights', (6, height // 2),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
            )  # fmt: skip
        else:
            scene = cv2.resize(cell.image, (width, height), interpolation=cv2.INTER_AREA)
            scene = image_grids.draw_boxes(scene, crop * width / w, MARK, 2)
            face = face_crops.cut(cell.image, crop, face_size)
        below = np.full((face_size + 2, width, 3), 255, np.uint8)
        left = (width - face_size) // 2
        below[2:, left : left + face_size] = face
        columns.append(np.concatenate([scene, below]))
    picture = image_grids.tile(columns, cols=len(columns))
    return image_grids.add_column_labels(picture, [c.method for c in cells], width)


def missing_warning(cells: list[Cell]) -> str:
    """One line naming the methods drawn grey and their folders (empty when none)."""
    missing = [f'{c.method} ({c.missing})' for c in cells if c.image is None]
    if not missing:
        return ''
    return (
        f'warning: no weights for {", ".join(missing)}: drawn as grey cells; train them as '
        'configs/anonymize/<method>.py says'
    )


def save_small_png(path: str, picture: np.ndarray, bits: int = 8) -> int:
    """Writes `picture` as a maximally compressed PNG, each channel cut to its top `bits` bits
    (6 looks the same and halves the file of a noisy scene); returns its size in bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f'PNG bits per channel must be 1..8, got {bits}')
    if bits < 8:
        drop = 8 - bits
        picture = (picture >> drop << drop) | (1 << (drop - 1))  # Mid-bin: no darkening.
    bgr = cv2.cvtColor(np.ascontiguousarray(picture, np.uint8), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode('.png', bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OSError(f'{path}: PNG encoding failed')
    atomic_io.write_bytes(path, data.tobytes())
    return len(data)


def _weights(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        method, sep, folder = value.partition('=')
        if not sep or not method:
            raise ValueError(f'--weights expects METHOD=DIR, got {value!r}')
        out[method] = folder
    return out


def _scene_main(args) -> int:
    try:
        if args.scene:
            scene = synthetic_scene(args.scene, args.scene_image, args.split, args.large_face_px)
        else:
            if not args.boxes:
                raise ValueError('--image needs --boxes (one x y w h row per face)')
            scene = user_scene(args.image, args.boxes)
        methods = args.method or [ORIGINAL]
        cells = anonymize_scene(scene, methods, args.smoke_gans, _weights(args.weights))
        picture = scene_picture(cells, scene.boxes, args.width, args.face_size)
    except Exception as e:  # noqa: BLE001 (a clear message, status 2, for any failure)
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
        return 2
    if warning := missing_warning(cells):
        print(warning, file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    size = save_small_png(args.out, picture, args.png_bits)
    print(
        f'wrote {args.out} ({picture.shape[1]}x{picture.shape[0]}, {size // 1024} KiB, '
        f'{scene.name})'
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--orig', help='original WIDER-layout folder')
    parser.add_argument('--anon', action='append', default=[], help='anonymized copy')
    parser.add_argument('--split', default='train')
    parser.add_argument('--images', type=int, default=4)
    parser.add_argument('--width', type=int, default=None, help='pixels per column')
    parser.add_argument('--min_face_px', type=int, default=10)
    parser.add_argument('--no_boxes', action='store_true')
    parser.add_argument('--faces', type=int, default=0, help='the K largest faces instead')
    parser.add_argument('--face_size', type=int, default=None, help='pixels per face')
    parser.add_argument('--scene', help='on the fly: a WIDER-layout folder (synthetic: sidecar)')
    parser.add_argument(
        '--scene_image', default='', help='its event/name.jpg (default: most faces)'
    )
    parser.add_argument('--large_face_px', type=int, default=32, help='"large" for the default')
    parser.add_argument('--image', help='on the fly: a user image (with --boxes)')
    parser.add_argument('--boxes', help='its box file: one WIDER x y w h row per face')
    parser.add_argument('--method', action='append', default=[], help='original or a config')
    parser.add_argument('--smoke_gans', action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument('--weights', action='append', default=[], help='METHOD=DIR')
    parser.add_argument('--png_bits', type=int, default=6, help='bits per channel (on the fly)')
    parser.add_argument('--out', required=True, help='output PNG')
    args = parser.parse_args(argv)
    if args.scene or args.image:
        args.width, args.face_size = args.width or 320, args.face_size or 0
        return _scene_main(args)
    if not args.orig or not args.anon:
        parser.error('give --orig and --anon (copies), or --scene / --image (on the fly)')
    args.width, args.face_size = args.width or 480, args.face_size or 128
    try:
        if args.faces:
            picture = face_grid(args.orig, args.anon, args.split, args.faces, args.face_size)
        else:
            picture = grid(
                args.orig,
                args.anon,
                args.split,
                args.images,
                args.width,
                args.min_face_px,
                not args.no_boxes,
            )
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    image_grids.save_png(args.out, picture)
    print(f'wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})')
    return 0


if __name__ == '__main__':
    from absl import logging  # No library INFO lines (orbax restoring weights).

    logging.set_verbosity(logging.WARNING)  # Here, not in main(): tests call main().
    sys.exit(main())
