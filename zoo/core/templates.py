"""The one Jinja environment of the project's templates (zoo/templates: the dataset and model cards)."""

from __future__ import annotations

import functools

from zoo.core import paths


@functools.cache
def environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,  # a missing field is an error, not an empty string in the card
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
