"""Synthetic forest scene: the demo data and the test data.

A north-up 2.5 cm multispectral orthophoto (EPSG:3067) of a dense mixed stand of spruce, pine and birch
with irregular, textured, sun-shaded crowns that touch and overlap (taller on top) and cast shadows, over
grass and soil, with a road and two roofs, and a ragged nodata strip along the right edge; a 0.2 m canopy
height model (crown domes, roofs as height); the true visible crowns; coarse CHM-like crown segments with
realistic errors; and a test area with its manually delineated crowns. Everything follows from one seed.
"""

from crownsam.synthetic.scene import ScenePaths, generate_scene

__all__ = ["ScenePaths", "generate_scene"]
