"""Regenerate docs/gallery.md and its PNGs: one diagram per model family, default view.

    python docs/gallery.py

Every family whose spec exists in specs/ is drawn with the same defaults as
`archdsl draw SPEC --format png` (automatic depth, folded repeats, encoder-decoders as a U,
one output node per result), unless its entry below gives a depth, at a resolution that keeps
each file to a few hundred KB. tests/test_draw.py checks the page is current.

Adding a family is one line in FAMILIES: `("spec_name", "Caption: what the diagram shows")`,
then `python docs/gallery.py`; entries whose spec does not exist (yet) are skipped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: (spec name, what it shows[, --depth]), in the order of the page
FAMILIES = [
    ("lenet5", "LeNet-5: a plain chain, every op drawn"),
    ("alexnet", "AlexNet: `features` and `classifier` sequences as clusters"),
    ("vgg16", "VGG-16: one long `features` sequence, wrapped into columns"),
    ("resnet50", "ResNet-50: residual sums as `+` joins; the identical Bottlenecks of each stage folded (`x K`)"),
    ("googlenet", "GoogLeNet: Inception modules as concatenations of parallel branches"),
    ("densenet121", "DenseNet-121: dense connectivity as chains of concatenations; big dense blocks collapsed"),
    ("mobilenet_v2", "MobileNet-V2: inverted residuals, folded where they repeat"),
    ("efficientnet_b0", "EfficientNet-B0: MBConv blocks with squeeze-and-excitation gates (`x` joins)"),
    ("convnext_tiny", "ConvNeXt-Tiny: channels-last blocks with layer scale"),
    ("vit_b_16", "ViT-B/16: token shapes (tokens x dim); the 12 encoder layers folded"),
    ("regnet_y_400mf", "RegNetY-400MF: stages of Y blocks with SE gates"),
    ("unet", "U-Net: a U, the encoder going down and the decoder coming back up; each long skip to a "
             "decoder concatenation is one horizontal level, and the resizes show where sizes differ"),
    ("yolo_v1", "YOLO v1: a deep conv stack and a detection head"),
    ("swin_t", "Swin-T: patch embedding, stages of shifted-window attention blocks and patch merging"),
    ("maxvit_t", "MaxViT-T: MBConv, then block (window) and grid attention in every layer"),
    ("r3d_18", "R3D-18: a video ResNet, 3-D convolutions on C x T x H x W clips"),
    ("s3d", "S3D: separable 3-D convolutions (spatial, then temporal) in Inception-style video modules"),
    ("swin3d_t", "Swin3D-T: shifted-window attention over 3-D windows of a T x H x W x C clip, patch merging "
                 "per frame"),
    ("mvit_v2_s", "MViT-v2-S: multiscale blocks whose attention pools queries, keys and values; the skip "
                  "path max-pooled"),
    ("googlenet_aux", "GoogLeNet with its auxiliary classifiers: the tuple result (logits, aux2, aux1) drawn "
                      "as one output node per position"),
    ("fcn_resnet50_aux", "FCN-ResNet50 with the auxiliary head: a dilated ResNet trunk, the FCN head on "
                         "layer4 and the auxiliary one on layer3; the dict result drawn as outputs `out` "
                         "and `aux`"),
    ("lraspp_mobilenet_v3_large", "LR-ASPP MobileNetV3-Large: a dilated MobileNetV3 backbone; the head gates "
                                  "the 1/16 features and adds a classifier of the 1/8 ones"),
    ("resnet50_fpn", "ResNet-50 FPN backbone, its stages collapsed: the ResNet going down, the feature pyramid "
                     "coming back up, each lateral 1x1 conv one horizontal level, and one output per pyramid "
                     "level (\"0\" .. \"3\", \"pool\")", 1),
]
DPI = 80
MAX_BYTES = 500_000


def _shrink(png: Path) -> None:
    """Store the PNG with a 128-colour palette when Pillow is there (about a third of the bytes)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as im:
        small = im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    tmp = png.with_suffix(".tmp.png")
    small.save(tmp, optimize=True)
    os.replace(tmp, png)


def main() -> int:
    import archdsl
    from archdsl.backends.dot import diagram, render

    out_dir = ROOT / "docs" / "gallery"
    out_dir.mkdir(exist_ok=True)
    lines = [
        "# Gallery",
        "",
        "One diagram per model family, each the default view of `archdsl draw` (automatic depth,",
        "repeated blocks folded). Regenerate the page and the images with",
        "",
        "```",
        "python docs/gallery.py",
        "```",
        "",
        "Nodes show the module path, the op and its key attributes, the output shape and the",
        "parameter count; collapsed blocks show their totals; joins (`+`, `concat`, `x`) are small",
        "ovals; colours follow the op category (key at the top of each diagram). See",
        "[cli.md](cli.md#archdsl-draw) for the options (`--depth`, `--expand`, `--no-fold`, ...).",
        "",
    ]
    drawn = []
    for name, caption, *depth in FAMILIES:
        path = ROOT / "specs" / f"{name}.arch"
        if not path.exists():
            continue
        spec = archdsl.load_spec(path)
        dot, view = diagram(spec.ir, depth=depth[0] if depth else None)
        png = out_dir / f"{name}.png"
        dpi = DPI
        while True:
            render(dot, png, format="png", dpi=dpi)
            _shrink(png)
            if png.stat().st_size <= MAX_BYTES or dpi <= 48:
                break
            dpi -= 8
        drawn.append(name)
        lines += [
            f"## {name}",
            "",
            f"{caption}. `archdsl draw specs/{name}.arch{f' --depth {depth[0]}' if depth else ''}`: "
            f"{len(view.drawn_nodes())} nodes at depth "
            f"{view.depth}.",
            "",
            f"![{name}](gallery/{name}.png)",
            "",
        ]
        print(f"{png.relative_to(ROOT)}: {png.stat().st_size // 1024} KB, dpi {dpi}, "
              f"{len(view.drawn_nodes())} nodes")
    for stale in out_dir.glob("*.png"):
        if stale.stem not in drawn:
            stale.unlink()
    tmp = ROOT / "docs" / ".gallery.md.tmp"
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, ROOT / "docs" / "gallery.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
