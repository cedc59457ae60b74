"""skyscribe from Python: what is in a satellite or aerial image, with CLIP.

The same library as the ``skyscribe`` command, in process: numpy arrays in and out, the same
numbers as the CLI's ``--jsonl`` output, the GIL released while models run.

    >>> import skyscribe
    >>> clip = skyscribe.Clip()                     # the built-in skyscribe-mini
    >>> x = clip.embed_images(["scene.jpg"])        # float32 (1, dim), as `skyscribe embed`
    >>> clip.labels(["scene.jpg"], "eurosat")       # [[("Forest", 0.61), ...]]

Classes: :class:`Clip` (embeddings, zero-shot labels, preprocessing), :class:`Captioner`
(ClipCap captions), :class:`Classifier` (linear probes from your labels), :class:`Index`
(archive search). Functions: :func:`scan` (a GeoTIFF scene → GeoJSON and a class map),
:func:`build_index`, :func:`read_image`, :func:`list_images`.

Errors keep the CLI's messages: ``FileNotFoundError`` for a missing file, ``ValueError`` for an
argument refused before any work, :class:`Error` for the rest (an unreadable image, a damaged
model, index or classifier).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

# candle's element-wise ops run on a thread pool of its own whose threads spin after each op,
# taking a core's share from the products on rayon's threads; the `skyscribe` binary turns the
# spinning off the same way (src/main.rs says what it measured). Set before the extension loads,
# as candle reads it once; a value the user set is kept.
os.environ.setdefault("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0")

from ._skyscribe import (
    Captioner,
    Classifier,
    Clip,
    Error,
    Index,
    __version__,
    build_index,
    list_images,
    read_image,
)
from ._skyscribe import scan as _scan

__all__ = [
    "Captioner",
    "Classifier",
    "Clip",
    "Error",
    "Index",
    "SceneScan",
    "__version__",
    "build_index",
    "list_images",
    "read_image",
    "scan",
]


@dataclass
class SceneScan:
    """One scene scanned by :func:`scan`.

    Attributes:
        features: the GeoJSON FeatureCollection ``skyscribe scan --out`` writes (a dict): one
            polygon per tile in WGS 84 longitude/latitude, with ``label``, ``score``, ranked
            ``labels`` and ``tile``. ``geopandas.GeoDataFrame.from_features(scan.features,
            crs="EPSG:4326")`` reads it.
        scores: ``float32`` array (labels, rows, columns): each label's mean probability over
            the tiles covering a cell of ``stride`` pixels; NaN where no tile was read.
        class_map: ``int16`` array (rows, columns): the best label's index, -1 for no data.
        labels: the label (or class) names, in the order of ``scores``.
        transform: the grid's GDAL geotransform on the scene's CRS (``None`` without
            georeferencing); ``rasterio.Affine.from_gdal(*scan.transform)``.
        crs: ``"EPSG:…"`` of the scene, or ``None`` when it has no EPSG code.
        crs_name: the CRS for people.
    """

    features: Dict[str, Any]
    scores: np.ndarray
    class_map: np.ndarray
    labels: List[str]
    transform: Optional[Tuple[float, float, float, float, float, float]]
    crs: Optional[str]
    crs_name: Optional[str]


def scan(
    scene: Union[str, PathLike],
    labels: Union[None, str, Sequence[str]] = None,
    **options: Any,
) -> SceneScan:
    """Scans one scene (a GeoTIFF/COG file or URL) as ``skyscribe scan`` does.

    ``labels``: a preset, a file, ``"a,b,c"`` or a list (default: the model's describe
    vocabulary). Keyword options: ``templates``, ``classifier`` (a :class:`Classifier` instead
    of labels), ``model`` (a :class:`Clip` or a model spec), ``tile`` (224), ``stride`` (half the tile),
    ``top_k`` (5), ``bands``, ``stretch`` ("auto"), ``reader`` ("auto"), ``pixel_coords``
    (False), ``captioner`` (a :class:`Captioner`: captions every tile), ``batch_size``,
    ``device``, ``progress``.
    """
    r = _scan(scene, labels, **options)
    transform = tuple(r["transform"]) if r["transform"] is not None else None
    return SceneScan(
        features=r["features"],
        scores=r["scores"],
        class_map=r["class_map"],
        labels=r["labels"],
        transform=transform,  # type: ignore[arg-type]
        crs=r["crs"],
        crs_name=r["crs_name"],
    )
