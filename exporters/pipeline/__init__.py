"""The export pipeline: one export run, from checkpoint to published folder. stages.py builds each format
of the table (exporters/formats.py) with the converters, export_run.py holds one run's state and has each
file judged (judging/), side_stage.py runs a stage in a forked process, export.py is ``convnextpose
export``'s flow, publish.py swaps the finished folder into OUT."""
