"""TensorRT backend: engine builder, engine manifest, cuda-python executor (docs/deployment/jetson_thor.md).

Nothing here imports TensorRT or cuda-python at import time; the modules import them inside the
functions that need them. Entry points: `builder.build_engines_main`, `verify.verify_engines_main`,
and the backend class `backend.TensorRTBackend`.
"""
