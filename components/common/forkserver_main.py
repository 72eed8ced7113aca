"""Imported once by the window pipeline's forkserver (one of its preload modules): imports there the
parent's main script, as each worker process would otherwise do on its own when it starts (1-2 s for a
script that imports torch).

CPython 3.11 means to do this for a ``"__main__"`` preload entry but never does (the forkserver looks for
``main_path`` in data that calls it ``init_main_from_path``). Workers forked from the server find the
script imported and skip it. The path comes from :data:`MAIN_ENV`, set by
:func:`crownsam.common.window_pipeline.forkserver_preload`; if the import fails, the workers import the
script themselves as before.
"""

from __future__ import annotations

import logging
import os
from multiprocessing import process, spawn

MAIN_ENV = "CROWNSAM_FORKSERVER_MAIN"


def import_main(path: str | None) -> bool:
    """Import the script at ``path`` as multiprocessing's workers do (``__mp_main__``, also set as
    ``__main__``); False if there is none or it fails."""
    if not path:
        return False
    current = process.current_process()
    current._inheriting = True  # type: ignore[attr-defined]  # as multiprocessing.forkserver.main does
    try:
        spawn.import_main_path(path)
    except Exception:  # any error of the script: it must not take the forkserver down
        logging.getLogger(__name__).debug("forkserver: could not import %s", path, exc_info=True)
        return False
    finally:
        del current._inheriting  # type: ignore[attr-defined]
    return True


import_main(os.environ.get(MAIN_ENV))
