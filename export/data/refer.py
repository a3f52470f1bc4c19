"""RefCOCO, RefCOCO+ and G-Ref (RefCOCOg) in the REFER format (Yu et al. 2016; Mao et al. 2016).

The data set of the VLT paper's experiments. Files, as distributed by the REFER API
(github.com/lichengunc/refer) and COCO:

    <root>/refcoco/refs(unc).p        <root>/refcoco/instances.json
    <root>/refcoco+/refs(unc).p       <root>/refcoco+/instances.json
    <root>/refcocog/refs(umd).p       <root>/refcocog/refs(google).p    <root>/refcocog/instances.json
    <images>/COCO_train2014_000000581857.jpg ...   (COCO train2014; every split's images are in it)

``refs(*).p`` is a pickled list of refs, one per referred object::

    {"ref_id": 0, "ann_id": 1719310, "image_id": 581857, "split": "train", "category_id": 1,
     "file_name": "COCO_train2014_000000581857_1719310.jpg",
     "sentences": [{"sent": "the lady with the blue shirt", "tokens": ["the", "lady", ...],
                    "raw": "THE LADY WITH THE BLUE SHIRT", "sent_id": 0}, ...], "sent_ids": [0, ...]}

(its ``file_name`` carries the annotation id; the image file is the one ``instances.json`` names
for ``image_id``). ``instances.json`` is COCO's: ``images`` (id, file_name, width, height),
``annotations`` (id, image_id, category_id, segmentation polygons [[x0, y0, x1, y1, ...], ...],
bbox, area, iscrowd) and ``categories``.

Worked example of one sample: the ref above, with its annotation's polygons filled at the
image's size, gives ``{"image": uint8 480 x 640 x 3, "mask": uint8 480 x 640 in {0, 1}
(1 inside the woman's polygons), "expression": "the lady with the blue shirt",
"type": "refcoco/train"}`` -- the same keys as the RefShapes stream, so ``export.engine.collate``
letterboxes both.

Splits (the standard ones): RefCOCO and RefCOCO+ (``unc``) train / val / testA / testB; G-Ref
``umd`` train / val / test; G-Ref ``google`` train / val. L = 15 words for RefCOCO/RefCOCO+, 20
for G-Ref (docs/vlt.md §1).

Masks: pycocotools (``frPyObjects`` + ``decode``, as the REFER API's ``getMask``; pinned in
export/requirements.txt) when it is installed; otherwise Pillow's ImageDraw fills the same
polygons. The two agree inside a polygon but not on every pixel an edge passes through (Pillow
fills more of them: a few per cent of a small object's area, ~1-2 % of a typical COCO object's),
so use pycocotools for numbers comparable with the paper's.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

from export.vlt.tokenizer import split_words

# dataset -> {split_by: splits}
SPLITS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB"), "google": ("train", "val", "test")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
}
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


def default_split_by(dataset: str) -> str:
    if dataset not in DEFAULT_SPLIT_BY:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DEFAULT_SPLIT_BY)}")
    return DEFAULT_SPLIT_BY[dataset]


def max_words_for(dataset: str) -> int:
    """L of the VLT paper: 20 for G-Ref, 15 otherwise."""
    return 20 if dataset == "refcocog" else 15


def check_split(dataset: str, split_by: str, split: str) -> None:
    if dataset not in SPLITS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(SPLITS)}")
    if split_by not in SPLITS[dataset]:
        raise ValueError(f"{dataset} has no split_by {split_by!r}; choose from {sorted(SPLITS[dataset])}")
    if split not in SPLITS[dataset][split_by]:
        raise ValueError(f"{dataset}({split_by}) has no split {split!r}; choose from {SPLITS[dataset][split_by]}")


def load_refs(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """Read a ``refs(*).p`` pickle (written by Python 2; latin-1 decodes its byte strings)."""
    with open(path, "rb") as f:
        try:
            return pickle.load(f)
        except UnicodeDecodeError:
            f.seek(0)
            return pickle.load(f, encoding="latin1")


def polygons_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO segmentation (polygons, or RLE when pycocotools is installed) -> uint8 H x W in {0, 1},
    the union of all its parts (as the REFER API's getMask)."""
    try:
        from pycocotools import mask as mask_utils  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - exercised where pycocotools is absent
        mask_utils = None
    if mask_utils is not None:
        if isinstance(segmentation, list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        m = mask_utils.decode(rle)
        m = m.reshape(height, width, -1).max(axis=2)
        return (m > 0).astype(np.uint8)
    if not isinstance(segmentation, list):
        raise ValueError("RLE segmentations need pycocotools (pip install pycocotools)")
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in segmentation:
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1)
    return np.asarray(canvas, dtype=np.uint8)


