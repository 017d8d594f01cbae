"""TFDS builder for any local WIDER-layout folder (real, synthetic or anonymized), offline.

WIDER FACE cannot be downloaded automatically, so this builder never downloads: it reads
`ROOT/wider_face_split/wider_face_{train,val}_bbx_gt.txt` with `wider.read_bbx_gt` and the
JPEG (or PNG: lossless anonymized copies) files under `ROOT/WIDER_{train,val}/images`, and
writes TFRecords with the encoded bytes kept exactly as they are on disk (no re-encoding, so an
anonymized image is trained on byte-for-byte as the anonymizer wrote it).

Features of one example:

* `image`: the JPEG or PNG bytes (decoded to uint8 [H, W, 3] unless decoding is skipped; the
  feature's nominal encoding is JPEG, but the bytes are stored as they are and TFDS decodes
  either format).
* `image/format`: `jpeg` or `png`, for pipelines that decode the bytes themselves.
* `image/filename`: `event/name.jpg` (or `.png`) as in the annotation file.
* `width`, `height`: int32 image size in pixels (read from the file, which is fully decoded
  once at preparation to catch corrupt files).
* `faces`: a sequence of `bbox` (`tfds.features.BBoxFeature`, normalised `ymin xmin ymax xmax`
  of the box `x y x+w y+h`, clipped to the image) and one int32 per `wider.ATTRIBUTE_NAMES`.
  Rows with w <= 0 or h <= 0, and boxes with no area inside the image, are not faces.

Splits: 'train' and 'validation' (read from the `val` files), each only when its annotation file
exists and lists at least one image. A listed image missing on disk is an error naming the
file and line (both splits). So is an image name that is not a plain relative path (`..`, an
absolute path) or that resolves outside `WIDER_<split>/images` (a symlink out of the folder):
`prepare` reads and checks both annotation files before TFDS writes anything.

Different folders never collide in one TFDS data_dir: the builder config name is
`<folder name>_<hash>` where the hash covers the folder's resolved path, its annotation files
and the size and mtime of every listed image. An edited folder (new annotations, rewritten
images) therefore gets a new config and is prepared again; old configs stay until deleted.

Where the records go (the TFDS data_dir), first that applies:

1. the `data_dir` argument (the trainers pass `config.data.tfds_dir` when it is not empty);
2. `$SAFEFAKES_TFDS_DIR`;
3. `$XDG_CACHE_HOME/safefakes_jax/tfds` (when `$XDG_CACHE_HOME` is an absolute path);
4. `~/.cache/safefakes_jax/tfds`.

Never beside or inside the dataset folders: the records hold a copy of every image of a
folder, so a cache next to an anonymized copy (older versions used `ROOT/../.tfds`) would hand
out the original images to anyone given the parent folder. `prepare` logs the location (one
info line per folder it prepares) and warns once about such a leftover `ROOT/../.tfds`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re

import numpy as np
import PIL.Image
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging as absl_logging

from safefakes_jax.data import root_paths, wider

# Split names of the builder -> file names of the WIDER layout.
SPLIT_FILES = {'train': 'train', 'validation': 'val'}


def hide_gpus_from_tf() -> None:
    """Keeps TensorFlow off the GPUs (JAX owns them); a no-op once TF has initialised."""
    try:
        tf.config.set_visible_devices([], 'GPU')
    except (RuntimeError, ValueError):  # Devices already initialised: nothing to do.
        pass


hide_gpus_from_tf()


class _DropCustomConfigWarning(logging.Filter):
    """TFDS warns 'Using custom data configuration' on every builder; ours are all custom."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'custom data configuration: WiderConfig' not in record.getMessage()


logging.getLogger('absl').addFilter(_DropCustomConfigWarning())


@dataclasses.dataclass(eq=False)
class WiderConfig(tfds.core.BuilderConfig):
    """A builder config bound to one source folder.

    Attributes:
      root: the resolved WIDER-layout folder.
    """

    root: str = ''


