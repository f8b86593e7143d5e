"""The ``zoo`` command line and the recipes it ships (``recipes/configs/*.yaml``)."""