class ReferDataset(torch.utils.data.Dataset):
    """One split of RefCOCO / RefCOCO+ / G-Ref as a map-style data set of referring samples.

    Arguments:
      root (str | Path): folder holding ``<dataset>/refs(<split_by>).p`` and ``<dataset>/instances.json``.
      dataset (str): 'refcoco', 'refcoco+' or 'refcocog'.
      split (str): e.g. 'train', 'val', 'testA', 'testB', 'test'.
      split_by (str | None): 'unc', 'umd' or 'google' (None: unc, or umd for refcocog).
      images (str | Path | None): the COCO train2014 folder (None: the first of
        ``<root>/images/mscoco/images/train2014``, ``<root>/images/train2014``, ``<root>/train2014``
        that exists).
      train (bool): True: one item per object, with one of its sentences drawn at random for each
        epoch (``set_epoch``), as the paper trains; False: one item per sentence (evaluation).
      seed (int): seed of the per-epoch sentence draw.

    Items are ``{"image": uint8 H x W x 3, "mask": uint8 H x W in {0, 1}, "expression": str,
    "type": "<dataset>/<split>"}`` plus ``ref_id`` and ``sent_id``.
    """

    def __init__(
        self,
        root: Union[str, Path],
        dataset: str,
        split: str,
        *,
        split_by: Optional[str] = None,
        images: Union[str, Path, None] = None,
        train: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.dataset = dataset
        self.split_by = split_by or default_split_by(dataset)
        self.split = split
        check_split(dataset, self.split_by, split)
        self.images = Path(images) if images is not None else self._find_images()
        self.train = train
        self.seed = int(seed)
        self.epoch = 0

        folder = self.root / dataset
        refs_path = folder / f"refs({self.split_by}).p"
        if not refs_path.exists():
            raise FileNotFoundError(f"no {refs_path}; see 'Training on RefCOCO' in README.md for where the REFER files go")
        self.refs = [r for r in load_refs(refs_path) if r["split"] == split]
        if not self.refs:
            raise ValueError(f"{refs_path} has no refs in split {split!r}")
        instances = json.loads((folder / "instances.json").read_text())
        self.image_info = {int(im["id"]): im for im in instances["images"]}
        self.annotations = {int(a["id"]): a for a in instances["annotations"]}
        missing = [r["ann_id"] for r in self.refs if int(r["ann_id"]) not in self.annotations]
        if missing:
            raise ValueError(f"{len(missing)} refs point at annotations missing from instances.json, e.g. {missing[:3]}")
        # (ref index, sentence index) per evaluation item
        self.items: List[Tuple[int, int]] = [(i, j) for i, r in enumerate(self.refs) for j in range(len(r["sentences"]))]
        self.type = f"{dataset}/{split}"

    def _find_images(self) -> Path:
        for c in (self.root / "images" / "mscoco" / "images" / "train2014", self.root / "images" / "train2014",
                  self.root / "train2014"):
            if c.is_dir():
                return c
        return self.root / "images" / "train2014"

    def set_epoch(self, epoch: int) -> None:
        """Redraw the training sentence of every object (call once per epoch, before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.refs) if self.train else len(self.items)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if self.train:
            ref = self.refs[index]
            rng = np.random.default_rng([self.seed, self.epoch, index])
            j = int(rng.integers(len(ref["sentences"])))
        else:
            i, j = self.items[index]
            ref = self.refs[i]
        sentence = ref["sentences"][j]
        return {
            "image": self.load_image(ref),
            "mask": self.load_mask(ref),
            "expression": sentence["sent"],
            "type": self.type,
            "ref_id": int(ref["ref_id"]),
            "sent_id": int(sentence.get("sent_id", j)),
        }

    def load_image(self, ref: Dict[str, Any]) -> np.ndarray:
        """The COCO image of a ref, RGB uint8 H x W x 3, in the pixel grid of its annotations."""
        info = self.image_info[int(ref["image_id"])]
        path = self.images / info["file_name"]
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        if rgb.shape[:2] != (int(info["height"]), int(info["width"])):
            raise ValueError(f"{path} is {rgb.shape[1]}x{rgb.shape[0]}, instances.json says "
                             f"{info['width']}x{info['height']}")
        return rgb

    def load_mask(self, ref: Dict[str, Any]) -> np.ndarray:
        ann = self.annotations[int(ref["ann_id"])]
        info = self.image_info[int(ref["image_id"])]
        return polygons_to_mask(ann["segmentation"], int(info["height"]), int(info["width"]))

    def sentences(self) -> Iterator[str]:
        for r in self.refs:
            for s in r["sentences"]:
                yield s["sent"]

    def words(self) -> List[str]:
        """Every word of the split's sentences, after the tokenizer's rules (for the vocabulary)."""
        return sorted({w for s in self.sentences() for w in split_words(s)})


def split_counts(root: Union[str, Path], dataset: str, split_by: Optional[str] = None) -> Dict[str, Dict[str, int]]:
    """refs, sentences and images per split (for a quick check of a download)."""
    split_by = split_by or default_split_by(dataset)
    out: Dict[str, Dict[str, int]] = {}
    images: Dict[str, set] = {}
    for r in load_refs(Path(root) / dataset / f"refs({split_by}).p"):
        c = out.setdefault(r["split"], {"refs": 0, "sentences": 0, "images": 0})
        c["refs"] += 1
        c["sentences"] += len(r["sentences"])
        images.setdefault(r["split"], set()).add(r["image_id"])
    for split, ids in images.items():
        out[split]["images"] = len(ids)
    return out


__all__: Sequence[str] = [
    "SPLITS", "DEFAULT_SPLIT_BY", "ReferDataset", "check_split", "default_split_by", "load_refs",
    "max_words_for", "polygons_to_mask", "split_counts",
]
