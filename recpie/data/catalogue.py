"""The POI catalogue: one name, main category and coordinate pair per kept POI.

A venue seen with several coordinate pairs or category names (1,183 and 135 NYC venues) gets the most
frequent one over all its rows in the input file; a tie goes to the value seen first in the file.
"""
from __future__ import annotations

import numpy as np

from recpie.data.raw import RawCheckins
from recpie.data.types import PoiCatalogue


def most_frequent(group: np.ndarray, value: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group (0..n_groups-1), the row index of its most frequent value (ties: first in file order)."""
    _, val = np.unique(value, return_inverse=True, axis=0 if value.ndim > 1 else None)
    pair = group * (val.max() + 1) + val.ravel()
    uniq, first_row, counts = np.unique(pair, return_index=True, return_counts=True)
    order = np.lexsort((first_row, -counts, uniq // (val.max() + 1)))  # by group, count desc, first seen
    best = np.full(n_groups, -1, dtype=np.int64)
    groups = uniq[order] // (val.max() + 1)
    is_head = np.concatenate([[True], groups[1:] != groups[:-1]])
    best[groups[is_head]] = first_row[order][is_head]
    return best


def build_catalogue(raw: RawCheckins, venue: np.ndarray, kept_ids: np.ndarray,
                    kept_codes: np.ndarray) -> PoiCatalogue:
    """Catalogue of the kept venues (``kept_codes`` index ``venue``'s codes; ``kept_ids`` their raw ids)."""
    n_venues = int(venue.max()) + 1
    coord_row = most_frequent(venue, np.stack([raw.lat, raw.lon], axis=1), n_venues)[kept_codes]
    category_text = np.asarray(raw.category, dtype=object)
    cat_row = most_frequent(venue, category_text.astype(str), n_venues)[kept_codes]
    main = category_text[cat_row].astype(str)
    category_names = [""] + sorted(set(main.tolist()) - {""})
    index = {name: i for i, name in enumerate(category_names)}
    ids = [str(x) for x in kept_ids]
    return PoiCatalogue(
        raw_ids=ids,
        names=[raw.venue_names.get(i, "") for i in ids],
        category=np.asarray([index[c] for c in main], dtype=np.int64),
        category_names=category_names,
        lat=raw.lat[coord_row].copy(),
        lon=raw.lon[coord_row].copy(),
    )
