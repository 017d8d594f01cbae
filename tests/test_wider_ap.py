"""Tests for the WIDER FACE evaluator: hand-computed cases, a literal MATLAB oracle, properties."""

import math

import numpy as np
import pytest

from safefakes_jax.data import wider, wider_mat
from safefakes_jax.evaluation import wider_ap


def make_gt(images, keep=None):
    """GroundTruth from [(event, stem, boxes xywh)], keep: setting -> per-image index lists."""
    keep = keep or {s: [list(range(len(b))) for _, _, b in images] for s in wider.SETTINGS}
    return wider_mat.GroundTruth(
        sorted({e for e, _, _ in images}),
        [
            wider_mat.GroundTruthImage(
                e,
                s,
                np.asarray(b, np.int32).reshape(-1, 4),
                {k: np.asarray(keep[k][i], np.int64) for k in wider.SETTINGS},
            )
            for i, (e, s, b) in enumerate(images)
        ],
    )


def write_gt(gt_dir, gt):
    anns = [
        wider.ImageAnnotation(f'{im.event}/{im.stem}.jpg', im.boxes, np.zeros((len(im.boxes), 6)))
        for im in gt.images
    ]
    wider_mat.write_ground_truth(
        gt_dir, anns, {s: [im.keep[s] for im in gt.images] for s in wider.SETTINGS}
    )


# --------------------------------------------------------------------- the MATLAB oracle


