"""Box re-prompting: each predicted crown's bounding box prompts SAM2, through the pseudolabel machinery.

The crowns are the "segments" of a pseudolabel run (``crownsam.pseudolabel.run.pseudolabel_plan``): the
window plan of ``crownsam.tiling.plan`` (each crown in the one window that owns its centroid), one image
embedding per window, box prompts in batches, each mask's largest 4-connected component, the fallback
check against the prediction (``crownsam.pseudolabel.fallback``: the prediction stays when SAM2's mask
is empty, scores below ``fallback_min_score``, has an area ratio outside
``[fallback_min_area_ratio, fallback_max_area_ratio]`` or an IoU below ``fallback_min_iou`` with it),
and exclusive labels (a contested pixel goes to the highest SAM2 logit; a kept prediction claims with
the lowest, so any SAM2 mask wins against it; ties to the lower ``crown_id``), within and across
windows. Every crown is traced on the orthophoto's pixel grid.
"""

from __future__ import annotations

import geopandas as gpd

from crownsam.common.raster import check_rgb_bands, compute_stretch, raster_info
from crownsam.common.vector import ID_COLUMN
from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.pseudolabel.params import PseudolabelParams
from crownsam.pseudolabel.predictor import PromptPredictor
from crownsam.pseudolabel.run import RunResult, pseudolabel_plan, resolve_run
from crownsam.tiling.plan import Plan, make_plan


def box_prompting(prompting: PseudolabelParams, rgb_bands: tuple[int, ...]) -> PseudolabelParams:
    """The pseudolabel settings of box re-prompting: box prompts, no calibration or vegetation filter,
    the fallback and exclusive labels on; batch size and fallback thresholds as given."""
    return prompting.replace(
        prompt="box",
        negative_calibration=False,
        min_ndvi=None,
        exclusive=True,
        fallback=True,
        rgb_bands=tuple(rgb_bands),
    )


def refine_by_boxes(
    crowns: gpd.GeoDataFrame,
    ortho: str,
    source: str,
    predictor: PromptPredictor,
    prompting: PseudolabelParams,
    rgb_bands: tuple[int, ...],
    *,
    progress: bool = False,
    loop: WindowLoopParams | None = None,
) -> tuple[RunResult, Plan]:
    """Prompt SAM2 with every crown's box (``crowns`` in the raster's CRS with ``crown_id``); returns the
    pseudolabel run (labels keyed by ``segment_id`` = ``crown_id``, cross-window contests resolved) and
    its plan (crowns it could not prompt are in ``plan.skipped``). ``source`` names the crowns in
    messages; ``loop``: pseudolabel's window loop (None: the sequential loop; the labels do not depend on
    it)."""
    info = raster_info(ortho)
    bands = check_rgb_bands(info, rgb_bands)
    segments = gpd.GeoDataFrame(
        {ID_COLUMN: crowns["crown_id"].to_numpy()}, geometry=crowns.geometry.values, crs=crowns.crs
    )
    plan = make_plan(
        segments,
        info,
        segments_path=source,
        segments_sha256="",
        rgb_bands=bands,
        stretch=compute_stretch(ortho, bands),
    )
    run = pseudolabel_plan(
        plan,
        segments,
        predictor,
        params=box_prompting(prompting, bands),
        ortho_path=ortho,
        progress=progress,
        loop=loop,
    )
    resolve_run(run, plan)
    return run, plan
