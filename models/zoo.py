"""Imports every zoo model module so that each registers itself."""
