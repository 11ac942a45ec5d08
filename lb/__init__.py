"""Swarmscale's balancer: collect (proxy accounting), decide (policies), act (orchestrators)."""
