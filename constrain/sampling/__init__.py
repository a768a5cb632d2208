"""Sampling under a constraint that follows the model: AWRS, SMC and ASAp (see docs/architecture.md)."""
