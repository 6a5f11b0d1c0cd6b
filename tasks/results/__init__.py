"""Results: aggregation, curves, pictures, reports, run folders and labels."""
