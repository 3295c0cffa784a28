"""Outputs: the HDF5/NWB writers of smooth and forecast, and the plots (the scores are scoring/)."""
