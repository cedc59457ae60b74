"""Type stubs of the extension module (see python/src/*.rs for the implementation)."""

from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, PathLike]
# Paths, one H×W×3 / 3×H×W array, a batch N×H×W×3 / N×3×H×W, or a list of arrays; uint8 or
# floats in [0, 1].
_Images = Union[_Path, Sequence[_Path], npt.ArrayLike, Sequence[npt.ArrayLike]]
_Texts = Union[str, Sequence[str]]

class Error(Exception):
    """An error of skyscribe's own, with the message the CLI prints."""

class Clip:
    def __init__(
        self, model: str = "skyscribe-mini", device: str = "cpu", precision: str = "f32"
    ) -> None: ...
    @property
    def model(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def image_size(self) -> int: ...
    def embed_images(
        self,
        images: _Images,
        *,
        batch_size: int = 32,
        bands: Optional[Sequence[int]] = None,
        max_pixels: Optional[int] = None,
        progress: bool = False,
    ) -> npt.NDArray[np.float32]: ...
    def embed_texts(self, texts: _Texts, *, batch_size: int = 32) -> npt.NDArray[np.float32]: ...
    def labels(
        self,
        images: _Images,
        labels: Union[None, str, Sequence[str]] = None,
        *,
        templates: Optional[_Texts] = None,
        classifier: Optional["Classifier"] = None,
        top_k: Optional[int] = 5,
        batch_size: int = 32,
        bands: Optional[Sequence[int]] = None,
        progress: bool = False,
    ) -> List[List[Tuple[str, float]]]: ...
    def preprocess(
        self, images: _Images, *, bands: Optional[Sequence[int]] = None
    ) -> npt.NDArray[np.float32]: ...

class Captioner:
    def __init__(
        self,
        spec: str = "skyscribe-mini-captioner",
        *,
        clip: Optional[Clip] = None,
        device: str = "cpu",
        force_clip: bool = False,
    ) -> None: ...
    @property
    def clip(self) -> Clip: ...
    def caption(
        self,
        images: _Images,
        *,
        decode: str = "greedy",
        beam_size: Optional[int] = None,
        top_p: Optional[float] = None,
        temperature: Optional[float] = None,
        seed: Optional[int] = None,
        max_tokens: int = 67,
        batch_size: int = 32,
        bands: Optional[Sequence[int]] = None,
        progress: bool = False,
    ) -> List[str]: ...
    def caption_embeddings(self, embeddings: npt.NDArray[np.float32]) -> List[str]: ...

class Classifier:
    @staticmethod
    def load(path: _Path) -> "Classifier": ...
    @staticmethod
    def train(
        embeddings: npt.NDArray[np.float32],
        labels: Sequence[str],
        clip: Clip,
        *,
        method: str = "auto",
        c: Optional[float] = None,
        seed: int = 0,
        prior_labels: Optional[str] = None,
        templates: Optional[_Texts] = None,
        classes: Optional[Sequence[str]] = None,
        shots: Optional[int] = None,
    ) -> "Classifier": ...
    def save(self, path: _Path) -> None: ...
    @property
    def classes(self) -> List[str]: ...
    @property
    def info(self) -> Dict[str, Any]: ...
    def predict(self, embeddings: npt.NDArray[np.float32]) -> List[str]: ...
    def predict_proba(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...

class Index:
    def __init__(self, index: _Path, *, model: Optional[str] = None, device: str = "cpu") -> None: ...
    def __len__(self) -> int: ...
    @property
    def warnings(self) -> List[str]: ...
    def search(
        self,
        text: Optional[_Texts] = None,
        image: Union[None, _Path, Sequence[_Path]] = None,
        *,
        negative_text: Optional[_Texts] = None,
        negative_image: Union[None, _Path, Sequence[_Path]] = None,
        top_k: int = 10,
        engine: str = "auto",
        ef: int = 128,
        class_name: Optional[str] = None,
        classifier: Union[None, Classifier, _Path] = None,
    ) -> List[Dict[str, Any]]: ...

def build_index(
    index: _Path,
    inputs: Union[_Path, Sequence[_Path]],
    *,
    model: Optional[str] = None,
    device: str = "cpu",
    batch_size: int = 32,
    chip_size: int = 300,
    chip_stride: Optional[int] = None,
    add: bool = False,
    replace: bool = False,
    shard: Optional[str] = None,
    shards: Optional[int] = None,
    checkpoint_every: int = 512,
    bands: Optional[Sequence[int]] = None,
    dtype: Optional[str] = None,
    progress: bool = False,
) -> Dict[str, Any]: ...
def scan(scene: _Path, labels: Union[None, str, Sequence[str]] = None, **options: Any) -> Dict[str, Any]: ...
def read_image(path: _Path, bands: Optional[Sequence[int]] = None) -> npt.NDArray[np.uint8]: ...
def list_images(folder: _Path) -> List[str]: ...
