"""Data in: fetching sources, reading CSVs, datasets, validation, preprocessing, folds."""
