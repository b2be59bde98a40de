"""`python -m cli`: the `convnextpose` command."""

from cli import run

run()
