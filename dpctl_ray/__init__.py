"""dpctl: plan and launch data-parallel LLM engine clusters on Ray."""

__version__ = "0.1.0"
