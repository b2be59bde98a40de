"""Neutral helpers every layer may import: the error family, file I/O, image reading, tables.

Nothing here knows about ConvNeXtPose's architecture or any converter.
"""