def matlab_oracle(preds, gt, iou_thresh=0.5, thresh_num=1000):
    """A line-by-line transcription of eval_tools (read_pred/norm_score/evaluation/VOCap)."""
    pred_list = []
    for im in gt.images:
        p = np.asarray(preds.get((im.event, im.stem), np.zeros((0, 5))), float).reshape(-1, 5)
        order = sorted(range(len(p)), key=lambda i: -p[i, 4])  # Stable, descending.
        pred_list.append(p[order].copy())
    max_score, min_score = np.finfo(np.float32).tiny, np.finfo(np.float32).max
    for p in pred_list:
        if len(p):
            max_score = max(max_score, p[:, 4].max())
            min_score = min(min_score, p[:, 4].min())
    for p in pred_list:
        if len(p):
            p[:, 4] = (
                (p[:, 4] - min_score) / (max_score - min_score) if max_score != min_score else 1.0
            )
    aps = {}
    for setting in wider.SETTINGS:
        count_face = 0
        org_pr = np.zeros((thresh_num, 2))
        for im, pred in zip(gt.images, pred_list, strict=True):
            keep = im.keep[setting]
            count_face += len(keep)
            if len(im.boxes) == 0 or len(pred) == 0:
                continue
            ignore = np.zeros(len(im.boxes))
            ignore[keep] = 1
            gtb = im.boxes.astype(float).copy()
            gtb[:, 2:] += gtb[:, :2]
            pb = pred[:, :4].copy()
            pb[:, 2:] += pb[:, :2]
            recall_list = np.zeros(len(gtb))
            proposal_list = np.ones(len(pb))
            pred_recall = np.zeros(len(pb))
            for h in range(len(pb)):
                overlaps = []
                for g in range(len(gtb)):
                    w = min(gtb[g, 2], pb[h, 2]) - max(gtb[g, 0], pb[h, 0]) + 1
                    hh = min(gtb[g, 3], pb[h, 3]) - max(gtb[g, 1], pb[h, 1]) + 1
                    inter = w * hh
                    area_a = (gtb[g, 2] - gtb[g, 0] + 1) * (gtb[g, 3] - gtb[g, 1] + 1)
                    area_b = (pb[h, 2] - pb[h, 0] + 1) * (pb[h, 3] - pb[h, 1] + 1)
                    o = inter / (area_a + area_b - inter) if area_a + area_b - inter else math.nan
                    overlaps.append(0.0 if w <= 0 or hh <= 0 else o)
                valid = [(o, g) for g, o in enumerate(overlaps) if not math.isnan(o)]
                max_overlap, idx = max(valid, key=lambda t: (t[0], -t[1])) if valid else (-1, 0)
                if max_overlap >= iou_thresh:
                    if ignore[idx] == 0:
                        recall_list[idx] = -1
                        proposal_list[h] = -1
                    elif recall_list[idx] == 0:
                        recall_list[idx] = 1
                pred_recall[h] = np.sum(recall_list == 1)
            for t in range(1, thresh_num + 1):
                thresh = 1 - t / thresh_num
                r = [i for i in range(len(pred)) if pred[i, 4] >= thresh]
                if r:
                    r = r[-1]
                    org_pr[t - 1] += [np.sum(proposal_list[: r + 1] == 1), pred_recall[r]]
        with np.errstate(invalid='ignore', divide='ignore'):
            prec = org_pr[:, 1] / org_pr[:, 0]
        rec = org_pr[:, 1] / count_face
        mrec = np.concatenate([[0], rec, [1]])
        mpre = np.concatenate([[0], prec, [0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = np.fmax(mpre[i], mpre[i + 1])
        idx = [i for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]]
        aps[setting] = float(sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in idx))
    return aps


def random_case(seed, n_images=12):
    """Random ground truth and detections with duplicates, ignored faces and missing images."""
    rng = np.random.default_rng(seed)
    images, keep = [], {s: [] for s in wider.SETTINGS}
    preds = {}
    for i in range(n_images):
        k = int(rng.integers(0, 8))
        xy = rng.integers(0, 300, (k, 2))
        wh = rng.integers(2, 80, (k, 2))
        boxes = np.concatenate([xy, wh], 1) if k else np.zeros((1, 4), int)  # Dummy row.
        event, stem = f'{i % 3}--E', f'img_{i}'
        images.append((event, stem, boxes))
        hard = [j for j in range(k) if boxes[j, 3] >= 10]
        medium = [j for j in hard if boxes[j, 3] >= 30]
        easy = [j for j in medium if boxes[j, 3] >= 50]
        for s, lst in zip(('easy', 'medium', 'hard'), (easy, medium, hard), strict=True):
            keep[s].append(lst)
        if i % 5 == 4:
            continue  # No prediction for this image.
        rows = []
        for j in range(k):
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 (a duplicate) detections.
                jit = rng.normal(0, 0.1, 4) * np.repeat(boxes[j, 2:], 2)
                rows.append([*(boxes[j] + jit), rng.random()])
        for _ in range(int(rng.integers(0, 6))):  # False positives.
            rows.append([*rng.uniform(0, 300, 2), *rng.uniform(3, 60, 2), rng.random() * 0.7])
        rows = np.asarray(rows, float).reshape(-1, 5)
        if len(rows) > 2 and seed % 2:
            rows[1, 4] = rows[0, 4]  # Tied scores.
        preds[(event, stem)] = rows[rng.permutation(len(rows))]
    return make_gt(images, keep), preds


# --------------------------------------------------------------------- hand-computed cases


def test_duplicates_and_false_positive_hand_computed():
    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20], [100, 100, 20, 20]])])
    preds = {
        ('0--E', 'a'): np.array(
            [
                [0, 0, 20, 20, 0.9],  # TP on face 0
                [1, 0, 20, 20, 0.8],  # duplicate on face 0: FP
                [200, 200, 10, 10, 0.7],  # FP
                [100, 100, 20, 20, 0.6],
            ]
        )
    }  # TP on face 1
    # Normalised scores 1, 2/3, 1/3, 0: P/R = 1/.5 (t > 2/3), .5/.5, 1/3/.5, then .5/1 at t = 0.
    # AP = .5 * 1 + .5 * .5.
    result = wider_ap.evaluate(preds, gt)
    assert result == pytest.approx({'easy': 0.75, 'medium': 0.75, 'hard': 0.75}, abs=1e-12)
    curve = result.curves['hard']
    assert curve.recall[-1] == 1.0 and curve.precision[-1] == 0.5
    assert curve.thresholds[0] == pytest.approx(0.999) and curve.thresholds[-1] == 0.0


