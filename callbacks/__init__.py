"""Lightning callbacks of the zoo, one concern per file."""

from callbacks.predictions import PredictionWriter

__all__ = ["PredictionWriter"]
