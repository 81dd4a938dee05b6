"""``detkd export``: a trained detector as a plain torchvision state dict (and ONNX)."""

from __future__ import annotations

import argparse
import logging
import warnings

import torch

from detkd.cli.common import positive_int
from detkd.errors import DetkdError

log = logging.getLogger("detkd")

HELP = """\
Write the detector of a detkd checkpoint (a teacher, a student, or a distilled student: the
distillation's adaptation layers are left out) as

  OUT.pt    a plain state dict of torchvision's FasterRCNN (torch.load(weights_only=True))
  OUT.json  the arguments that rebuild it: num_classes, classes and the resolved model config

Rebuild it with detkd.models.export.load_exported("OUT.pt"), or with
detkd.models.build_model(ModelSection(**json["model"]), json["num_classes"]) and load_state_dict.

Outputs are never the checkpoint itself, never each other (OUT.json is the state dict's
sidecar), and an existing file is replaced only with --force.

--onnx also exports ONNX (needs `pip install 'detkd[export]'`: onnx, onnxruntime) and checks
ONNX Runtime's detections against PyTorch's on a few images: the checkpoint's test images (or
--images), boxes within 1e-2 px, same labels, scores within 1e-4; a mismatch fails the command."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a trained detector as a plain torchvision state dict (and ONNX)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a detkd checkpoint (last.pt, best.pt)")
    parser.add_argument("out", metavar="OUT.pt", help="the state dict to write (OUT.json is written beside it)")
    parser.add_argument("--onnx", metavar="OUT.onnx", help="also export to ONNX and check it against PyTorch")
    parser.add_argument("--images", nargs="+", metavar="IMAGE", help="images for the ONNX check "
                        "(default: the first --check-images test images of the checkpoint's dataset)")
    parser.add_argument("--check-images", type=positive_int, default=3, metavar="N",
                        help="how many test images the ONNX check runs on, at least 1 (default: 3)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 11 or later (default: 17)")
    parser.add_argument("--force", action="store_true", help="replace outputs that exist (never the checkpoint)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detkd.models.export import check_onnx, export_onnx, export_student, load_exported, require_onnx

    if args.onnx:
        require_onnx()  # before any work
        if args.opset < 11:
            raise DetkdError(f"--opset {args.opset}: torchvision's Faster R-CNN needs opset 11 or later")
    info = export_student(args.checkpoint, args.out, force=args.force,
                          extra_outputs=[args.onnx] if args.onnx else [])
    print(f"wrote {args.out} and its model arguments ({info['model']['backbone']}, {info['num_classes'] - 1} classes)")
    if not args.onnx:
        return 0
    model, _ = load_exported(args.out)
    images = check_images(args)
    export_onnx(model, args.onnx, images[0], opset=args.opset)
    for line in check_onnx(model, args.onnx, images):
        print(f"onnx check: {line}")
    print(f"wrote {args.onnx} (ONNX Runtime's detections match PyTorch's on {len(images)} images)")
    return 0


def check_images(args: argparse.Namespace) -> list[torch.Tensor]:
    """Images ``[3, H, W]`` in [0, 1]: ``--images``, else the checkpoint dataset's first test images."""
    from detkd.data.images import read_rgb

    if args.images:
        return [to_tensor(read_rgb(path)) for path in args.images]
    dataset = checkpoint_test_set(args.checkpoint)
    count = min(args.check_images, len(dataset))
    if count == 0:
        raise DetkdError(f"{args.checkpoint}: its test split has no images; give --images for the ONNX check")
    return [dataset[i][0] for i in range(count)]


def checkpoint_test_set(path: str):  # -> DetectionDataset
    from detkd.config import saved_run_config
    from detkd.data.from_config import build_eval_dataset
    from detkd.utils.checkpoint import read_checkpoint

    run = read_checkpoint(path)
    try:
        cfg = saved_run_config(run.config or {}, path)
        with warnings.catch_warnings():  # only the images are used: notes on the labels are noise here
            warnings.simplefilter("ignore")
            return build_eval_dataset(cfg.data, classes=run.classes)
    except DetkdError as e:
        raise DetkdError(f"cannot read the checkpoint's test images for the ONNX check ({e}); give --images") from None


def to_tensor(image) -> torch.Tensor:
    """An HWC uint8 RGB array as a float ``[3, H, W]`` tensor in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(255)
