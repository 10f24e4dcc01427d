"""Distances on the Earth: the one radius and the one great-circle formula the prompts and the backbone use.

The prompts measure one pair at a time (``haversine_km``); the backbone measures from one place to every
POI at once through dot products of ``unit_vectors`` (the chord form, in torch). Both are the same
great-circle distance on the same sphere (tests/test_rec_full_history.py compares them).
"""
from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0  # mean Earth radius


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle km between points given in degrees (broadcasting numpy arrays)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def unit_vectors(lat, lon) -> np.ndarray:
    """[n, 3] points on the unit sphere for coordinates in degrees: their dot product is cos(angle)."""
    lat, lon = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], 1)