def jpeg_size(data: bytes, name: str = '<bytes>') -> tuple[int, int]:
    """(width, height) of a JPEG, checking that the whole file decodes.

    Pillow decodes at 1/8 scale (JPEG DCT scaling), which still reads every entropy-coded byte,
    so a truncated or corrupt file fails here, at preparation, with its name, instead of
    mid-training.

    Raises:
      ValueError: not a JPEG, or a truncated / corrupt one; the message names `name`.
    """
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            if im.format != 'JPEG':
                raise ValueError(f'{name}: not a JPEG file (WIDER-layout images must be JPEG)')
            width, height = im.size
            im.draft('RGB', (max(1, width // 8), max(1, height // 8)))
            im.load()
    except (OSError, SyntaxError) as e:  # PIL's errors for unreadable and truncated files.
        raise ValueError(f'{name}: corrupt or truncated image ({e})') from e
    return int(width), int(height)


def image_size(data: bytes, name: str = '<bytes>') -> tuple[int, int, str]:
    """(width, height, 'jpeg' | 'png') of a JPEG or PNG, checking that the whole file decodes.

    JPEGs go through `jpeg_size`; PNGs are decoded in full (zlib has no cheap partial decode).

    Raises:
      ValueError: neither a JPEG nor a PNG, or a truncated / corrupt file; names `name`.
    """
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        try:
            return (*jpeg_size(data, name), 'jpeg')
        except ValueError as e:
            if 'not a JPEG' in str(e):
                raise ValueError(
                    f'{name}: not a JPEG or PNG file (WIDER-layout images must be one of them)'
                ) from None
            raise
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            im.load()
    except (OSError, SyntaxError) as e:
        raise ValueError(f'{name}: corrupt or truncated image ({e})') from e
    return int(width), int(height), 'png'


def _faces(ann: wider.ImageAnnotation, width: int, height: int) -> dict[str, np.ndarray]:
    """Normalised, clipped boxes and attributes of the real faces of one image."""
    boxes = ann.boxes.astype(np.float64)
    x1, y1 = np.clip(boxes[:, 0], 0, width), np.clip(boxes[:, 1], 0, height)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    # Dummy / degenerate rows and boxes entirely outside the image are not faces.
    keep = (ann.boxes[:, 2] > 0) & (ann.boxes[:, 3] > 0) & (x2 > x1) & (y2 > y1)
    bbox = np.stack([y1 / height, x1 / width, y2 / height, x2 / width], -1)[keep]
    faces = {'bbox': np.clip(bbox, 0.0, 1.0).astype(np.float32).reshape(-1, 4)}
    for col, attr in enumerate(wider.ATTRIBUTE_NAMES):
        faces[attr] = ann.attributes[keep, col].astype(np.int32)
    return faces


class WiderFaceLocal(tfds.core.GeneratorBasedBuilder):
    """WIDER FACE (or any folder in its layout) read from local disk; nothing is downloaded."""

    VERSION = tfds.core.Version('1.1.0')
    RELEASE_NOTES = {
        '1.0.0': 'JPEG bytes as on disk, boxes, attributes, image size.',
        '1.1.0': 'PNG images too; image/format feature.',
    }

    def _info(self) -> tfds.core.DatasetInfo:
        face = {'bbox': tfds.features.BBoxFeature()}
        face.update({attr: np.int32 for attr in wider.ATTRIBUTE_NAMES})
        return self.dataset_info_from_configs(
            description='WIDER FACE layout folder: ' + self.builder_config.root,
            features=tfds.features.FeaturesDict(
                {
                    'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
                    'image/format': tfds.features.Text(),
                    'image/filename': tfds.features.Text(),
                    'width': np.int32,
                    'height': np.int32,
                    'faces': tfds.features.Sequence(face),
                }
            ),
            homepage='http://shuoyang1213.me/WIDERFACE/',
        )

    def read_annotations(self) -> dict[str, tuple[list[wider.ImageAnnotation], str]]:
        """`{split: (annotations, images folder)}` of the non-empty splits, read and checked once.

        Raises:
          wider.FormatError: a malformed annotation file (naming the file and line).
          root_paths.PathEscapeError: an image name that is not a plain relative path, or one
            resolving outside its images folder (naming the file and line).
          FileNotFoundError: a listed image is missing, or no split lists any image.
        """
        cached = getattr(self, '_annotations', None)
        if cached is not None:
            return cached
        splits = {}
        for split, files in SPLIT_FILES.items():
            txt, images_dir = wider.split_paths(self.builder_config.root, files)
            if not os.path.isfile(txt):
                continue
            # strict: a listed image missing on disk is an error naming it (a training set
            # silently short of images would bias every experiment built on it); names that
            # leave images_dir are refused (wider.read_bbx_gt).
            # allow_negative: the real val split has a w = -2 row; _faces drops such rows.
            annotations = wider.read_bbx_gt(txt, images_dir, strict=True, allow_negative=True)
            if annotations:  # TFDS cannot write an empty split.
                splits[split] = (annotations, images_dir)
        if not splits:
            raise FileNotFoundError(
                f'{self.builder_config.root}: no non-empty '
                'wider_face_split/wider_face_{train,val}_bbx_gt.txt found'
            )
        self._annotations = splits
        return splits

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data is the local folder.
        return {
            split: self._generate_examples(annotations, images_dir)
            for split, (annotations, images_dir) in self.read_annotations().items()
        }

    def _generate_examples(self, annotations: list[wider.ImageAnnotation], images_dir: str):
        for ann in annotations:
            # Checked again at the read: the folder may have changed since it was listed.
            path = root_paths.resolve_inside(images_dir, ann.name, f'image {ann.name}')
            with open(path, 'rb') as f:
                data = f.read()
            width, height, fmt = image_size(data, path)
            yield (
                ann.name,
                {
                    'image': data,
                    'image/format': fmt,
                    'image/filename': ann.name,
                    'width': width,
                    'height': height,
                    'faces': _faces(ann, width, height),
                },
            )


def fingerprint(root: str | os.PathLike) -> str:
    """Hex digest of a WIDER folder: resolved path, annotation files, image sizes and mtimes."""
    root = os.path.realpath(os.fspath(root))
    digest = hashlib.sha256(root.encode())
    for files in SPLIT_FILES.values():
        txt, images_dir = wider.split_paths(root, files)
        if not os.path.isfile(txt):
            digest.update(f'no {files}'.encode())
            continue
        with open(txt, 'rb') as f:
            text = f.read()
        digest.update(text)
        # Rewritten images (same annotations, e.g. a re-run anonymizer) must be re-prepared too;
        # stat is cheap next to reading every file.
        for line in text.decode('utf-8', 'replace').splitlines():
            name = line.strip()
            if name.lower().endswith(('.jpg', '.jpeg', '.png')):
                if root_paths.name_problem(name):  # Refused at preparation; never stat'ed.
                    digest.update(f'{name}:unsafe'.encode())
                    continue
                try:
                    st = os.stat(os.path.join(images_dir, name))
                    digest.update(f'{name}:{st.st_size}:{st.st_mtime_ns}'.encode())
                except FileNotFoundError:
                    digest.update(f'{name}:missing'.encode())
    return digest.hexdigest()


def config_name(root: str | os.PathLike) -> str:
    """`<folder name>_<16 hex digits of fingerprint>`, lower case, safe as a directory name."""
    base = os.path.basename(os.path.realpath(os.fspath(root))) or 'root'
    base = re.sub(r'[^a-z0-9]+', '_', base.lower()).strip('_')[:40] or 'root'
    return f'{base}_{fingerprint(root)[:16]}'


def default_data_dir() -> str:
    """The data_dir used when none is given: rules 2-4 of the module docstring."""
    env = os.environ.get('SAFEFAKES_TFDS_DIR')
    if env:
        return os.path.abspath(os.path.expanduser(env))
    xdg = os.environ.get('XDG_CACHE_HOME', '')
    cache = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache, 'safefakes_jax', 'tfds')


_WARNED_LEFTOVERS: set[str] = set()


def _warn_leftover_cache(root: str, data_dir: str) -> None:
    """Warns once per process about a `ROOT/../.tfds` of older versions (module docstring)."""
    old = os.path.join(os.path.dirname(root), '.tfds')
    if old in _WARNED_LEFTOVERS or not os.path.isdir(old):
        return
    _WARNED_LEFTOVERS.add(old)
    if os.path.realpath(old) != os.path.realpath(data_dir):
        absl_logging.warning(
            'Found %s, a TFDS cache of an older version beside the dataset folders: it holds a '
            'copy of the images of every folder prepared there (originals included). Delete '
            'it unless you use it; records now go to %s.',
            old,
            data_dir,
        )


def builder(root: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> WiderFaceLocal:
    """The TFDS builder of a WIDER-layout folder (not prepared yet; see `prepare`).

    Args:
      root: the WIDER-layout folder.
      data_dir: where TFDS stores the prepared records (default: `default_data_dir()`).
    """
    root = os.path.realpath(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f'{root}: WIDER-layout folder not found')
    config = WiderConfig(
        name=config_name(root),
        version=WiderFaceLocal.VERSION,
        root=root,
        description=f'WIDER-layout folder {root}',
    )
    data_dir = default_data_dir() if not data_dir else os.fspath(data_dir)
    return WiderFaceLocal(config=config, data_dir=data_dir)


def prepare(root: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> WiderFaceLocal:
    """`builder(root, data_dir)`, prepared (written once, offline) and ready to read.

    Before TFDS writes anything, both annotation files are read and checked
    (`WiderFaceLocal.read_annotations`): a malformed file, a missing image or an image name
    leaving its folder is an error naming the file and line, and nothing is prepared.
    """
    b = builder(root, data_dir)
    _warn_leftover_cache(b.builder_config.root, os.fspath(b.data_dir_root))
    if not b.is_prepared():
        b.read_annotations()
        absl_logging.info(
            'Preparing the TFDS records of %s in %s (set $SAFEFAKES_TFDS_DIR or '
            'config.data.tfds_dir to put them elsewhere).',
            b.builder_config.root,
            b.data_dir,
        )
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return b


def tfds_split(split: str) -> str:
    """Maps a WIDER split name ('val', 'val[:10]') onto the builder's ('validation[:10]')."""
    if split.startswith('val') and not split.startswith('validation'):
        return 'validation' + split[3:]
    return split


def check_split(b: WiderFaceLocal, split: str) -> str:
    """The builder's name of `split`; a clear error if the folder has no such split."""
    name = tfds_split(split).split('[')[0]
    if name not in b.info.splits:
        raise ValueError(
            f'{b.builder_config.root}: no {split!r} split (prepared splits: '
            f'{sorted(b.info.splits)}; a split needs a non-empty '
            'wider_face_split/wider_face_<split>_bbx_gt.txt)'
        )
    return name


def load(
    root: str | os.PathLike,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    decode_image: bool = True,
    shuffle_files: bool = False,
    read_config: tfds.ReadConfig | None = None,
) -> tf.data.Dataset:
    """Prepares `root` if needed and returns one split as a `tf.data.Dataset` of examples.

    Args:
      root: a WIDER-layout folder.
      split: 'train', 'val' / 'validation', or a TFDS slice of them ('train[:10%]').
      data_dir: see `builder`.
      decode_image: False keeps `image` as the encoded bytes (tf.string; `image/format` says
        JPEG or PNG), for pipelines that decode (and crop) themselves.
      shuffle_files: passed to `as_dataset`.
      read_config: passed to `as_dataset`.

    Returns:
      Examples with the features listed in the module docstring.
    """
    b = prepare(root, data_dir)
    check_split(b, split)
    decoders = None if decode_image else {'image': tfds.decode.SkipDecoding()}
    return b.as_dataset(
        split=tfds_split(split),
        decoders=decoders,
        shuffle_files=shuffle_files,
        read_config=read_config,
    )
