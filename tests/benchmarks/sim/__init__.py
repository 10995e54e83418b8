"""The simulated account of issue 19 (docs/decision-quality.md): benchmark code, never imported by services."""
