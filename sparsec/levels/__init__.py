"""Level types, one module each; importing this package registers all of them."""

from .base import LEVEL_TYPES, Level
from .bitmap import Bitmap
from .compressed import Compressed
from .dense import Dense
from .loose_compressed import LooseCompressed
from .n_out_of_m import NOutOfM
from .singleton import Singleton

__all__ = ["LEVEL_TYPES", "Level", "Dense", "Compressed", "Singleton", "LooseCompressed", "NOutOfM", "Bitmap"]
