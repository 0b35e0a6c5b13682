"""``python -m caelum_dask`` is the ``caelum`` command."""

from caelum_dask.cli import cli

if __name__ == "__main__":
    cli(prog_name="caelum")
