"""Composable controllers: async callables `await controller(task, ctx) -> Outcome` built on
backends, search and memory. Composition is plain construction."""

from controllers.direct import Direct
from controllers.entropy_switch import EntropyAdaptiveDecoding
from controllers.harm_judge import HarmJudge, HarmVerdict, load_safety_prompts
from controllers.psr import ProgressiveSelfReflection, ReflectionPrompt
from controllers.round_predictor import RoundPredictor

__all__ = [
    "Direct",
    "EntropyAdaptiveDecoding",
    "HarmJudge",
    "HarmVerdict",
    "ProgressiveSelfReflection",
    "ReflectionPrompt",
    "RoundPredictor",
    "load_safety_prompts",
]