def test_ignored_face_is_neither_tp_nor_fp():
    gt = make_gt(
        [('0--E', 'a', [[0, 0, 20, 20], [100, 100, 60, 60]])],
        {'easy': [[1]], 'medium': [[0, 1]], 'hard': [[0, 1]]},
    )
    preds = {('0--E', 'a'): np.array([[0, 0, 20, 20, 0.9], [100, 100, 60, 60, 0.5]])}
    result = wider_ap.evaluate(preds, gt)
    # easy: the 0.9 detection hits the ignored face 0 and is removed; the other is a TP.
    assert result['easy'] == pytest.approx(1.0)
    assert result['hard'] == pytest.approx(1.0)
    assert np.nanmax(result.curves['easy'].precision) == 1.0


def test_missing_file_and_empty_images_still_count_faces(tmp_path):
    gt = make_gt(
        [
            ('0--E', 'a', [[0, 0, 20, 20]]),
            ('0--E', 'b', [[0, 0, 30, 30]]),
            ('1--F', 'zero', [[0, 0, 0, 0]]),
        ],
        {s: [[0], [0], []] for s in wider.SETTINGS},
    )
    write_gt(tmp_path / 'gt', gt)
    pred_dir = tmp_path / 'pred'
    wider.write_predictions(
        pred_dir,
        {('0--E', 'a'): np.array([[0, 0, 20, 20, 0.9]]), ('1--F', 'zero'): np.zeros((0, 5))},
    )
    # b has no file: its face counts as a miss. Recall tops out at 1/2, precision 1.
    result = wider_ap.evaluate(pred_dir, tmp_path / 'gt')
    assert result == pytest.approx({s: 0.5 for s in wider.SETTINGS})


def test_zero_face_image_detections_are_false_positives():
    gt = make_gt(
        [('0--E', 'a', [[0, 0, 20, 20]]), ('0--E', 'zero', [[0, 0, 0, 0]])],
        {s: [[0], []] for s in wider.SETTINGS},
    )
    preds = {
        ('0--E', 'a'): np.array([[0, 0, 20, 20, 0.5]]),
        ('0--E', 'zero'): np.array([[50, 50, 20, 20, 0.9]]),
    }
    # Scores 0 and 1: the FP alone first (P 0), then both (P 1/2, R 1).
    assert wider_ap.evaluate(preds, gt)['hard'] == pytest.approx(0.5)


def test_unsorted_file_equals_sorted_file(tmp_path):
    gt, preds = random_case(3)
    write_gt(tmp_path / 'gt', gt)
    sorted_preds = {k: v[np.argsort(-v[:, 4], kind='stable')] for k, v in preds.items()}
    wider.write_predictions(tmp_path / 'sorted', sorted_preds)
    wider.write_predictions(tmp_path / 'unsorted', preds)
    a = wider_ap.evaluate(tmp_path / 'sorted', tmp_path / 'gt')
    b = wider_ap.evaluate(tmp_path / 'unsorted', tmp_path / 'gt')
    assert a == b


def test_all_scores_equal_is_defined():
    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20], [100, 100, 20, 20]])])
    preds = {('0--E', 'a'): np.array([[0, 0, 20, 20, 0.3], [300, 300, 5, 5, 0.3]])}
    result = wider_ap.evaluate(preds, gt)  # All normalised to 1: P 1/2, R 1/2 everywhere.
    assert result['hard'] == pytest.approx(0.25)


def test_no_predictions_at_all_gives_zero():
    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20]])])
    assert wider_ap.evaluate({}, gt) == {s: 0.0 for s in wider.SETTINGS}


def test_setting_without_faces_is_nan_with_warning():
    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20]])], {'easy': [[]], 'medium': [[0]], 'hard': [[0]]})
    with pytest.warns(UserWarning, match="'easy' has no kept faces"):
        result = wider_ap.evaluate({('0--E', 'a'): np.array([[0, 0, 20, 20, 1.0]])}, gt)
    assert math.isnan(result['easy']) and result['hard'] == pytest.approx(1.0)


# --------------------------------------------------------------------- oracle and properties


@pytest.mark.parametrize('seed', range(8))
def test_matches_matlab_oracle(seed):
    gt, preds = random_case(seed)
    result = wider_ap.evaluate(preds, gt)
    expected = matlab_oracle(preds, gt)
    for s in wider.SETTINGS:
        assert result[s] == pytest.approx(expected[s], abs=1e-9), s


