"""Outputs: metrics, HDF5/NWB writers and plots."""
