"""Using a trained run: recommendations for raw-id histories (Python, CLI, HTTP) and export.

``recommender.py`` turns histories into rankings, ``http.py`` serves them with FastAPI and
``export.py`` writes TorchScript / ONNX scorers for serving outside Python.
"""

from catrec.serve.recommender import (
    Recommendations,
    Recommender,
    UnknownItemError,
    load,
)

__all__ = ["Recommendations", "Recommender", "UnknownItemError", "load"]
