"""Source registry: how to locate and read each raw dataset. Add a source by adding an entry."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recpie.data.config import DataConfig
from recpie.data.raw import RawCheckins
from recpie.data.sources import foursquare, google_local, gowalla


@dataclass(frozen=True)
class Source:
    # (cfg, dataset folder, data root) -> the input files, raising DataError with download help if missing
    input_files: Callable[[DataConfig, Path, Path], list[Path]]
    # (input files, cfg) -> raw rows
    read: Callable[[list[Path], DataConfig], RawCheckins]


SOURCES: dict[str, Source] = {
    "foursquare": Source(foursquare.input_files, foursquare.read),
    "gowalla": Source(gowalla.input_files, gowalla.read),
    "google_local": Source(google_local.input_files, google_local.read),
}
