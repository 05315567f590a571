"""Imported by every Ray worker of a simulation before it loads Flower's actor class.

:func:`common.quiet.quiet_ray` names this module in Ray's ``preload_python_modules``
setting. Importing it is its whole job (the one module in fedclinic that works at import
time, by design): TensorFlow is imported quietly, so the later import by Flower's
simulation package finds it loaded and prints nothing.
"""

from __future__ import annotations

from common.quiet import import_keras

import_keras()
