r"""Converts PyTorch DSFD / VGG16 / DeepPrivacy / CIAGAN / FID Inception weights to Flax.

  python tools/convert_torch_weights.py --format=dsfd_vgg --src=WIDERFace_DSFD_vgg.pth \
      --out=pretrained/dsfd_vgg
  python tools/convert_torch_weights.py --format=vgg16_reducedfc --src=vgg16_reducedfc.npz \
      --out=pretrained/vgg16_reducedfc [--width 1.0] [--channel_order bgr] [--force]

  python tools/convert_torch_weights.py --format=deepprivacy_v1 --src=checkpoint.ckpt \
      --out=pretrained/deepprivacy_v1
  python tools/convert_torch_weights.py --format=ciagan --src=modelG.pth --out=pretrained/ciagan
  python tools/convert_torch_weights.py --format=fid_inception \
      --src=pt_inception-2015-12-05-6726825d.pth --out=pretrained/fid_inception

Formats:
  dsfd_vgg         a full yx `DSFD_vgg` state dict (plain, or yx's {'epoch', 'weight'} wrapper);
                   writes the full params. Default --channel_order rgb (yx trained on RGB).
  vgg16_reducedfc  the SSD/Caffe backbone (`{i}.weight/bias`); writes the *partial* params
                   {'vgg': ...}, which trainers merge into their init
                   (`safefakes_jax.models.torch_import.merge_params`). Default --channel_order
                   bgr: the first conv's input channels are reversed so that our RGB input
                   (minus R 123, G 117, B 104) gives the outputs of the Caffe BGR input.
  deepprivacy_v1   the ISVC'19 DeepPrivacy checkpoint: its `running_average_generator` (the
                   EMA generator; the 64 generator tensors, or an .npz of those keys) becomes
                   the params of `models.deepprivacy.Generator()` (128 x 128); the
                   `deepprivacy` anonymizer loads the folder (`anonymizer.params=OUT`).
  ciagan           a CIAGAN generator state dict (`torch.save(generator.state_dict())` of
                   dvl-tum/ciagan, 248 keys with the spectral-norm `weight_orig`, `weight_u`,
                   `weight_v`): the variables {'params', 'batch_stats'} of
                   `models.ciagan.Generator` (identities and resolution read from the keys);
                   the `ciagan` anonymizer loads the folder (`anonymizer.params=OUT`).
  fid_inception    pytorch-fid's FID Inception (`pt_inception-2015-12-05-*.pth`, the
                   torchvision-style names and its unused fc, or the state dict of
                   pytorch-fid's `InceptionV3` wrapper, `blocks.*`): the variables of
                   `models.inception.FIDInception`, which `launch/metrics.py` loads for FID.

`.pth` needs PyTorch (>= 1.13) and is read with `torch.load(..., weights_only=True)`: only
tensors and plain containers are unpickled (a pickle can otherwise run code), which is all a
state dict holds; a file that needs more is refused. Without PyTorch, convert to .npz elsewhere
with
  numpy.savez(path, **{k: v.numpy() for k, v in sd.items()})
`--out` gets `checkpoint/` (orbax, {'params': ...}) and `conversion.json`; it is written
atomically and an existing non-empty `--out` is refused unless `--force`. Restore with
`torch_import.load_converted(out)`. Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from safefakes_jax.models import torch_import  # noqa: E402


def _count(params) -> int:
    import jax

    return sum(int(x.size) for x in jax.tree.leaves(params))


def _ciagan_size(state_dict) -> dict:
    from safefakes_jax.models import ciagan

    num_classes, resolution = ciagan.size_of_state_dict(state_dict)
    return {'num_classes': num_classes, 'resolution': resolution}


def main(argv: list[str] | None = None) -> int:
    """Runs the conversion; returns the exit status (0 ok, 2 bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--format',
        required=True,
        choices=torch_import.FORMATS,
        help='layout of the source state dict',
    )
    parser.add_argument(
        '--src',
        required=True,
        help='.pth / .pt (needs torch >= 1.13; read with weights_only=True: '
        'a plain state dict, nothing else is unpickled) or .npz file',
    )
    parser.add_argument('--out', required=True, help='output checkpoint folder')
    parser.add_argument(
        '--width',
        type=float,
        default=1.0,
        help='channel multiplier of the target DSFD (1.0 = the paper model)',
    )
    parser.add_argument(
        '--channel_order',
        choices=torch_import.CHANNEL_ORDERS,
        default=None,
        help='channel order the source weights expect (default: rgb for '
        'dsfd_vgg, bgr for vgg16_reducedfc); bgr flips the first conv',
    )
    parser.add_argument('--force', action='store_true', help='replace a non-empty --out')
    args = parser.parse_args(argv)
    order = args.channel_order or torch_import.DEFAULT_CHANNEL_ORDER[args.format]
    try:
        dp = args.format == 'deepprivacy_v1'  # A whole checkpoint: the EMA generator in it.
        # Variables: params and BatchNorm statistics (FID) or spectral-norm vectors (CIAGAN).
        fid = args.format in ('fid_inception', 'ciagan')
        state_dict = torch_import.read_state_dict(args.src, unwrap=not dp)
        params = torch_import.convert_state_dict(state_dict, args.format, args.width, order)
        info = {
            'format': args.format,
            'source': os.path.abspath(args.src),
            'sha256': torch_import.file_sha256(args.src),
            'width': args.width,
            'channel_order': order,
            'num_params': _count(params['params'] if fid else params),
            'partial': args.format == 'vgg16_reducedfc',
            **({'resolution': 128} if dp else {}),
            **(_ciagan_size(state_dict) if args.format == 'ciagan' else {}),
            'created': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
        }
        torch_import.save_converted(args.out, params, info, force=args.force)
    except torch_import.ConversionError as e:
        print(f'convert_torch_weights: error: {e}', file=sys.stderr)
        return 2
    print(
        f'{args.format} ({order} weights, width {args.width}): {info["num_params"]:,} '
        f'parameters from {len(state_dict)} entries -> {os.path.abspath(args.out)}'
        if dp
        else f'{args.format} ({order} weights, width {args.width}): {len(state_dict)} tensors, '
        f'{info["num_params"]:,} parameters -> {os.path.abspath(args.out)}'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
