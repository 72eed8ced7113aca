"""merge_exports: several real `export_coco` folders (synthetic scenes) become one COCO training set.

Checks that counts add up, ids are unique per split, pycocotools loads every split, each merged
annotation decodes to exactly the mask of its source annotation, chips are byte-identical, a source's
test split gives the same test.json whatever the other sources hold, and incompatible sources are
refused before anything is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from crownsam.coco.export import export_coco
from crownsam.coco.merge import merge_exports
from crownsam.common.errors import InputError
from crownsam.synthetic import generate_scene
from crownsam.training import data as D

CHIP = 128
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


def _export(root: Path, name: str, seed: int, *, holdout: bool = True, chip: int = CHIP, bands=(3, 2, 1)):
    scene = generate_scene(root / f"scene_{name}", size=512, seed=seed, n_manual=3)
    out = root / f"coco_{name}"
    kw = {"holdout": scene.test_area, "manual": scene.manual} if holdout else {}
    export_coco(scene.ortho, scene.coarse, out, chip=chip, val_block=1, buffer_m=0.5, bands=bands, **kw)
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {
        "A": _export(root, "A", 1),
        "B": _export(root, "B", 2),
        "C": _export(root, "C", 3, holdout=False),  # no test split
    }


def _load(folder: Path, split: str) -> dict:
    return json.loads((folder / f"{split}.json").read_text())


def test_counts_ids_and_masks_match_the_sources(exports, tmp_path) -> None:
    out = tmp_path / "merged"
    summary = merge_exports({k: exports[k] for k in ("A", "B", "C")}, out)
    assert summary["bands"] == [3, 2, 1] and summary["chip"] == CHIP
    assert sorted(p.name for p in out.iterdir()) == [
        "export.json",
        "images",
        "test.json",
        "train.json",
        "val.json",
    ]
    for split in ("train", "val", "test"):
        merged = _load(out, split)
        sources = {k: _load(v, split) for k, v in exports.items() if (v / f"{split}.json").is_file()}
        assert len(merged["images"]) == sum(len(s["images"]) for s in sources.values())
        assert len(merged["annotations"]) == sum(len(s["annotations"]) for s in sources.values())
        assert summary["splits"][split]["chips"] == len(merged["images"])
        image_ids = [im["id"] for im in merged["images"]]
        ann_ids = [a["id"] for a in merged["annotations"]]
        assert image_ids == list(range(1, len(image_ids) + 1)) and ann_ids == list(range(1, len(ann_ids) + 1))
        coco = COCO(str(out / f"{split}.json"))  # pycocotools accepts it
        assert len(coco.getImgIds()) == len(image_ids)
        by_new = {im["id"]: im for im in merged["images"]}
        # every merged annotation decodes exactly like its source annotation, in the same order
        expected = [
            (name, a) for name, s in sources.items() for a in s["annotations"]
        ]  # sources and annotations in the order given
        assert len(expected) == len(merged["annotations"])
        for (name, src), new in zip(expected, merged["annotations"], strict=True):
            img = by_new[new["image_id"]]
            assert img["crownsam"]["flight"] == name
            assert img["crownsam"]["source_image_id"] == src["image_id"]
            assert np.array_equal(
                mask_utils.decode(new["segmentation"]), mask_utils.decode(src["segmentation"])
            )
            assert {k: v for k, v in new.items() if k not in ("id", "image_id")} == {
                k: v for k, v in src.items() if k not in ("id", "image_id")
            }
        for img in merged["images"]:
            name = img["crownsam"]["flight"]
            src_img = next(
                i for i in sources[name]["images"] if i["id"] == img["crownsam"]["source_image_id"]
            )
            assert img["file_name"] == f"images/{split}/{name}_{Path(src_img['file_name']).name}"
            assert (out / img["file_name"]).read_bytes() == (
                exports[name] / src_img["file_name"]
            ).read_bytes()
            assert {
                k: v for k, v in img["crownsam"].items() if k not in ("flight", "source_image_id")
            } == src_img["crownsam"]
    assert summary["sources"]["C"]["splits"].get("test") is None
    assert summary["sources"]["A"]["splits"]["train"]["chips"] > 0
    info = D.read_export(out)  # what training reads: bands and chip; no single stretch
    assert info.bands == (3, 2, 1) and info.chip == CHIP and info.stretch is None


def test_a_sources_test_split_is_the_same_whatever_else_is_merged(exports, tmp_path) -> None:
    """Ids are numbered per split: adding a source without a test split leaves test.json byte-identical
    (the evaluation set's identity is the hash of test.json)."""
    merge_exports({"A": exports["A"]}, tmp_path / "a")
    merge_exports({"A": exports["A"], "C": exports["C"]}, tmp_path / "ac")
    merge_exports({"C": exports["C"], "A": exports["A"]}, tmp_path / "ca")
    test_a = (tmp_path / "a" / "test.json").read_bytes()
    assert (tmp_path / "ac" / "test.json").read_bytes() == test_a
    assert (tmp_path / "ca" / "test.json").read_bytes() == test_a
    assert (tmp_path / "ac" / "train.json").read_bytes() != (tmp_path / "a" / "train.json").read_bytes()


def test_a_list_names_sources_after_their_folders(exports, tmp_path) -> None:
    summary = merge_exports([exports["A"], exports["C"]], tmp_path / "m")
    assert list(summary["sources"]) == ["coco_A", "coco_C"]
    test = _load(tmp_path / "m", "test")
    assert test["images"] and {im["crownsam"]["flight"] for im in test["images"]} == {"coco_A"}


def test_incompatible_sources_are_refused_before_writing(exports, tmp_path) -> None:
    other_chip = _export(tmp_path, "D", 4, chip=64)
    other_bands = _export(tmp_path, "E", 5, bands=(4, 3, 2))
    out = tmp_path / "merged"
    with pytest.raises(InputError, match="chip size 64 differs from 128 in A"):
        merge_exports({"A": exports["A"], "D": other_chip}, out)
    with pytest.raises(InputError, match=r"bands \[4, 3, 2\] differs"):
        merge_exports({"A": exports["A"], "E": other_bands}, out)
    with pytest.raises(InputError, match="source name 'a b'"):
        merge_exports({"a b": exports["A"]}, out)
    with pytest.raises(InputError, match="export folder not found"):
        merge_exports({"A": exports["A"], "X": tmp_path / "nope"}, out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]  # no temporary folder left


def test_a_missing_chip_is_refused_and_an_older_merge_survives(exports, tmp_path) -> None:
    out = tmp_path / "merged"
    merge_exports({"A": exports["A"]}, out)
    before = (out / "train.json").read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(exports["B"], broken)
    first = _load(broken, "train")["images"][0]["file_name"]
    (broken / first).unlink()
    with pytest.raises(InputError, match="chip listed in the COCO file is missing"):
        merge_exports({"A": exports["A"], "B": broken}, out)
    assert (out / "train.json").read_bytes() == before
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds no export\.json"):
        merge_exports({"A": exports["A"]}, tmp_path / "junk")