def test_small_chunks_give_the_same_result(monkeypatch):
    gt, preds = random_case(11, n_images=20)
    expected = wider_ap.evaluate(preds, gt)
    monkeypatch.setattr(wider_ap, '_PAIR_CHUNK', 7)
    assert wider_ap.evaluate(preds, gt) == expected


def test_folder_and_in_memory_paths_agree(tmp_path):
    gt, preds = random_case(5)
    write_gt(tmp_path / 'gt', gt)
    wider.write_predictions(tmp_path / 'pred', preds)
    from_folder = wider_ap.evaluate(tmp_path / 'pred', tmp_path / 'gt')
    in_memory = wider_ap.evaluate(preds, wider_mat.read_ground_truth(tmp_path / 'gt'))
    assert from_folder == in_memory
    for s in wider.SETTINGS:
        np.testing.assert_array_equal(
            from_folder.curves[s].precision, in_memory.curves[s].precision
        )


@pytest.mark.parametrize('seed', range(6))
def test_permuting_rows_does_not_change_ap(seed):
    gt, preds = random_case(seed)
    rng = np.random.default_rng(100 + seed)
    permuted = {k: v[rng.permutation(len(v))] for k, v in preds.items()}
    assert wider_ap.evaluate(permuted, gt) == wider_ap.evaluate(preds, gt)


@pytest.mark.parametrize('seed', range(6))
def test_far_detection_never_raises_ap(seed):
    gt, preds = random_case(seed)
    base = wider_ap.evaluate(preds, gt)
    rng = np.random.default_rng(seed)
    scores = np.concatenate([v[:, 4] for v in preds.values() if len(v)])
    key = next(k for k, v in preds.items() if len(v))
    # Far from every face, with a score inside the range (the normalisation is unchanged).
    far = [5000, 5000, 30, 30, rng.uniform(scores.min(), scores.max())]
    more = dict(preds)
    more[key] = np.concatenate([preds[key], [far]])
    result = wider_ap.evaluate(more, gt)
    for s in wider.SETTINGS:
        assert result[s] <= base[s] + 1e-12


# --------------------------------------------------------------------- bad input


def test_bad_prediction_files(tmp_path):
    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20]])])
    event_dir = tmp_path / 'pred' / '0--E'
    event_dir.mkdir(parents=True)
    (event_dir / 'a.txt').write_text('a\n1\n0 0 20 20 nan\n')
    with pytest.raises(wider.FormatError, match=r'a.txt:3: NaN or infinite'):
        wider_ap.evaluate(tmp_path / 'pred', gt)
    (event_dir / 'a.txt').write_text('a\n1\n0 0 20 20\n')
    with pytest.raises(wider.FormatError, match=r'a.txt:3: expected 5 fields'):
        wider_ap.evaluate(tmp_path / 'pred', gt)
    (event_dir / 'a.txt').write_text('a\n2\n0 0 20 20 0.5\n')
    with pytest.warns(UserWarning, match='count says 2 detections but 1 rows'):
        assert wider_ap.evaluate(tmp_path / 'pred', gt)['hard'] == pytest.approx(1.0)
    with pytest.raises(ValueError, match='NaN or infinite'):
        wider_ap.evaluate({('0--E', 'a'): np.array([[0, 0, 1, 1, np.inf]])}, gt)
    with pytest.raises(FileNotFoundError, match='prediction folder not found'):
        wider_ap.evaluate(tmp_path / 'nope', gt)


def test_unknown_prediction_images_warn_with_count(tmp_path):
    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20]])])
    preds = {
        ('0--E', 'a'): np.array([[0, 0, 20, 20, 0.5]]),
        ('0--E', 'x'): np.zeros((0, 5)),
        ('9--Z', 'y'): np.zeros((0, 5)),
    }
    with pytest.warns(UserWarning, match='2 prediction images are not in the ground truth'):
        wider_ap.evaluate(preds, gt)
    wider.write_predictions(tmp_path / 'p', preds)
    with pytest.warns(UserWarning, match='2 prediction images'):
        wider_ap.evaluate(tmp_path / 'p', gt)


