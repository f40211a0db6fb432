"""Composable controllers: async callables `await controller(task, ctx) -> Outcome` built on
backends, search and memory. Composition is plain construction."""

from controllers.ace import ACE
from controllers.case_memory import CaseMemoryAgent
from controllers.cyberv import CyberVLoop
from controllers.direct import Direct
from controllers.entropy_switch import EntropyAdaptiveDecoding
from controllers.harm_judge import HarmJudge, HarmVerdict, load_safety_prompts
from controllers.psr import ProgressiveSelfReflection, ReflectionPrompt
from controllers.round_predictor import RoundPredictor
from controllers.router import A2FMRouter, LearnedPolicy, RouteRecord, SelfTagPolicy
from controllers.self_consistency import SelfConsistency

__all__ = [
    "ACE",
    "A2FMRouter",
    "CaseMemoryAgent",
    "CyberVLoop",
    "Direct",
    "EntropyAdaptiveDecoding",
    "HarmJudge",
    "HarmVerdict",
    "LearnedPolicy",
    "ProgressiveSelfReflection",
    "ReflectionPrompt",
    "RoundPredictor",
    "RouteRecord",
    "SelfConsistency",
    "SelfTagPolicy",
    "load_safety_prompts",
]
