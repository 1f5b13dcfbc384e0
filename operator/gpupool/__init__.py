"""gpupool: serve LLMs with vLLM on the cheapest GPUs across many clouds, as a Kubernetes operator.

The public face is small: the CLI (`gpupool`), the API models in `gpupool.api`, and the pure
planner in `gpupool.planner`. Everything else is machinery behind them.
"""

__version__ = "0.1.0"