def test_folder_without_any_matching_file_is_an_error(tmp_path):
    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20]]), ('1--F', 'b', [[0, 0, 30, 30]])])
    named_after_jpg = tmp_path / 'jpg_txt'
    (named_after_jpg / '0--E').mkdir(parents=True)
    (named_after_jpg / '0--E' / 'a.jpg.txt').write_text('a\n1\n0 0 20 20 0.9\n')
    with pytest.raises(
        wider_ap.NoMatchingPredictionsError,
        match=r'<pred>/<event>/<image stem>.txt.*0--E/a.jpg.txt',
    ):
        wider_ap.evaluate(named_after_jpg, gt)
    flat = tmp_path / 'flat'  # No event folders.
    flat.mkdir()
    (flat / 'a.txt').write_text('a\n1\n0 0 20 20 0.9\n')
    with pytest.raises(wider_ap.NoMatchingPredictionsError, match=r'0--E/a.txt; found a.txt'):
        wider_ap.evaluate(flat, gt)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(wider_ap.NoMatchingPredictionsError, match='found nothing'):
        wider_ap.evaluate(tmp_path / 'empty', gt)
    # In memory, a missing key stays "no detections" (documented): AP 0, no error.
    assert wider_ap.evaluate({}, gt) == {s: 0.0 for s in wider.SETTINGS}


def test_partial_folder_match_warns_with_the_count(tmp_path):
    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20]]), ('1--F', 'b', [[0, 0, 30, 30]])])
    wider.write_predictions(tmp_path / 'p', {('0--E', 'a'): np.array([[0, 0, 20, 20, 0.9]])})
    with pytest.warns(UserWarning, match='matched 1 of 2 ground-truth images'):
        result = wider_ap.evaluate(tmp_path / 'p', gt)
    assert (result.matched, result.images) == (1, 2)
    assert result['hard'] == pytest.approx(0.5)


@pytest.mark.parametrize('head', [b'\xef\xbb\xbf', b''])
def test_bom_or_non_utf8_prediction_file_names_file_and_line(tmp_path, head):
    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20]])])
    path = tmp_path / 'p' / '0--E' / 'a.txt'
    path.parent.mkdir(parents=True)
    # A BOM (the fast reader used to accept it), or a Latin-1 byte on line 3.
    path.write_bytes(head + b'a\n1\n0 0 20 20 0.5\n' if head else b'a\n1\n0 0 20 20 0.5 \xe9\n')
    expected = 'a.txt:1: file starts with a byte-order mark' if head else 'a.txt:3: not valid UTF-8'
    with pytest.raises(wider.FormatError, match=expected):
        wider_ap.evaluate(tmp_path / 'p', gt)


def test_symlinks_out_of_the_prediction_folder_are_refused(tmp_path):
    from safefakes_jax.data import root_paths

    gt = make_gt([('0--E', 'a', [[0, 0, 20, 20]])])
    outside = tmp_path / 'outside'
    (outside / '0--E').mkdir(parents=True)
    (outside / '0--E' / 'a.txt').write_text('a\n1\n0 0 20 20 0.9\n')
    event_link = tmp_path / 'event_link'
    event_link.mkdir()
    (event_link / '0--E').symlink_to(outside / '0--E')
    with pytest.raises(root_paths.PathEscapeError, match="'0--E' resolves to .*outside"):
        wider_ap.evaluate(event_link, gt)
    file_link = tmp_path / 'file_link'
    (file_link / '0--E').mkdir(parents=True)
    (file_link / '0--E' / 'a.txt').symlink_to(outside / '0--E' / 'a.txt')
    with pytest.raises(root_paths.PathEscapeError, match="'0--E/a.txt' resolves to .*outside"):
        wider_ap.evaluate(file_link, gt)
    # A symlink that stays inside the folder is fine.
    (file_link / '0--E' / 'a.txt').unlink()
    (file_link / 'real.txt').write_text('a\n1\n0 0 20 20 0.9\n')
    (file_link / '0--E' / 'a.txt').symlink_to(file_link / 'real.txt')
    assert wider_ap.evaluate(file_link, gt)['hard'] == pytest.approx(1.0)
