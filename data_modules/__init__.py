"""LightningDataModules of RecPIE."""
from data_modules.checkin import CheckinDataModule

__all__ = ["CheckinDataModule"]
