"""Identity metrics (`evaluation/identity.py`) on `skimage.data.astronaut()`: the unaltered face
is itself (distance ~0, rank-1 re-identification 1), the blacked-out one is not (> 0.6);
ranks, identity labels and FID-dlib on hand-made descriptors; faces counted by reason."""

import numpy as np
import pytest
import skimage.data

from safefakes_jax.anonymizers import identity as identity_model
from safefakes_jax.data import face_pairs
from safefakes_jax.evaluation import identity

ASTRONAUT_BOX = (175, 76, 91, 91)  # As in test_audit.py: dlib's detection, corners inclusive.
# Other regions of the picture (shoulder, flag, rocket, background) as a gallery of non-faces.
OTHER_BOXES = [(300, 300, 100, 100), (20, 20, 90, 90), (400, 40, 80, 80), (60, 350, 100, 100)]


def test_astronaut_is_itself_and_blackout_is_not():
    model = identity_model.load()
    img = skimage.data.astronaut()
    black = img.copy()
    x, y, w, h = ASTRONAUT_BOX
    black[y : y + h, x : x + w] = 0
    boxes = [ASTRONAUT_BOX, *OTHER_BOXES]
    orig, same = model.descriptor_pairs(img, img.copy(), boxes)
    _, blacked = model.descriptor_pairs(img, black, boxes)
    itself = identity.summarize(orig, same)
    assert itself['mean_distance'] < 0.05 and itself['match_rate'] == 1.0
    assert itself['rank1'] == 1.0 and itself['rank5'] == 1.0
    face_only = identity.summarize(orig[:1], blacked[:1])
    assert face_only['mean_distance'] > identity.MATCH_THRESHOLD
    assert face_only['match_rate'] == 0.0


def test_ranks_identities_and_fid_dlib_on_hand_made_descriptors():
    gallery = np.eye(4, 128, dtype=np.float32)  # Four faces, pairwise distance sqrt(2).
    anon = gallery.copy()
    anon[1] = gallery[2] * 0.9  # Face 1 now looks like face 2.
    anon[3] = 0.5 * (gallery[3] + gallery[0])  # Face 3 halfway to face 0: a tie, counted against.
    out = identity.summarize(gallery, anon, identities=[7, 8, 8, 9])
    assert out['faces'] == 4
    assert out['rank1'] == pytest.approx(0.5) and out['rank5'] == 1.0
    # Face 1 re-identifies to face 2, another image of identity 8; face 3's nearest is face 0.
    assert out['rank1_identity'] == pytest.approx(0.75)
    assert out['rank1_identity_original'] == pytest.approx(0.0)  # Identity 8's are sqrt(2) apart.
    assert out['fid_dlib'] > 0
    assert identity.summarize(gallery, gallery)['fid_dlib'] == pytest.approx(0, abs=1e-6)
    assert identity.summarize(gallery[:0], gallery[:0])['rank1'] is None


def test_faces_below_40px_and_skipped_records_are_counted_not_measured():
    pair = face_pairs.ImagePair(
        name='a.jpg',
        orig_path='a.jpg',
        anon_name=None,
        anon_path=None,
        boxes=((0, 0, 30, 30), (0, 0, 50, 50), (0, 0, 60, 60), (0, 0, 80, 80)),
        method='x',
        records=('anonymized', 'anonymized', 'skipped:below_min_face_px', 'anonymized'),
    )
    a, b, rows, skipped = identity.embed_pairs([pair])
    assert len(a) == len(b) == 0 and rows == []
    assert skipped == {'small': 1, 'record:skipped:below_min_face_px': 1, 'missing': 2}
