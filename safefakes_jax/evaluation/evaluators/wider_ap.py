"""`wider_ap`: a detector's easy / medium / hard AP on the unaltered WIDER FACE val split.

Section keys (`config.evals.<name>`, defaults in `DEFAULTS`): `procedure` (`single`:
letterboxed to `image_size`, batched on the mesh; `multiscale`: the reference's multi-scale +
flip + box-voting test, `multiscale_max_side` caps its passes), `batch_size`, `max_batches`
(single; 0 = the whole split), `conf_thresh`, `grid_images` (single: val images with their
faces in red and detections in green, as the image `detections`), `write_predictions`
(the official prediction folder `<workdir>/predictions/` of the last evaluation),
`network` (the train state's network to evaluate; its EMA when it has one).

Built once per run (`evaluators.build`): the ground truth is read, the val pipeline and the
predict step are made here and reused by every evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax

from safefakes_jax.data import wider, wider_mat
from safefakes_jax.detection import anchors
from safefakes_jax.evaluation import detector_eval, image_grids
from safefakes_jax.evaluation.evaluators import Context, Result

DEFAULTS: dict[str, Any] = {
    'type': 'wider_ap',
    'every_steps': 0,
    'final': False,
    'procedure': 'single',
    'image_size': 640,
    'batch_size': 8,
    'max_batches': 0,
    'conf_thresh': 0.05,
    'grid_images': 0,
    'multiscale_max_side': 0,
    'write_predictions': False,
    'network': 'detector',
}


class Evaluator:
    """WIDER AP of `state.nets[network]` (module docstring)."""

    def __init__(self, name: str, section: Mapping[str, Any], context: Context):
        unknown = sorted(set(section) - set(DEFAULTS))
        if unknown:
            raise ValueError(
                f'config.evals.{name}: unknown keys {unknown} (known: {sorted(DEFAULTS)})'
            )
        self.options = DEFAULTS | dict(section)
        o = self.options
        if o['procedure'] not in detector_eval.PROCEDURES:
            raise ValueError(
                f'config.evals.{name}.procedure={o["procedure"]!r}: not one of '
                f'{detector_eval.PROCEDURES}'
            )
        self.name, self.every_steps, self.final = name, int(o['every_steps']), bool(o['final'])
        config, self.mesh, self.workdir = context.config, context.mesh, context.workdir
        self.model = context.models[o['network']]
        self.val_root = config.data.val_root
        self.aspect_ratio = config.model.anchor_aspect_ratio
        self.ground_truth = wider_mat.read_ground_truth(wider_mat.ground_truth_dir(self.val_root))
        if o['procedure'] == 'single':
            self.predict_fn = detector_eval.make_predict_step(self.model, self.mesh)
            _, self.anchors = anchors.shot_anchors(o['image_size'], self.aspect_ratio)
            self.dataset = detector_eval.single_dataset(
                self.val_root,
                self.mesh,
                image_size=o['image_size'],
                batch_size=o['batch_size'],
                max_boxes=config.data.max_boxes,
                data_dir=config.data.tfds_dir or None,
            )

    def predict(
        self, params: Any, grid: list | None = None, max_images: int = 0
    ) -> detector_eval.Predictions:
        """Detections of `params` on the val split with this evaluator's procedure."""
        o = self.options
        if o['procedure'] == 'multiscale':
            return detector_eval.predict_multiscale(
                self.model,
                params,
                self.val_root,
                aspect_ratio=self.aspect_ratio,
                conf_thresh=o['conf_thresh'],
                max_side=o['multiscale_max_side'],
                max_images=max_images,
            )
        return detector_eval.predict_single(
            params,
            self.predict_fn,
            self.mesh,
            self.anchors,
            self.dataset,
            image_size=o['image_size'],
            conf_thresh=o['conf_thresh'],
            max_batches=o['max_batches'],
            grid=grid,
            grid_images=o['grid_images'],
        )

    def results_of(self, preds: detector_eval.Predictions) -> dict[str, Any]:
        """AP (easy / medium / hard) and the procedure's settings, for `results.json`."""
        ap = detector_eval.average_precision(preds, self.ground_truth)
        results = dict(ap, val_root=self.val_root, test_procedure=self.options['procedure'])
        if self.options['procedure'] == 'single':
            results['eval_image_size'] = self.options['image_size']
        return results

    def run(self, state: Any, step: int) -> Result:
        """Evaluates `state.nets[network]`'s params (the EMA when there is one)."""
        del step
        grid: list = []
        preds = self.predict(state.nets[self.options['network']].eval_params, grid)
        results = self.results_of(preds)
        if self.options['write_predictions'] and self.workdir and jax.process_index() == 0:
            wider.write_predictions(os.path.join(self.workdir, 'predictions'), preds)
        images = {'detections': image_grids.tile(grid)} if grid else {}
        return Result({f'ap_{k}': results[k] for k in wider.SETTINGS}, images, results)
